"""Per-item checkpoints of a long evaluation (a quality benchmark over a set of items).

An experiment that scores items one request at a time keeps an :class:`ItemLog`
in ``self.trial.state_dir`` — a directory keyed by the trial's configuration
(``config_hash``) and repetition, which survives a failed, killed or
limit-ended trial and is removed once a trial of that configuration finishes.
Rerunning the same command then resumes: ``setup()`` reads what is done,
``planned_requests()`` returns how many items are left, ``operation()`` scores
only those, and ``quality()`` aggregates over all recorded items — so the final
scores equal an uninterrupted run's, and no item is scored twice.

Each record is one JSON line, written with one ``write()`` as soon as the item
is scored, so a killed process loses at most the items in flight; a torn last
line (a crash mid-write) is ignored on reading. ``fsync=True`` also survives a
machine crash, at the cost of a disk flush per item.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


class ItemLog:
    """Append-only, thread-safe ``item id -> record`` log (JSON lines)."""

    def __init__(self, path: str | Path, fsync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._done = self._read()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _read(self) -> dict[str, dict[str, Any]]:
        done: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return done
        with open(self.path, "rb") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line torn by a crash: that item is scored again
                done[str(rec["id"])] = rec["result"]
        return done

    def done(self) -> dict[str, dict[str, Any]]:
        """The items recorded so far (before this trial and during it)."""
        with self._lock:
            return dict(self._done)

    def record(self, item_id: str, result: dict[str, Any]) -> None:
        """Record one scored item; a second record of the same item is refused."""
        line = (json.dumps({"id": item_id, "result": result}) + "\n").encode()
        with self._lock:
            if item_id in self._done:
                raise ValueError(f"item {item_id!r} was already scored")
            os.write(self._fd, line)
            if self.fsync:
                os.fsync(self._fd)
            self._done[item_id] = result

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __getstate__(self):
        raise TypeError("an ItemLog stays in the process that opened it (clients=1)")
