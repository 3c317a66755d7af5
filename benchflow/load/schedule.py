"""Arrival schedules for open-loop load.

A schedule is a sequence of *intended* start offsets (nanoseconds from the start
of a phase). Latency is measured from these intended times, so a generator that
falls behind shows up as latency instead of silently thinning the load
(no coordinated omission).

Both schedules are pure functions of (rate, seed, shard): the same seed gives
the same schedule on every run and every machine.
"""

from __future__ import annotations

import threading
from typing import Literal

import numpy as np

Arrival = Literal["constant", "poisson"]

_CHUNK = 65_536


class Schedule:
    """Intended start offsets of an open-loop phase, generated lazily in chunks.

    ``count`` is known when the phase is bounded by a duration; with ``poisson``
    and a duration the offsets are those of a Poisson process *conditioned on*
    ``round(rate * duration)`` arrivals (sorted uniform times on the window), so the
    offered load is exactly the target and trials stay comparable; when the phase
    is bounded by a request count instead, gaps are i.i.d. exponential.
    """

    def __init__(
        self,
        rate: float,
        arrival: Arrival,
        seed: int,
        duration_s: float | None = None,
        count: int | None = None,
        stream: int = 0,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        if duration_s is None and count is None:
            raise ValueError("a schedule needs a duration or a count")
        self.rate = float(rate)
        self.arrival = arrival
        self._args = (seed, duration_s, count, stream)
        # Independent streams per phase/shard, reproducible from the seed.
        self._rng = np.random.default_rng([int(seed), int(stream)])
        self.count = count if count is not None else max(1, round(self.rate * duration_s))
        self.duration_s = duration_s
        self._lock = threading.Lock()
        self._next = 0
        self._buf = np.empty(0, dtype=np.int64)
        self._buf_start = 0
        self._last = 0.0
        if arrival == "poisson" and duration_s is not None and count is None:
            times = np.sort(self._rng.uniform(0.0, duration_s, size=self.count))
            self._buf = (times * 1e9).astype(np.int64)
        elif arrival not in ("constant", "poisson"):
            raise ValueError(f"unknown arrival {arrival!r}; allowed: constant, poisson")

    def offsets(self) -> np.ndarray:
        """All intended offsets (ns) of a fresh copy of this schedule (for inspection)."""
        fresh = Schedule(self.rate, self.arrival, *self._args)
        out = []
        while (slot := fresh.take()) is not None:
            out.append(slot[1])
        return np.array(out, dtype=np.int64)

    def _offset(self, i: int) -> int:
        # Called with the lock held and with i increasing, so the buffer never
        # has to go back to an index it already dropped.
        if self.arrival == "constant":
            return int(i * 1e9 / self.rate)
        while i >= self._buf_start + len(self._buf):
            self._extend()
        return int(self._buf[i - self._buf_start])

    def _extend(self) -> None:
        # Only reached for count-bounded Poisson schedules (exponential gaps).
        gaps = self._rng.exponential(1.0 / self.rate, size=_CHUNK)
        times = self._last + np.cumsum(gaps)
        self._last = float(times[-1])
        self._buf_start += len(self._buf)
        self._buf = (times * 1e9).astype(np.int64)

    def close(self) -> None:
        """Hand out no more slots (a phase that ended early: duration_s=auto)."""
        with self._lock:
            self.count = min(self.count, self._next)

    def take(self) -> tuple[int, int] | None:
        """Claim the next request slot: (index, offset ns), or None when exhausted."""
        with self._lock:
            i = self._next
            if i >= self.count:
                return None
            self._next = i + 1
            return i, self._offset(i)
