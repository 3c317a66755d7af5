"""Structured logs: every trial writes ``logs/events.jsonl`` (one JSON object per
line: timestamp, level, trial_id, component, message) and a readable
``logs/trial.log``. Secret values are masked before anything is written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from benchflow.secrets import mask, secret_values

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"


class _Mask(logging.Filter):
    def __init__(self, trial_id: str, secrets: set[str]) -> None:
        super().__init__()
        self.trial_id, self.secrets = trial_id, secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.trial_id = self.trial_id
        record.msg = mask(record.getMessage(), self.secrets)
        record.args = None
        return True


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "trial_id": getattr(record, "trial_id", None),
            "component": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


@contextmanager
def trial_logging(logs_dir: Path, trial_id: str, config: dict) -> Iterator[None]:
    """Route every log record to the trial's files while the trial runs."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    filt = _Mask(trial_id, secret_values(config))
    handlers = []
    for path, fmt in (
        (logs_dir / "events.jsonl", JsonLines()),
        (logs_dir / "trial.log", logging.Formatter(TEXT_FORMAT)),
    ):
        h = logging.FileHandler(path, encoding="utf-8")
        h.setFormatter(fmt)
        h.addFilter(filt)
        h.setLevel(logging.INFO)
        handlers.append(h)
    root = logging.getLogger()
    ours = [logging.getLogger(n) for n in ("benchflow", "drivers")]
    old_levels = [lg.level for lg in ours]
    for lg in ours:
        if lg.getEffectiveLevel() > logging.INFO:
            lg.setLevel(logging.INFO)
    # Mask on every handler (Hydra's console and job log too) while the trial runs.
    others = list(root.handlers)
    for h in others:
        h.addFilter(filt)
    for h in handlers:
        root.addHandler(h)
    try:
        yield
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()
        for h in others:
            h.removeFilter(filt)
        for lg, level in zip(ours, old_levels, strict=True):
            lg.setLevel(level)
