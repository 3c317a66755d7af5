"""The statistics of one comparison row: the repetitions of a configuration on each
side (:class:`Sample`), the row and its numbers (:class:`Row`), the two-level
bootstrap, Welch and Mann–Whitney (:func:`compare_samples`), the table-wide
Benjamini–Hochberg adjustment and the verdicts (:func:`judge`), the settings of
all of it, and which way a metric is better. Pure numbers: no MLflow here; the
method is described in :mod:`benchflow.analysis.compare`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from benchflow.load.histogram import LogHistogram

BETTER, WORSE, SAME, NO_DATA = "better", "worse", "no significant change", "not enough data"
_PCT = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
_HIST_OF = {"latency_ms": "latency", "service_time_ms": "service", "ttfb_ms": "ttfb"}


@dataclass(frozen=True)
class Settings:
    floor: float = 0.02  # relative effect below which a difference is "no change"
    alpha: float = 0.05  # false discovery rate across the table (Benjamini–Hochberg)
    min_repetitions: int = 3  # per side, for a verdict
    confidence: float = 0.95
    resamples: int = 2000
    test: str = "welch"  # welch | mannwhitney: the p-value the verdict uses
    seed: int = 0


def higher_is_better(metric: str) -> bool:
    """Direction of a metric: rates and quality up, latencies, errors and resources down."""
    return metric.startswith(("throughput", "rates.", "quality.", "load.achieved_rate"))


def histogram_of(metric: str) -> tuple[str, float] | None:
    """(histogram name, percentile) a percentile metric is computed from, if any."""
    parts = metric.split(".")
    if parts[-1] not in _PCT:
        return None
    if len(parts) == 2 and parts[0] in _HIST_OF:
        return _HIST_OF[parts[0]], _PCT[parts[-1]]
    if len(parts) == 3 and parts[0] == "distributions":
        return f"x.{parts[1]}", _PCT[parts[-1]]
    return None


# -- one side of one comparison: per-run values (+ histograms) ---------------------
@dataclass
class Sample:
    """The repetitions of one configuration on one side, for one metric."""

    values: np.ndarray  # one value per run
    hists: list[LogHistogram] | None = None  # per run, for a percentile metric
    q: float | None = None  # that percentile

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.hists is not None and (
            len(self.hists) != len(self.values) or any(h.count == 0 for h in self.hists)
        ):
            self.hists = None  # resample runs only

    @cached_property
    def _inverse_cdfs(self) -> list[tuple[np.ndarray, np.ndarray, int]]:
        out = []
        for h in self.hists or []:
            nz = np.flatnonzero(h.counts)
            cum = np.cumsum(h.counts[nz]) / h.count
            edges = np.clip(np.asarray(h.upper_edge(nz)), h.vmin, h.vmax) / 1e6  # ms
            out.append((cum, edges, h.count))
        return out

    def draw_percentile(self, i: int, size: int, rng: np.random.Generator) -> np.ndarray:
        """``size`` bootstrap draws of run i's percentile, resampling its requests."""
        cum, edges, n = self._inverse_cdfs[i]
        k = max(1, math.ceil(self.q / 100.0 * n))
        u = rng.beta(k, n - k + 1, size=size)
        j = np.minimum(np.searchsorted(cum, u, side="left"), len(edges) - 1)
        return edges[j]

    def bootstrap_medians(self, resamples: int, rng: np.random.Generator) -> np.ndarray:
        """Medians over runs of ``resamples`` two-level bootstrap samples."""
        n = len(self.values)
        idx = rng.integers(0, n, size=(resamples, n))
        if self.hists is None:
            return np.median(self.values[idx], axis=1)
        vals = np.empty(idx.shape)
        for i in range(n):
            hit = idx == i
            k = int(hit.sum())
            if k:
                vals[hit] = self.draw_percentile(i, k, rng)
        return np.median(vals, axis=1)


@dataclass
class Row:
    """One configuration × metric of a comparison, with every number behind its verdict."""

    config: str
    metric: str
    higher_is_better: bool
    n_baseline: int
    n_candidate: int
    median_baseline: float | None
    median_candidate: float | None
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    p_welch: float | None
    p_mannwhitney: float | None
    p_adjusted: float | None = None
    verdict: str = NO_DATA
    note: str = ""
    resampling: str = "runs"
    workload: str = ""

    @property
    def change(self) -> float | None:
        return None if self.ratio is None else self.ratio - 1.0


def compare_samples(
    config: str, metric: str, base: Sample, cand: Sample, s: Settings, rng: np.random.Generator
) -> Row:
    """Every statistic of one row except the table-wide adjustment and the verdict."""
    from scipy import stats

    up = higher_is_better(metric)
    nb, nc = len(base.values), len(cand.values)
    row = Row(config, metric, up, nb, nc, None, None, None, None, None, None, None)
    if nb == 0 or nc == 0:
        row.note = "no runs on one side"
        return row
    mb, mc = float(np.median(base.values)), float(np.median(cand.values))
    row.median_baseline, row.median_candidate = mb, mc
    if mb > 0:
        row.ratio = mc / mb
    both_hist = base.hists is not None and cand.hists is not None
    row.resampling = "runs + requests" if both_hist else "runs"
    if nb >= 2 and nc >= 2:
        with warnings.catch_warnings():
            # nearly identical runs: scipy warns about precision; the p-value is still right
            warnings.simplefilter("ignore", RuntimeWarning)
            row.p_welch = _welch(stats, cand.values, base.values)
            row.p_mannwhitney = float(
                stats.mannwhitneyu(cand.values, base.values, alternative="two-sided").pvalue
            )
    if mb > 0 and min(nb, nc) >= 2:
        bb = base.bootstrap_medians(s.resamples, rng)
        bc = cand.bootstrap_medians(s.resamples, rng)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = bc / bb
        ratios = ratios[np.isfinite(ratios)]
        if ratios.size:
            tail = (1 - s.confidence) / 2 * 100
            row.ci_low, row.ci_high = (float(x) for x in np.percentile(ratios, [tail, 100 - tail]))
    return row


def _welch(stats, a: np.ndarray, b: np.ndarray) -> float:
    if np.var(a) == 0 and np.var(b) == 0:
        return 1.0 if float(np.mean(a)) == float(np.mean(b)) else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def judge(rows: list[Row], s: Settings) -> list[Row]:
    """Adjust p-values across the table (Benjamini–Hochberg) and give each row its verdict."""
    from scipy import stats

    ready = [
        r
        for r in rows
        if r.n_baseline >= s.min_repetitions
        and r.n_candidate >= s.min_repetitions
        and _p(r, s) is not None
    ]
    if ready:
        adj = stats.false_discovery_control([_p(r, s) for r in ready], method="bh")
        for r, q in zip(ready, adj, strict=True):
            r.p_adjusted = float(q)
    ready_ids = {id(r) for r in ready}
    for r in rows:
        if id(r) not in ready_ids:
            r.verdict = NO_DATA
            r.note = r.note or (
                f"{r.n_baseline} vs {r.n_candidate} runs: a verdict needs at least "
                f"{s.min_repetitions} repetitions on each side"
            )
            continue
        significant = r.p_adjusted < s.alpha
        if r.ratio is None:  # baseline median is 0 (e.g. no errors): no ratio, test alone
            diff = (r.median_candidate or 0.0) - (r.median_baseline or 0.0)
            if significant and diff != 0:
                r.verdict = BETTER if (diff > 0) == r.higher_is_better else WORSE
                r.note = f"q={r.p_adjusted:.3g}; baseline median is 0: no ratio, no floor"
            else:
                r.verdict, r.note = SAME, f"not significant (q={r.p_adjusted:.3g})"
            continue
        improved = (r.ratio > 1) == r.higher_is_better
        ci_clear = r.ci_low is not None and (r.ci_low > 1 or r.ci_high < 1)
        big = abs(r.ratio - 1) >= s.floor
        if significant and ci_clear and big:
            r.verdict = BETTER if improved else WORSE
            r.note = f"q={r.p_adjusted:.3g}"
        elif significant and ci_clear:
            r.verdict = SAME
            r.note = (
                f"significant (q={r.p_adjusted:.3g}) but {r.ratio - 1:+.1%} is below "
                f"the {s.floor:.0%} floor"
            )
        elif significant:
            r.verdict, r.note = (
                SAME,
                f"q={r.p_adjusted:.3g} but the {s.confidence:.0%} CI includes 1",
            )
        else:
            r.verdict, r.note = SAME, f"not significant (q={r.p_adjusted:.3g})"
    return rows


def _p(r: Row, s: Settings) -> float | None:
    return r.p_mannwhitney if s.test == "mannwhitney" else r.p_welch
