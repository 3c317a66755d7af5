"""Arrival schedules for open-loop load.

A schedule is a sequence of *intended* start offsets (nanoseconds from the start
of a phase). Latency is measured from these intended times, so a generator that
falls behind shows up as latency instead of silently thinning the load
(no coordinated omission).

Arrival processes (docs/workloads.md#arrivals):

- ``constant``: request i at i / rate.
- ``poisson``: with a duration, a Poisson process *conditioned on* its count
  ``round(rate * duration)`` (sorted uniform times on the window), so the offered
  load is exactly the target and trials stay comparable; bounded by a request
  count instead, i.i.d. exponential gaps.
- ``gamma``: gaps from a gamma distribution of shape ``burstiness`` (vLLM's
  ``--burstiness``): the squared coefficient of variation of the gaps is
  1 / burstiness, so burstiness < 1 is burstier than Poisson and 1 *is* Poisson.
  With a duration the count is again exact: the n + 1 gaps are normalized to the
  window (a Dirichlet split, which for burstiness = 1 is the conditioned Poisson
  process above).

A schedule may have **stages** (:class:`Stage`): consecutive windows of their own
rate, each with its exact count; a stage with ``ramp`` changes its rate linearly
from the previous stage's rate to its own (an inhomogeneous process whose
cumulative intensity is inverted in closed form). A **trace** schedule
(:mod:`benchflow.workload.trace`) takes its offsets, and each request's
attributes, from a file read in chunks, never whole.

Every schedule is a pure function of (settings, seed, stream): the same seed gives
the same schedule on every run and every machine.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Arrival = Literal["constant", "poisson", "gamma"]
ARRIVALS = ("constant", "poisson", "gamma")

_CHUNK = 65_536


@dataclass(frozen=True)
class Stage:
    """One window of a staged phase: ``rate`` requests/s for ``duration_s`` (open loop;
    with ``ramp``, the rate moves linearly from the previous stage's rate, 0 for the
    first stage, to ``rate`` over the stage) — or, closed loop, ``concurrency``
    requests in flight (``rate`` None)."""

    rate: float | None
    duration_s: float
    ramp: bool = False
    concurrency: int | None = None


class Schedule:
    """Intended start offsets of an open-loop phase, generated lazily or up front.

    ``count`` is known when the phase is bounded by a duration (or a count);
    a trace schedule's count is known once the trace is exhausted.
    """

    def __init__(
        self,
        rate: float | None,
        arrival: Arrival,
        seed: int,
        duration_s: float | None = None,
        count: int | None = None,
        stream: int = 0,
        *,
        burstiness: float = 1.0,
        stages: tuple[Stage, ...] = (),
        trace: Any = None,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        if arrival not in ARRIVALS:
            raise ValueError(f"unknown arrival {arrival!r}; allowed: {', '.join(ARRIVALS)}")
        if not burstiness > 0:
            raise ValueError(f"burstiness must be > 0, got {burstiness}")
        if trace is None and not stages:
            if rate is None or rate <= 0:
                raise ValueError(f"rate must be > 0, got {rate}")
            if duration_s is None and count is None:
                raise ValueError("a schedule needs a duration or a count")
        self.rate = float(rate) if rate else 0.0
        self.arrival = arrival
        self.burstiness = float(burstiness)
        self._args = (seed, duration_s, count, stream)
        self._kw = dict(burstiness=burstiness, stages=stages, trace=trace, shard=shard)
        # Independent streams per phase/shard, reproducible from the seed.
        self._rng = np.random.default_rng([int(seed), int(stream)])
        self.duration_s = duration_s
        self._lock = threading.Lock()
        self._next = 0
        self._buf = np.empty(0, dtype=np.int64)
        self._buf_start = 0
        self._last = 0.0
        self._items: list | None = None  # a trace's requests, aligned with _buf
        # a trace that could not be read on: the phase ends, the engine raises it
        self.error: Exception | None = None
        self._trace_iter = None
        # where each stage starts (ns from the phase start); one stage without stages
        self.stage_starts_ns: list[int] = [0]
        self._direct = trace is None and not stages and arrival == "constant"
        if trace is not None:
            self.count = math.inf
            self._items = []
            every, mine = shard[1], shard[0]
            self._trace_iter = itertools.islice(_iter_trace(trace), mine, None, every)
            if duration_s is not None:  # a warm-up: the trace's first duration_s only
                cut = int(duration_s * 1e9)
                self._trace_iter = itertools.takewhile(
                    lambda r: r.offset_ns < cut, self._trace_iter
                )
            self._ahead = _ReadAhead(self._trace_iter)
            self._ahead.wait_first()  # the first chunk is read before the phase starts
        elif stages:
            self._stages(stages)
        else:
            self.count = count if count is not None else max(1, round(self.rate * duration_s))
            if count is None and arrival != "constant":
                self._buf = _to_ns(self._flat(self.count, self.rate, duration_s))

    # -- generation -----------------------------------------------------------
    def _fractions(self, n: int) -> np.ndarray:
        """n sorted points in [0, 1) spread by the arrival process (exact count)."""
        if self.arrival == "constant":
            return np.arange(n) / n
        if self.arrival == "poisson":
            return np.sort(self._rng.uniform(0.0, 1.0, size=n))
        gaps = self._rng.gamma(self.burstiness, 1.0, size=n + 1)
        return np.cumsum(gaps)[:n] / gaps.sum()

    def _flat(self, n: int, rate: float, duration_s: float) -> np.ndarray:
        """Seconds of n arrivals at a constant ``rate`` over ``duration_s``."""
        if self.arrival == "constant":
            return np.arange(n) / rate
        if self.arrival == "poisson":  # as before stages existed: same seed, same schedule
            return np.sort(self._rng.uniform(0.0, duration_s, size=n))
        return self._fractions(n) * duration_s

    def _stages(self, stages: tuple[Stage, ...]) -> None:
        parts, starts, t, prev = [], [], 0.0, 0.0
        for st in stages:
            r0, r1, d = (prev if st.ramp else st.rate), st.rate, st.duration_s
            n = max(1, round((r0 + r1) / 2 * d))
            if r0 == r1:
                secs = self._flat(n, r1, d)
            else:
                # Λ(t) = r0 t + (r1 - r0) t² / 2d; points u in [0, Λ(d)) inverted stably
                u = self._fractions(n) * (r0 + r1) / 2 * d
                a = (r1 - r0) / (2 * d)
                root = np.sqrt(np.maximum(r0 * r0 + 4 * a * u, 0.0))
                den = r0 + root
                secs = np.divide(2 * u, den, out=np.zeros_like(u), where=den > 0)
            starts.append(round(t * 1e9))
            parts.append(_to_ns(secs) + starts[-1])
            t += d
            prev = st.rate
        self._buf = np.concatenate(parts)
        self.count = len(self._buf)
        self.duration_s = t
        self.stage_starts_ns = starts

    def offsets(self) -> np.ndarray:
        """All intended offsets (ns) of a fresh copy of this schedule (for inspection)."""
        fresh = Schedule(self.rate or None, self.arrival, *self._args, **self._kw)
        out = []
        while (slot := fresh.take()) is not None:
            out.append(slot[1])
        return np.array(out, dtype=np.int64)

    def _offset(self, i: int) -> int:
        # Called with the lock held and with i increasing, so the buffer never
        # has to go back to an index it already dropped.
        if self._direct:
            return int(i * 1e9 / self.rate)
        while i >= self._buf_start + len(self._buf):
            if not self._extend():
                return -1
        return int(self._buf[i - self._buf_start])

    def _extend(self) -> bool:
        """The next chunk: of the trace, or of a count-bounded process's gaps."""
        if self._trace_iter is not None:
            chunk, self.error = self._ahead.next_chunk()
            if not chunk:
                self.count = self._buf_start + len(self._buf)
                return False
            self._buf_start += len(self._buf)
            self._buf = np.fromiter((r.offset_ns for r in chunk), np.int64, len(chunk))
            self._items = chunk
            return True
        if self.arrival == "poisson":
            gaps = self._rng.exponential(1.0 / self.rate, size=_CHUNK)
        else:
            gaps = self._rng.gamma(self.burstiness, 1.0 / (self.burstiness * self.rate), _CHUNK)
        times = self._last + np.cumsum(gaps)
        self._last = float(times[-1])
        self._buf_start += len(self._buf)
        self._buf = _to_ns(times)
        return True

    def release(self) -> None:
        """The phase is over: stop reading ahead (a trace schedule's reader thread)."""
        ahead = getattr(self, "_ahead", None)
        if ahead is not None:
            ahead.stop()

    def close(self) -> None:
        """Hand out no more slots (a phase that ended early: duration_s=auto)."""
        with self._lock:
            self.count = min(self.count, self._next)

    def take(self) -> tuple[int, int, Any] | None:
        """Claim the next request slot: (index, offset ns, trace request or None),
        or None when exhausted."""
        with self._lock:
            i = self._next
            if i >= self.count:
                return None
            off = self._offset(i)
            if off < 0:
                return None
            self._next = i + 1
            item = self._items[i - self._buf_start] if self._items is not None else None
            return i, off, item


class _ReadAhead:
    """Reads a trace ahead of the replay on a thread of its own, in chunks.

    The replay must never wait for the file: a chunk read on the dispatching thread
    would hold every request behind it (tens of milliseconds per thousand lines). The
    reader gives up the interpreter every few lines, so the dispatching threads wait
    for it at most that long, and stays at most a few chunks ahead (memory bounded).
    """

    CHUNK = 8192
    AHEAD = 4  # chunks
    YIELD_EVERY = 32  # lines

    def __init__(self, it) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=self.AHEAD)
        self._it = it
        self._first = threading.Event()
        self._stop = threading.Event()
        threading.Thread(target=self._run, name="bf-trace-reader", daemon=True).start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        chunk: list = []
        try:
            for n, rec in enumerate(self._it, 1):
                chunk.append(rec)
                if n % self.YIELD_EVERY == 0:
                    time.sleep(0)  # let the dispatching threads have the interpreter
                if len(chunk) == self.CHUNK:
                    if not self._put((chunk, None)):
                        return  # the phase is over
                    self._first.set()
                    chunk = []
            if chunk:
                self._put((chunk, None))
            self._put(([], None))
        except ValueError as exc:  # benchflow.workload.trace.TraceError: file and line
            if chunk:
                self._put((chunk, None))
            self._put(([], exc))
        finally:
            self._first.set()

    def stop(self) -> None:
        """The phase is over: the reader stops (and lets go of the file)."""
        self._stop.set()

    def wait_first(self) -> None:
        self._first.wait()

    def next_chunk(self) -> tuple[list, Exception | None]:
        """The next chunk ([] at the end) and the error that ended the trace, if any."""
        return self._q.get()


def _to_ns(seconds: np.ndarray) -> np.ndarray:
    return (seconds * 1e9).astype(np.int64)


def _iter_trace(trace):
    from benchflow.workload.trace import iter_trace

    return iter_trace(trace)
