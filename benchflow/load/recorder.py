"""Per-request timestamps in, mergeable distributions out.

Workers append raw integers (ns) to per-worker buffers on the hot path; every few
thousand requests (and at the end of a phase) the buffers are folded into
histograms and 1-second bins with numpy, so memory stays bounded however long
the phase runs. A :class:`Recording` is what one client process produces for one
phase; recordings from several processes or nodes merge exactly (counts add).
"""

from __future__ import annotations

import math
import threading
from array import array
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from benchflow.load.histogram import LogHistogram, log_ns

# Distributions every phase keeps (ns, successful requests only):
#   latency:  end - intended   (what a user waiting for the request sees)
#   service:  end - start      (what the SUT took once the request was sent)
#   ttfb:     first byte - intended (only for requests whose driver marks it)
#   lag:      start - intended (how late the generator dispatched; 0 in closed loop)
CORE = ("latency", "service", "ttfb", "lag")

# Per-second latency bins are coarser: 1% is plenty for a time series.
SECOND_REL_ERROR = 0.01
OK = 0
# The bucketing of the core histograms and of the per-second bins (a fold buckets once)
_FINE = LogHistogram()
_SECOND = LogHistogram(rel_error=SECOND_REL_ERROR)


class WorkerBuffer:
    """Raw columns of one worker. Appends are the only thing on the hot path."""

    __slots__ = ("cls", "code", "end", "extras", "first_byte", "intended", "size", "start")

    def __init__(self) -> None:
        self.intended = array("q")
        self.start = array("q")
        self.first_byte = array("q")
        self.end = array("q")
        self.size = array("q")
        self.code = array("h")
        self.cls = array("h")  # the request's class in a mix (0 without one)
        self.extras: dict[str, array] = {}

    def __len__(self) -> int:
        return len(self.end)

    def add(
        self, intended: int, start: int, first_byte: int, end: int, size: int, code: int, cls=0
    ):
        self.intended.append(intended)
        self.start.append(start)
        self.first_byte.append(first_byte)
        self.end.append(end)
        self.size.append(size)
        self.code.append(code)
        self.cls.append(cls)

    def observe(self, name: str, value_ns: int) -> None:
        col = self.extras.get(name)
        if col is None:
            col = self.extras[name] = array("q")
        col.append(value_ns)

    def drain(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        cols = {
            name: np.frombuffer(
                getattr(self, name), dtype=np.int16 if name in ("code", "cls") else np.int64
            ).copy()
            for name in ("intended", "start", "first_byte", "end", "size", "code", "cls")
        }
        extras = {k: np.frombuffer(v, dtype=np.int64).copy() for k, v in self.extras.items()}
        for name in ("intended", "start", "first_byte", "end", "size"):
            setattr(self, name, array("q"))
        self.code = array("h")
        self.cls = array("h")
        self.extras = {}
        return cols, extras


class _Batch:
    """One fold's requests (raw columns) and what every recording folding them derives.

    Bucketing the durations (a logarithm each) is the costly part of a fold: done once
    here, it serves the totals, the per-second bins and each class's and stage's
    sub-recording (:meth:`rows` and :meth:`subset` select rows without redoing it).
    Durations are of successful requests only, as every histogram keeps (the dispatch
    lag: of every request); in closed loop (start is the intended time) service time
    is the latency and the lag is 0.
    """

    __slots__ = (
        "all_ok",
        "c",
        "lag",
        "lag_b",
        "lat",
        "lat_b",
        "lat_sb",
        "ok",
        "sec_end",
        "sec_start",
        "service",
        "service_b",
        "ttfb",
        "ttfb_b",
    )

    def __init__(self, c: dict[str, np.ndarray] | None = None) -> None:
        if c is None:  # rows() and subset() fill the slots
            return
        self.c = c
        self.ok = ok = c["code"] == OK
        self.all_ok = all_ok = bool(ok.all())
        end, start, intended = c["end"], c["start"], c["intended"]
        lat = end - intended
        self.lat = lat if all_ok else lat[ok]
        x = log_ns(self.lat)
        self.lat_b = _FINE.bucket_of(self.lat, x)
        self.lat_sb = _SECOND.bucket_of(self.lat, x)
        if np.array_equal(start, intended):
            self.service, self.service_b = self.lat, self.lat_b
            self.lag = self.lag_b = np.zeros(len(end), np.int64)  # bucket 0: <= LOWEST_NS
        else:
            svc = end - start
            self.service = svc if all_ok else svc[ok]
            self.service_b = _FINE.bucket_of(self.service)
            self.lag = np.maximum(start - intended, 0)
            self.lag_b = _FINE.bucket_of(self.lag)
        fb = ok & (c["first_byte"] > 0)
        self.ttfb = (c["first_byte"] - intended)[fb]
        self.ttfb_b = _FINE.bucket_of(self.ttfb)
        self._seconds()

    def _seconds(self) -> None:
        # the 1-second bins a request counts in: by completion (a request finishing
        # during the drain lands in the second it finished in) and by start
        self.sec_end = np.maximum(self.c["end"], 0) // 1_000_000_000
        self.sec_start = np.maximum(self.c["start"], 0) // 1_000_000_000

    def rows(self, lo: int, hi: int) -> _Batch:
        """Rows ``lo:hi``, as views (a mix's class, once the rows are grouped by class)."""
        out = _Batch()
        out.c = {n: v[lo:hi] for n, v in self.c.items()}
        out.ok = self.ok[lo:hi]
        out.all_ok = self.all_ok or bool(out.ok.all())
        a, z = (lo, hi) if self.all_ok else _count_before(self.ok, lo, hi)
        out.lat, out.lat_b, out.lat_sb = self.lat[a:z], self.lat_b[a:z], self.lat_sb[a:z]
        out.service, out.service_b = self.service[a:z], self.service_b[a:z]
        out.lag, out.lag_b = self.lag[lo:hi], self.lag_b[lo:hi]
        a, z = _count_before(self.ok & (self.c["first_byte"] > 0), lo, hi)
        out.ttfb, out.ttfb_b = self.ttfb[a:z], self.ttfb_b[a:z]
        out.sec_end, out.sec_start = self.sec_end[lo:hi], self.sec_start[lo:hi]
        return out

    def subset(self, sel: np.ndarray, shift_ns: int = 0) -> _Batch:
        """The rows ``sel`` (a boolean mask); ``shift_ns`` moves their times earlier
        (a stage's sub-recording counts from the stage's start)."""
        out = _Batch()
        c = {n: v[sel] for n, v in self.c.items()}
        if shift_ns:
            for n in ("intended", "start", "end"):
                c[n] = c[n] - shift_ns
            fb = c["first_byte"]
            c["first_byte"] = np.where(fb > 0, fb - shift_ns, 0)
        out.c = c
        out.ok = self.ok[sel]
        out.all_ok = self.all_ok or bool(out.ok.all())
        s = sel if self.all_ok else sel[self.ok]
        out.lat, out.lat_b, out.lat_sb = self.lat[s], self.lat_b[s], self.lat_sb[s]
        out.service, out.service_b = self.service[s], self.service_b[s]
        out.lag, out.lag_b = self.lag[sel], self.lag_b[sel]
        s = sel[self.ok & (self.c["first_byte"] > 0)]
        out.ttfb, out.ttfb_b = self.ttfb[s], self.ttfb_b[s]
        if shift_ns:
            out._seconds()
        else:
            out.sec_end, out.sec_start = self.sec_end[sel], self.sec_start[sel]
        return out


def _tally(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``keys`` (sorted) and how often each occurs: ``np.unique(...,
    return_counts=True)``, by counting where the keys are dense (no sort)."""
    lo, hi = int(keys.min()), int(keys.max())
    if hi - lo > 4 * len(keys) + 4096:
        return np.unique(keys, return_counts=True)
    counts = np.bincount(keys - lo)
    nz = np.flatnonzero(counts)
    return nz + lo, counts[nz]


def _count_before(mask: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """Where rows ``lo:hi`` of a table fall among the rows that ``mask`` keeps."""
    a = int(np.count_nonzero(mask[:lo]))
    return a, a + int(np.count_nonzero(mask[lo:hi]))


@dataclass
class Recording:
    """What one phase measured, in one client process or merged over many.

    All times are ns relative to the phase's window start, which is shared (by
    wall clock) between the clients of a trial.
    """

    window_ns: int = 0  # scheduled length of the phase (0 when bounded by a count)
    hist: dict[str, LogHistogram] = field(default_factory=dict)
    ok: int = 0
    size_ok: int = 0
    errors: Counter = field(default_factory=Counter)
    timeouts: int = 0
    started: int = 0
    first_intended_ns: float = math.inf
    last_start_ns: float = -math.inf
    last_end_ns: float = -math.inf
    # 1-second bins by completion time
    sec_ok: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sec_err: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sec_size: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sec_start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # by start
    sec_hist_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sec_hist_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    clients: int = 1
    failed_clients: list[str] = field(default_factory=list)
    # clients > 1: one row per client shard (host, clock, its own figures, state), set
    # by benchflow.load.clients on the merged recordings
    shards: list[dict] = field(default_factory=list)
    abandoned: bool = False  # the stall watchdog ended the phase
    wall_start_s: float = 0.0  # wall clock of the window start (for the monitor)
    # offered vs completed load: requests started / ended within the window
    # (everything, when the phase is bounded by a count)
    started_in_window: int = 0
    ended_in_window: int = 0
    # duration_s=auto: why the phase ended ("precision" | "max_s"), when (ns from the
    # window start), with how many successful requests judged, and the judged
    # percentiles' relative half-widths then (None: no finite interval yet)
    stop_by: str | None = None
    stop_at_ns: int = 0
    stop_samples: int = 0
    stop_widths: dict[str, float | None] = field(default_factory=dict)
    # A mix's classes and a staged schedule's stages (docs/workloads.md): each class
    # and each stage keeps a recording of its own, in ``subs`` under
    # ``classes.<name>`` and ``stages.<i>``; a stage's times count from its start.
    # (Theirs keep the per-second counts but not the per-second latency percentiles.)
    class_names: list[str] = field(default_factory=list)
    stage_starts_ns: list[int] = field(default_factory=list)
    subs: dict[str, Recording] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in CORE:
            self.hist.setdefault(name, LogHistogram())
        self._sec_hist = LogHistogram(rel_error=SECOND_REL_ERROR)

    @property
    def total(self) -> int:
        return self.ok + sum(self.errors.values())

    # -- folding raw columns -----------------------------------------------------
    def fold(self, cols: dict[str, np.ndarray], extras: dict[str, np.ndarray], classes: list[str]):
        if len(cols["end"]):
            if len(self.class_names) > 1:
                # Grouped by class (no figure depends on the rows' order), each class's
                # rows are one slice: views, where boolean masks would copy every column.
                order = np.argsort(cols["cls"], kind="stable")
                cols = {n: v[order] for n, v in cols.items()}
            batch = _Batch(cols)
            self._fold_requests(batch, classes)
            self._fold_subs(batch, classes)
        for name, values in extras.items():
            self.hist.setdefault(f"x.{name}", LogHistogram()).record_many(values)

    def _fold_subs(self, b: _Batch, classes: list[str]) -> None:
        if len(self.class_names) > 1:
            bounds = np.searchsorted(b.c["cls"], np.arange(len(self.class_names) + 1))
            for k, name in enumerate(self.class_names):
                lo, hi = int(bounds[k]), int(bounds[k + 1])
                if hi > lo:
                    self._sub(f"classes.{name}", self.window_ns)._fold_requests(
                        b.rows(lo, hi), classes, seconds_latency=False
                    )
        if len(self.stage_starts_ns) > 1:
            edges = [*self.stage_starts_ns, self.window_ns or np.iinfo(np.int64).max]
            stage = np.searchsorted(edges[1:-1], b.c["intended"], side="right")
            for k in np.unique(stage).tolist():
                t0 = edges[k]
                part = b.subset(stage == k, shift_ns=t0)
                self._sub(f"stages.{k}", edges[k + 1] - t0, t0)._fold_requests(
                    part, classes, seconds_latency=False
                )

    def _sub(self, key: str, window_ns: int, t0_ns: int = 0) -> Recording:
        sub = self.subs.get(key)
        if sub is None:
            sub = self.subs[key] = Recording(window_ns=window_ns)
            sub.wall_start_s = self.wall_start_s + t0_ns / 1e9
        return sub

    def _fold_requests(self, b: _Batch, classes: list[str], seconds_latency=True) -> None:
        """Fold a batch's requests; ``seconds_latency=False`` (a class's or a stage's
        sub-recording: no report reads its series' percentiles) skips the per-second
        latency bins."""
        c, ok = b.c, b.ok
        self.started += len(c["end"])
        self.first_intended_ns = min(self.first_intended_ns, float(c["intended"].min()))
        self.last_start_ns = max(self.last_start_ns, float(c["start"].max()))
        self.last_end_ns = max(self.last_end_ns, float(c["end"].max()))
        self.hist["latency"].record_many(b.lat, buckets=b.lat_b)
        self.hist["service"].record_many(b.service, buckets=b.service_b)
        self.hist["lag"].record_many(b.lag, buckets=b.lag_b)
        if len(b.ttfb):
            self.hist["ttfb"].record_many(b.ttfb, buckets=b.ttfb_b)
        n_ok = len(b.lat)
        self.ok += n_ok
        size_ok = c["size"] if b.all_ok else c["size"][ok]
        self.size_ok += int(size_ok.sum())
        if self.window_ns:
            self.started_in_window += int((c["start"] <= self.window_ns).sum())
            self.ended_in_window += int((c["end"] <= self.window_ns).sum())
        else:
            self.started_in_window += len(c["end"])
            self.ended_in_window += len(c["end"])
        if not b.all_ok:
            codes, n = np.unique(c["code"][~ok], return_counts=True)
            for code, cnt in zip(codes.tolist(), n.tolist(), strict=True):
                name = classes[code]
                self.errors[name] += cnt
                if name == "timeout":
                    self.timeouts += cnt
        sec = b.sec_end
        n = int(sec.max()) + 1
        self._grow(n)
        sec_ok = sec if b.all_ok else sec[ok]
        self.sec_ok[:n] += np.bincount(sec_ok, minlength=n)
        if not b.all_ok:
            self.sec_err[:n] += np.bincount(sec[~ok], minlength=n)
        self.sec_size[:n] += np.bincount(sec_ok, weights=size_ok, minlength=n).astype(np.int64)
        self.sec_start[:n] += np.bincount(b.sec_start, minlength=n)
        if seconds_latency and len(sec_ok):
            self._add_sec_keys(*_tally(sec_ok * self._sec_hist.nbuckets + b.lat_sb))

    def _grow(self, n: int) -> None:
        if n > len(self.sec_ok):
            pad = n - len(self.sec_ok)
            self.sec_ok = np.concatenate([self.sec_ok, np.zeros(pad, np.int64)])
            self.sec_err = np.concatenate([self.sec_err, np.zeros(pad, np.int64)])
            self.sec_size = np.concatenate([self.sec_size, np.zeros(pad, np.int64)])
            self.sec_start = np.concatenate([self.sec_start, np.zeros(pad, np.int64)])

    def _add_sec_keys(self, keys: np.ndarray, counts: np.ndarray) -> None:
        allk = np.concatenate([self.sec_hist_keys, keys])
        allc = np.concatenate([self.sec_hist_counts, counts])
        uk, inv = np.unique(allk, return_inverse=True)
        self.sec_hist_keys = uk
        self.sec_hist_counts = np.bincount(inv, weights=allc).astype(np.int64)

    def add_failure(self, error_class: str, count: int = 1) -> None:
        self.errors[error_class] += count
        if error_class == "timeout":
            self.timeouts += count

    # -- merging -----------------------------------------------------------------
    def merge(self, other: Recording) -> Recording:
        for name, h in other.hist.items():
            self.hist.setdefault(name, LogHistogram(rel_error=h.rel_error)).merge(h)
        self.ok += other.ok
        self.size_ok += other.size_ok
        self.errors.update(other.errors)
        self.timeouts += other.timeouts
        self.started += other.started
        self.window_ns = max(self.window_ns, other.window_ns)
        self.wall_start_s = min(self.wall_start_s or other.wall_start_s, other.wall_start_s)
        self.first_intended_ns = min(self.first_intended_ns, other.first_intended_ns)
        self.last_start_ns = max(self.last_start_ns, other.last_start_ns)
        self.last_end_ns = max(self.last_end_ns, other.last_end_ns)
        self._grow(len(other.sec_ok))
        n = len(other.sec_ok)
        self.sec_ok[:n] += other.sec_ok
        self.sec_err[:n] += other.sec_err
        self.sec_size[:n] += other.sec_size
        self.sec_start[: len(other.sec_start)] += other.sec_start
        self._add_sec_keys(other.sec_hist_keys, other.sec_hist_counts)
        self.clients += other.clients
        self.failed_clients += other.failed_clients
        self.abandoned = self.abandoned or other.abandoned
        self.started_in_window += other.started_in_window
        self.ended_in_window += other.ended_in_window
        for key, sub in other.subs.items():
            mine = self.subs.get(key)
            self.subs[key] = sub if mine is None else mine.merge(sub)
        self.class_names = self.class_names or list(other.class_names)
        self.stage_starts_ns = self.stage_starts_ns or list(other.stage_starts_ns)
        if self.stop_by is None and other.stop_by is not None:
            self.stop_by, self.stop_at_ns = other.stop_by, other.stop_at_ns
            self.stop_samples, self.stop_widths = other.stop_samples, dict(other.stop_widths)
        return self

    # -- derived figures ---------------------------------------------------------
    def elapsed_s(self) -> float:
        """Window start to the last completion (or the scheduled window, if longer)."""
        last = max(self.last_end_ns, self.window_ns, 0)
        return last / 1e9 if last > 0 else 0.0

    def achieved_rate(self) -> float | None:
        """Requests started per second: (n - 1) / (last start - first intended)."""
        span = self.last_start_ns - self.first_intended_ns
        if self.started < 2 or span <= 0:
            return None
        return (self.started - 1) / (span / 1e9)

    def window_s(self) -> float:
        """The measured window's length: the scheduled (or, for ``duration_s=auto``, the
        actual) phase length; a count-bounded phase's is its elapsed time."""
        return self.window_ns / 1e9 if self.window_ns else self.elapsed_s()

    def offered_rate(self) -> float | None:
        """Requests started (dispatched) within the window, per second of the window."""
        w = self.window_s()
        return self.started_in_window / w if w > 0 else None

    def completed_rate(self) -> float | None:
        """Requests completed (ok or failed) within the window, per second of the window."""
        w = self.window_s()
        return self.ended_in_window / w if w > 0 else None

    def per_second(self) -> list[dict]:
        """The 1-second series: ok, errors, size, p50 and p99 latency (ms) per second.

        Only whole seconds of a time-bounded window are reported: the requests
        that complete while the phase drains would make a misleading last point.
        """
        nb = self._sec_hist.nbuckets
        secs = self.sec_hist_keys // nb
        buckets = self.sec_hist_keys % nb
        n = len(self.sec_ok)
        if self.window_ns:
            n = min(n, max(1, self.window_ns // 1_000_000_000))
        rows = []
        for s in range(n):
            sel = secs == s
            row = {
                "second": s,
                "ok": int(self.sec_ok[s]),
                "errors": int(self.sec_err[s]),
                "size": int(self.sec_size[s]),
                "p50_ms": None,
                "p99_ms": None,
            }
            if sel.any():
                b, cnt = buckets[sel], self.sec_hist_counts[sel]
                cum = np.cumsum(cnt)
                for q, key in ((50, "p50_ms"), (99, "p99_ms")):
                    rank = max(1, math.ceil(q / 100 * cum[-1]))
                    i = int(np.searchsorted(cum, rank))
                    row[key] = float(self._sec_hist.upper_edge(b[i])) / 1e6
            rows.append(row)
        return rows


class Recorder:
    """Collects the buffers of all workers of one phase into a :class:`Recording`."""

    # A worker folds its buffer every ``flush_every`` requests: rarely enough that a
    # fold's fixed cost (~0.3 ms) vanishes per request, often enough that the rows not
    # yet folded, over all workers, stay under ROWS_UNFOLDED (44 bytes a row).
    FLUSH_MIN, FLUSH_MAX, ROWS_UNFOLDED = 8192, 65536, 1 << 19

    def __init__(
        self, window_ns: int = 0, class_names=(), stage_starts_ns=(), workers: int = 1
    ) -> None:
        self.flush_every = max(
            self.FLUSH_MIN, min(self.FLUSH_MAX, self.ROWS_UNFOLDED // max(1, workers))
        )
        self.recording = Recording(
            window_ns=window_ns,
            class_names=list(class_names),
            stage_starts_ns=list(stage_starts_ns),
        )
        self.classes: list[str] = ["ok"]
        self._class_codes: dict[str, int] = {"ok": OK}
        self._lock = threading.Lock()
        self.buffers: list[WorkerBuffer] = []
        # Raised to ask every worker thread to flush its buffer after its current
        # request (duration_s=auto reads the histogram while the phase runs).
        self.flush_gen = 0

    def buffer(self) -> WorkerBuffer:
        buf = WorkerBuffer()
        with self._lock:
            self.buffers.append(buf)
        return buf

    def code_of(self, error_class: str) -> int:
        code = self._class_codes.get(error_class)
        if code is None:
            with self._lock:
                code = self._class_codes.setdefault(error_class, len(self.classes))
                if code == len(self.classes):
                    self.classes.append(error_class)
        return code

    def flush(self, buf: WorkerBuffer) -> None:
        cols, extras = buf.drain()
        with self._lock:
            self.recording.fold(cols, extras, self.classes)

    def flush_all(self) -> None:
        """Fold every buffer now, in one fold. Only where no worker can append meanwhile
        (the asyncio engine: one thread); worker threads flush their own (``flush_gen``)."""
        drained = [buf.drain() for buf in list(self.buffers) if len(buf)]
        if not drained:
            return
        cols = {k: np.concatenate([c[k] for c, _ in drained]) for k in drained[0][0]}
        extras: dict[str, list[np.ndarray]] = {}
        for _, ex in drained:
            for k, v in ex.items():
                extras.setdefault(k, []).append(v)
        with self._lock:
            self.recording.fold(
                cols, {k: np.concatenate(v) for k, v in extras.items()}, self.classes
            )

    def finish(self) -> Recording:
        for buf in list(self.buffers):
            self.flush(buf)
        return self.recording

    def done(self) -> int:
        """Requests recorded so far (approximate while workers run; for progress bars)."""
        return self.recording.total + sum(len(b) for b in self.buffers)
