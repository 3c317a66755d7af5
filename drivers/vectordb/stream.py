"""Search during ingest (VectorDBBench's streaming case) and recall by distance.

What the vector-DB driver base needs to load an index while searching it and to
judge the answers against the set of vectors that was *live* when each search
was sent (docs/vectordb.md, "Search during ingest"):

- :class:`Cursor` hands out contiguous id ranges to insert requests and keeps
  the acknowledged high-water mark: the largest prefix ``base[:n]`` whose every
  insert returned (inserts may finish out of order);
- :class:`SearchLog` keeps a seeded reservoir sample of the searches sent during
  the measured phase (query indices, ``n`` at send, the ids returned);
- :func:`exact_prefix_topk` is the exact top-k of queries over ``base[:n]`` by
  brute force (numpy, float64, chunked, queries grouped by ``n``);
- :func:`live_recall` applies the live-set rule to one sample of searches;
- :func:`recall_by_distance` is ann-benchmarks' distance-based recall;
- :class:`FreshnessProbe` is the background thread that measures how long an
  acknowledged vector takes to be returned by a search for itself.

All of it is plain numpy and threading: an engine module never sees it.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from drivers.base import DriverError

log = logging.getLogger("benchflow.vectordb.stream")

# Base rows per block of the brute-force pass: bounds its memory (queries x block
# float64 distances) whatever the dataset's size.
CHUNK_ROWS = 16384
# The freshness thread's pause between two probe rounds: the resolution of a
# freshness figure is this plus one search's latency.
PROBE_INTERVAL_S = 0.005
# Vectors probed per search call (engines with a smaller max batch get less).
PROBE_BATCH = 64


class Cursor:
    """The next ids to insert and the acknowledged high-water mark, thread-safe.

    ``claim(b)`` hands out ``[start, end)`` ranges in id order; ``ack`` and ``fail``
    close them, possibly out of order. ``n_ack`` is the largest ``n`` such that
    every id below it is closed; a failed range is closed too (so one failure
    does not freeze the live set) but remembered in ``failed``: its vectors may or
    may not be in the index, so they are left out of the live set and returned
    ids in them are not judged.
    """

    def __init__(self, start: int, total: int) -> None:
        self._lock = threading.Lock()
        self.next = start
        self.total = total
        self.n_ack = start
        self._closed: dict[int, int] = {}  # start -> end of ranges closed above n_ack
        self.failed: list[tuple[int, int]] = []

    def claim(self, b: int) -> tuple[int, int]:
        with self._lock:
            if self.next >= self.total:
                raise DriverError(
                    f"the dataset's {self.total} base vectors are all inserted; use a larger "
                    "dataset, a lower insert rate or a smaller service.stream.initial_fraction",
                    "dataset_exhausted",
                )
            start = self.next
            self.next = min(self.total, start + b)
            return start, self.next

    def ack(self, start: int, end: int) -> None:
        with self._lock:
            self._close(start, end)

    def fail(self, start: int, end: int) -> None:
        with self._lock:
            self.failed.append((start, end))
            self._close(start, end)

    def _close(self, start: int, end: int) -> None:
        self._closed[start] = end
        while self.n_ack in self._closed:
            self.n_ack = self._closed.pop(self.n_ack)


class SearchLog:
    """A seeded reservoir sample of the searches sent while measuring.

    One entry per search request: its query indices, the live-set size ``n`` read
    just before it was sent, and the ids returned. At most ``cap`` requests are
    kept (Algorithm R over requests, seeded), so the sample is spread over the
    whole phase whatever its length.
    """

    def __init__(self, cap: int, seed: int) -> None:
        self.cap = cap
        self._rng = np.random.default_rng([seed, 0x5EA2C])
        self._lock = threading.Lock()
        self.seen = 0
        self.entries: list[tuple[np.ndarray, int, np.ndarray]] = []

    def slot(self) -> int | None:
        """Where the next request goes in the sample (None: not sampled)."""
        with self._lock:
            self.seen += 1
            if len(self.entries) < self.cap:
                self.entries.append(None)  # reserved; filled by put()
                return len(self.entries) - 1
            j = int(self._rng.integers(0, self.seen))
            return j if j < self.cap else None

    def put(self, slot: int, qidx: np.ndarray, n: int, ids: np.ndarray) -> None:
        with self._lock:
            self.entries[slot] = (qidx, n, ids)

    def arrays(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query index, n at send, ids (rows, k)), one row per query searched."""
        done = [e for e in self.entries if e is not None]
        if not done:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, k), np.int64)
        q = np.concatenate([e[0] for e in done]).astype(np.int64)
        n = np.concatenate([np.full(len(e[0]), e[1], np.int64) for e in done])
        ids = np.concatenate([e[2] for e in done]).astype(np.int64)
        return q, n, ids


# -- exact neighbours over a prefix --------------------------------------------------
def scores(queries: np.ndarray, base: np.ndarray, metric: str) -> np.ndarray:
    """Similarity, larger is nearer (float64): −squared L2, the inner product, or the
    cosine (the inner product of the normalized vectors)."""
    q, b = queries.astype(np.float64), base.astype(np.float64)
    if metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    s = q @ b.T
    if metric == "L2":
        s = 2 * s - (q * q).sum(1)[:, None] - (b * b).sum(1)[None, :]
    return s


def exact_prefix_topk(
    base: np.ndarray,
    queries: np.ndarray,
    qidx: np.ndarray,
    n: np.ndarray,
    metric: str,
    k: int,
    excluded: np.ndarray | None = None,
) -> np.ndarray:
    """Exact top-``k`` ids of ``queries[qidx[i]]`` over ``base[:n[i]]`` for every i.

    ``excluded``: a boolean mask over ``base`` of ids that are not candidates (a
    filter's rejects, failed inserts). Rows are padded with -1 where fewer than k
    qualify. Samples are grouped by ``n`` so each group scans its prefix once, in
    blocks of :data:`CHUNK_ROWS` rows, keeping a running top-k (exact ties at the
    k-th place are broken arbitrarily; with float data they do not occur, and the
    distance-based recall does not depend on them).
    """
    out = np.full((len(qidx), k), -1, np.int64)
    for nv in np.unique(n):
        rows = np.flatnonzero(n == nv)
        q = queries[qidx[rows]]
        best_s = np.full((len(rows), 0), -np.inf)
        best_i = np.zeros((len(rows), 0), np.int64)
        for c0 in range(0, int(nv), CHUNK_ROWS):
            c1 = min(int(nv), c0 + CHUNK_ROWS)
            s = scores(q, base[c0:c1], metric)
            if excluded is not None:
                s[:, excluded[c0:c1]] = -np.inf
            ids = np.broadcast_to(np.arange(c0, c1), s.shape)
            if s.shape[1] > k:  # the block's own top-k first: the sort below stays small
                part = np.argpartition(-s, k - 1, axis=1)[:, :k]
                s, ids = np.take_along_axis(s, part, 1), np.take_along_axis(ids, part, 1)
            cand_s = np.concatenate([best_s, s], axis=1)
            cand_i = np.concatenate([best_i, ids], axis=1)
            # order by score descending, then id ascending (lexsort: last key first)
            order = np.lexsort((cand_i, -cand_s), axis=1)[:, :k]
            best_s = np.take_along_axis(cand_s, order, 1)
            best_i = np.take_along_axis(cand_i, order, 1)
        best_i = np.where(np.isfinite(best_s), best_i, -1)
        out[rows, : best_i.shape[1]] = best_i
    return out


def live_recall(found: np.ndarray, truth: np.ndarray, n: np.ndarray, k: int, failed) -> np.ndarray:
    """Per-query recall against the live set (NaN where nothing returned is judged).

    A returned id that was not live when the query was sent — ``id >= n`` (in
    flight or inserted later) or in a failed insert — is *not judged*: neither hit
    nor miss. The others are hits when in the exact top-k of the live set. Recall
    = hits / min(k − unjudged, true neighbours the live set has).
    """
    out = np.full(len(found), np.nan)
    for i, (f, t, nv) in enumerate(zip(found[:, :k], truth[:, :k], n, strict=True)):
        f = f[f >= 0]
        unjudged = f >= nv
        for a, b in failed:
            unjudged |= (f >= a) & (f < b)
        judged = f[~unjudged]
        t = t[t >= 0]
        denom = min(k - int(unjudged.sum()), len(t))
        if denom > 0:
            out[i] = len(np.intersect1d(judged, t)) / denom
    return out


def per_query_recall(found: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """|found ∩ truth| / (true neighbours) per query; NaN for a query with none."""
    out = np.full(len(found), np.nan)
    for i, (f, t) in enumerate(zip(found[:, :k], truth[:, :k], strict=True)):
        t = t[t >= 0]
        if len(t):
            out[i] = len(np.intersect1d(f[f >= 0], t)) / len(t)
    return out


def recall_by_distance(
    base: np.ndarray,
    queries: np.ndarray,
    found: np.ndarray,
    truth: np.ndarray,
    metric: str,
    k: int,
    eps: float,
    excluded: np.ndarray | None = None,
) -> np.ndarray:
    """ann-benchmarks' recall counted by distance, per query.

    A returned neighbour counts when its true distance to the query is within
    (1 + eps) of the distance of the query's k-th true neighbour, so a tie (or a
    neighbour as near as the k-th) costs no recall. Distances: Euclidean for L2,
    1 − cos for cosine, and for IP the
    score itself: a neighbour counts when its inner product is at least
    s_k − eps·|s_k|. Ids that do not qualify (``excluded``: the filter) never count;
    a query's count is capped at its number of true neighbours.
    """
    out = np.full(len(found), np.nan)
    for i, (f, t) in enumerate(zip(found[:, :k], truth[:, :k], strict=True)):
        t = t[t >= 0]
        if not len(t):
            continue
        f = np.unique(f[f >= 0])
        if excluded is not None:
            f = f[~excluded[f]]
        q = queries[i : i + 1]
        s_k = scores(q, base[t[-1:]], metric)[0, 0]
        s_f = scores(q, base[f], metric)[0] if len(f) else np.zeros(0)
        if metric == "L2":  # squared distances from scores; compare Euclidean ones
            limit = math.sqrt(max(-s_k, 0.0)) * (1 + eps)
            ok = np.sqrt(np.maximum(-s_f, 0.0)) <= limit
        elif metric == "cosine":
            ok = (1 - s_f) <= (1 - s_k) * (1 + eps)
        else:
            ok = s_f >= s_k - eps * abs(s_k)
        out[i] = min(int(ok.sum()), len(t)) / len(t)
    return out


def percentiles(values: np.ndarray, prefix: str) -> dict[str, float]:
    """Mean, p10 and p50 (numpy's linear interpolation) of the non-NaN values."""
    v = values[~np.isnan(values)]
    if not len(v):
        return {}
    return {
        prefix: float(v.mean()),
        f"{prefix}_p10": float(np.percentile(v, 10)),
        f"{prefix}_p50": float(np.percentile(v, 50)),
    }


# -- freshness -------------------------------------------------------------------------
@dataclass
class _Pending:
    vid: int
    vector: np.ndarray
    acked: float  # perf_counter() when the insert returned
    deadline: float


@dataclass
class FreshnessProbe:
    """A background thread that searches each sampled vector for itself until its
    id comes back or its timeout passes.

    ``search(state, vectors, k)`` is the engine's search; ``state`` comes from the
    engine's ``open_worker`` (its own connection). Every round searches all pending
    vectors in one call (chunked by ``batch``), so a vector that is slow to appear
    does not delay the others; rounds are :data:`PROBE_INTERVAL_S` apart. A value
    is the time from the insert's acknowledgement to the round that saw it.
    """

    search: Callable[[object, np.ndarray, int], np.ndarray]
    state: object
    k: int
    timeout_s: float
    batch: int = PROBE_BATCH
    latencies_ms: list[float] = field(default_factory=list)
    timeouts: int = 0
    error: str | None = None

    def __post_init__(self) -> None:
        self._q: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bf-freshness", daemon=True)
        self._thread.start()

    def add(self, vid: int, vector: np.ndarray, acked: float) -> None:
        self._q.put(_Pending(vid, vector, acked, acked + self.timeout_s))

    def stop(self, wait_s: float) -> None:
        """Let the pending vectors finish (each within its own timeout), then end."""
        self._stop.set()
        self._thread.join(wait_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        pending: list[_Pending] = []
        while True:
            while True:
                try:
                    pending.append(self._q.get_nowait())
                except queue.Empty:
                    break
            if not pending:
                if self._stop.is_set():
                    return
                try:
                    pending.append(self._q.get(timeout=0.05))
                except queue.Empty:
                    continue
            try:
                pending = self._round(pending)
            except Exception as exc:  # the SUT failed: stop probing, say so
                self.error = f"{type(exc).__name__}: {str(exc)[:200]}"
                log.warning("freshness probe stopped: %s", self.error)
                return
            if pending:
                time.sleep(PROBE_INTERVAL_S)

    def _round(self, pending: list[_Pending]) -> list[_Pending]:
        left = []
        for c in range(0, len(pending), self.batch):
            chunk = pending[c : c + self.batch]
            ids = self.search(self.state, np.stack([p.vector for p in chunk]), self.k)
            now = time.perf_counter()
            for p, row in zip(chunk, np.asarray(ids), strict=True):
                if p.vid in row:
                    self.latencies_ms.append((now - p.acked) * 1e3)
                elif now >= p.deadline:
                    self.timeouts += 1
                else:
                    left.append(p)
        return left

    def figures(self) -> dict[str, float]:
        lat = np.asarray(self.latencies_ms)
        out = {
            "freshness.samples": float(len(lat) + self.timeouts),
            "freshness.timeouts": float(self.timeouts),
        }
        if len(lat):
            out["freshness_ms.p50"] = float(np.percentile(lat, 50))
            out["freshness_ms.p90"] = float(np.percentile(lat, 90))
            out["freshness_ms.max"] = float(lat.max())
        return out


class RWLock:
    """Many readers or one writer (FAISS indexes take concurrent searches but no
    search while a vector is added). Writers are preferred, so a steady stream of
    searches cannot starve inserts."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    def acquire_read(self) -> None:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True

    def release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()
