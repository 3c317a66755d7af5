"""How well a trial knows its percentiles: distribution-free confidence intervals
read from the recorder's histogram, and the rule that ends a ``duration_s=auto``
phase once they are narrow enough.

The interval of percentile q (a fraction) from n samples is the order-statistic
(binomial) interval MLPerf LoadGen's early stopping also rests on: the number B
of samples at or below the true q-quantile is Binomial(n, q), so with

    k_lo = the (1 − c)/2 quantile of Binomial(n, q)
    k_hi = the (1 + c)/2 quantile of Binomial(n, q), plus 1

the k_lo-th and k_hi-th smallest samples bracket the true quantile with
probability at least c, whatever the distribution. The histogram does not keep
samples: the interval is read at bucket edges (the lower edge of the bucket
holding rank k_lo, the upper edge of the one holding rank k_hi, clamped to the
exact min/max), so it is never narrower than the samples' own. Its relative
half-width is max(estimate − low, high − estimate) / estimate, the estimate
being the reported (nearest-rank) percentile.

Because the edges are buckets apart, a half-width below about one bucket
(``LogHistogram.rel_error``, 0.1 %) cannot be claimed; :data:`MIN_REL` (two
buckets) is the smallest goal accepted.

With ``clients>1`` no process holds the whole histogram while the phase runs: each
client shard's engine sends a snapshot of its latency histogram every
``CHECK_EVERY_S`` (:meth:`RemoteJudge.send`) to the coordinator
(benchflow.load.clients), which merges the shards' latest snapshots
(:class:`SnapshotSum`), applies the same :func:`judge`, and once precise sends every
shard one common wall-clock instant to end its window at
(:meth:`RemoteJudge.stop`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from benchflow.load.histogram import DEFAULT_REL_ERROR, LogHistogram

# The narrowest relative half-width a goal may ask for: two bucket widths of the
# latency histogram (each side of an interval read at bucket edges carries up to one).
MIN_REL = 2 * DEFAULT_REL_ERROR
# How often a duration_s=auto phase looks at its histogram (seconds).
CHECK_EVERY_S = 0.5


@dataclass(frozen=True)
class PrecisionGoal:
    """When a ``duration_s=auto`` phase may end (see the module's docstring)."""

    rel: float  # relative half-width every judged percentile must reach
    confidence: float  # of the intervals, e.g. 0.95
    min_s: float  # never end before this much of the measured phase
    max_s: float  # and always by this much (the phase's scheduled length)
    percentiles: tuple[tuple[str, float], ...]  # (name, q in percent): ("p99", 99.0)
    # clients>1: the shard's link to the coordinator's judge (set on the shard, never
    # pickled with a value); None: the engine judges its own histogram
    remote: Any = field(default=None, compare=False, repr=False)


class RemoteJudge(Protocol):
    """A client shard's side of the multi-client judge (benchflow.load.clients)."""

    def send(self, snapshot: dict, elapsed_ns: int) -> None:
        """Hand the coordinator the phase's latency histogram so far
        (``LogHistogram.to_dict``), ``elapsed_ns`` into the phase."""

    def stop(self) -> tuple[int, int, dict[str, float | None]] | None:
        """The coordinator's stop, if it came (never blocks): (the instant to end the
        window at, wall-clock ns on this process's clock; the successful requests the
        judge saw; the judged percentiles' relative half-widths then)."""

    def acted(self, late_ns: int, window_ns: int) -> None:
        """The window ended ``late_ns`` after the instant asked for (0: on time)."""


@dataclass(frozen=True)
class Interval:
    """The confidence interval of one percentile (ns; None where it does not exist yet)."""

    q: float  # percent
    n: int
    estimate: float | None
    low: float | None
    high: float | None

    @property
    def rel_half_width(self) -> float | None:
        """max(estimate − low, high − estimate) / estimate; None: no finite interval yet."""
        if self.low is None or self.high is None or not self.estimate:
            return None
        return max(self.estimate - self.low, self.high - self.estimate) / self.estimate


def binom_ppf(p: float, n: int, q: float) -> int:
    """The smallest k with P(Binomial(n, q) <= k) >= p (0 < q < 1, 0 <= p <= 1).

    Exact: the probabilities are summed over mean ± 12 standard deviations (the mass
    outside is below 1e-30), each from its neighbour by the pmf's ratio.
    """
    if n <= 0 or p <= 0:
        return 0
    if p >= 1:
        return n
    mu, sd = n * q, math.sqrt(n * q * (1 - q))
    lo = max(0, math.floor(mu - 12 * sd - 10))
    hi = min(n, math.ceil(mu + 12 * sd + 10))
    k = np.arange(lo, hi + 1, dtype=np.float64)
    log0 = (
        math.lgamma(n + 1)
        - math.lgamma(lo + 1)
        - math.lgamma(n - lo + 1)
        + lo * math.log(q)
        + (n - lo) * math.log1p(-q)
    )
    steps = np.log((n - k[:-1]) / (k[:-1] + 1)) + math.log(q / (1 - q))
    logp = log0 + np.concatenate([[0.0], np.cumsum(steps)])
    cdf = np.cumsum(np.exp(logp))
    i = int(np.searchsorted(cdf, p * (1 - 1e-12)))
    return int(k[min(i, len(k) - 1)])


def rank_bounds(n: int, q: float, confidence: float) -> tuple[int, int]:
    """The 1-based ranks (k_lo, k_hi) of the order-statistic interval of percentile
    ``q`` (percent); either may fall outside 1..n, when no finite interval exists yet."""
    f = q / 100.0
    if f <= 0 or f >= 1:  # min and max are exact, not estimated
        r = 1 if f <= 0 else n
        return r, r
    return (
        binom_ppf((1 - confidence) / 2, n, f),
        binom_ppf((1 + confidence) / 2, n, f) + 1,
    )


def interval(hist: LogHistogram, q: float, confidence: float) -> Interval:
    """The confidence interval of percentile ``q`` (percent) of ``hist`` (ns)."""
    n = hist.count
    est = hist.percentile(q)
    if n == 0:
        return Interval(q, 0, None, None, None)
    k_lo, k_hi = rank_bounds(n, q, confidence)
    if k_lo < 1 or k_hi > n:
        return Interval(q, n, est, None, None)
    cum = np.cumsum(hist.counts)
    i_lo = int(np.searchsorted(cum, k_lo))
    i_hi = int(np.searchsorted(cum, k_hi))
    low = float(hist.upper_edge(i_lo - 1)) if i_lo > 0 else hist.vmin
    high = float(hist.upper_edge(i_hi))
    low = min(max(low, hist.vmin), hist.vmax)
    high = min(max(high, hist.vmin), hist.vmax)
    return Interval(q, n, est, low, high)


class SnapshotSum:
    """The sum of several shards' latest latency snapshots (each cumulative, as
    ``LogHistogram.to_dict`` gives it), kept up to date as each shard sends a new one:
    only the buckets a snapshot holds are touched, so a coordinator of many shards can
    judge at every snapshot."""

    def __init__(self) -> None:
        self.hist = LogHistogram()
        self._last: dict[Any, dict] = {}

    def __contains__(self, key) -> bool:
        return key in self._last

    def put(self, key, snap: dict) -> None:
        """Shard ``key``'s latest snapshot replaces its previous one."""
        if snap["rel_error"] != self.hist.rel_error:
            raise ValueError("cannot merge histograms of different precision")
        self._add(self._last.pop(key, None), -1)
        self._add(snap, 1)
        self._last[key] = snap
        self._extremes()

    def drop(self, key) -> None:
        """Leave shard ``key`` out (it failed: its recordings are lost whole)."""
        self._add(self._last.pop(key, None), -1)
        self._extremes()

    def _add(self, snap: dict | None, sign: int) -> None:
        if snap is None:
            return
        h = self.hist
        np.add.at(
            h.counts,
            np.asarray(snap["buckets"], np.int64),
            sign * np.asarray(snap["counts"], np.int64),
        )
        h.count += sign * int(snap["count"])
        h.total += sign * float(snap["total_ns"])

    def _extremes(self) -> None:
        lows = [s["min_ns"] for s in self._last.values() if s["min_ns"] is not None]
        highs = [s["max_ns"] for s in self._last.values() if s["max_ns"] is not None]
        self.hist.vmin = min(lows, default=math.inf)
        self.hist.vmax = max(highs, default=-math.inf)


def judge(hist: LogHistogram, goal: PrecisionGoal) -> tuple[bool, dict[str, Interval]]:
    """(every judged percentile within ±goal.rel, the intervals by name)."""
    out = {name: interval(hist, q, goal.confidence) for name, q in goal.percentiles}
    reached = bool(out) and all(
        (w := iv.rel_half_width) is not None and w <= goal.rel for iv in out.values()
    )
    return reached, out
