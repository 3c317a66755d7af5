"""A mergeable log-bucketed histogram of durations (nanoseconds).

Why not keep every sample: a trial at 100k requests/s would hold tens of millions
of timestamps, and clients on other processes or nodes must send their
distributions to one place. Buckets grow geometrically by ``1 + rel_error``, so
every reported percentile is within ``rel_error`` of the exact one, whatever the
scale, and histograms from many clients merge by adding counts — percentiles are
never averaged.

Percentile definition (the one HdrHistogram and most load generators use): the
nearest-rank order statistic, i.e. the smallest recorded value ``v`` such that at
least ``q`` percent of the samples are ``<= v`` (numpy's
``method="inverted_cdf"``). The histogram reports the upper edge of the bucket
holding that sample, clamped to the exact min/max, so a reported value ``r``
satisfies ``exact <= r <= exact * (1 + rel_error)``: it never understates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

LOWEST_NS = 10.0  # 10 ns: below anything a Python call can take
HIGHEST_NS = 1e13  # ~2.8 hours: above any request
DEFAULT_REL_ERROR = 1e-3  # bucket growth of every latency histogram a trial keeps


def log_ns(values_ns: np.ndarray) -> np.ndarray:
    """``log(max(v, LOWEST_NS) / LOWEST_NS)``: the one costly step of bucketing a value,
    shared by histograms of any precision (the bucket is this over ``log(1 + rel_error)``)."""
    v = np.maximum(np.asarray(values_ns, dtype=np.float64), LOWEST_NS)
    return np.log(v / LOWEST_NS)


@dataclass
class LogHistogram:
    rel_error: float = DEFAULT_REL_ERROR
    count: int = 0
    total: float = 0.0  # exact sum, for the mean
    vmin: float = math.inf
    vmax: float = -math.inf
    counts: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self._log_g = math.log1p(self.rel_error)
        self.nbuckets = math.ceil(math.log(HIGHEST_NS / LOWEST_NS) / self._log_g) + 1
        if self.counts is None:
            self.counts = np.zeros(self.nbuckets, dtype=np.int64)

    # -- recording -------------------------------------------------------------
    def bucket_of(self, values_ns: np.ndarray, logs: np.ndarray | None = None) -> np.ndarray:
        """The bucket of each value; ``logs``: the values' :func:`log_ns`, when known."""
        x = log_ns(values_ns) if logs is None else logs
        idx = (x / self._log_g).astype(np.int64)  # x >= 0: truncation is the floor
        return np.minimum(idx, self.nbuckets - 1, out=idx)

    def record_many(
        self,
        values_ns: np.ndarray,
        logs: np.ndarray | None = None,
        buckets: np.ndarray | None = None,
    ) -> None:
        """Record ``values_ns``. Their :func:`log_ns` (``logs``) or their buckets in this
        histogram's precision (``buckets``), when known, save recomputing them: the
        same values often go into several histograms."""
        values = np.asarray(values_ns)
        if values.size == 0:
            return
        if values.dtype.kind not in "iuf":
            values = values.astype(np.float64)
        idx = self.bucket_of(values, logs) if buckets is None else buckets
        # Count over the buckets the values span, not all of them: a batch of requests
        # spans a few hundred buckets of the ~28,000 (the fold's fixed cost).
        lo = int(idx.min())
        counts = np.bincount(idx - lo) if lo else np.bincount(idx)
        self.counts[lo : lo + len(counts)] += counts
        self.count += int(values.size)
        self.total += float(values.sum())
        self.vmin = min(self.vmin, float(values.min()))
        self.vmax = max(self.vmax, float(values.max()))

    def merge(self, other: LogHistogram) -> LogHistogram:
        if other.rel_error != self.rel_error:
            raise ValueError("cannot merge histograms of different precision")
        self.counts += other.counts
        self.count += other.count
        self.total += other.total
        self.vmin = min(self.vmin, other.vmin)
        self.vmax = max(self.vmax, other.vmax)
        return self

    # -- reading ---------------------------------------------------------------
    def upper_edge(self, idx: np.ndarray | int) -> np.ndarray | float:
        return LOWEST_NS * np.exp((np.asarray(idx) + 1) * self._log_g)

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile ``q`` in [0, 100], in ns (None when empty)."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q / 100.0 * self.count))
        cum = np.cumsum(self.counts)
        i = int(np.searchsorted(cum, rank))
        return float(min(max(float(self.upper_edge(i)), self.vmin), self.vmax))

    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def summary_ms(self, percentiles: dict[str, float]) -> dict[str, float | None]:
        """min/mean/max and the named percentiles, converted to milliseconds."""

        def ms(v: float | None) -> float | None:
            return None if v is None else v / 1e6

        out = {name: ms(self.percentile(q)) for name, q in percentiles.items()}
        out["mean"] = ms(self.mean())
        out["min"] = ms(self.vmin) if self.count else None
        out["max"] = ms(self.vmax) if self.count else None
        out["count"] = self.count
        return out

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draw ``size`` values (ns, bucket upper edges) in proportion to the counts.

        Used for bootstrap resampling of a run's requests without keeping them.
        """
        nz = np.flatnonzero(self.counts)
        p = self.counts[nz] / self.count
        return np.asarray(self.upper_edge(rng.choice(nz, size=size, p=p)), dtype=np.float64)

    # -- (de)serialisation: sparse, so a mostly empty histogram stays small ------
    def to_dict(self) -> dict:
        nz = np.flatnonzero(self.counts)
        return {
            "rel_error": self.rel_error,
            "lowest_ns": LOWEST_NS,
            "count": self.count,
            "total_ns": self.total,
            "min_ns": self.vmin if self.count else None,
            "max_ns": self.vmax if self.count else None,
            "buckets": nz.tolist(),
            "counts": self.counts[nz].tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> LogHistogram:
        h = cls(rel_error=d["rel_error"])
        h.counts[np.asarray(d["buckets"], dtype=np.int64)] = np.asarray(d["counts"], np.int64)
        h.count = int(d["count"])
        h.total = float(d["total_ns"])
        h.vmin = math.inf if d["min_ns"] is None else float(d["min_ns"])
        h.vmax = -math.inf if d["max_ns"] is None else float(d["max_ns"])
        return h
