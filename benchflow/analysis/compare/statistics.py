"""The statistics of one comparison row: the repetitions of a configuration on each
side (:class:`Sample`), the row and its numbers (:class:`Row`), the statistics of
its design — paired, blocked or independent (:func:`compare_samples`, with
:mod:`.design`) —, the table-wide Benjamini–Hochberg adjustment and the verdicts
(:func:`judge`), the settings of all of it, and which way a metric is better.
Pure numbers: no MLflow here; the method is described in docs/statistics.md.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from benchflow.analysis.compare.design import (
    BLOCKED,
    INDEPENDENT,
    PAIRED,
    design_of,
    mde,
    pair_by_time,
    relative,
    t_quantile,
    trend_drift,
)
from benchflow.load.histogram import LogHistogram

BETTER, WORSE, SAME, NO_DATA = "better", "worse", "no significant change", "not enough data"
_PCT = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
_HIST_OF = {"latency_ms": "latency", "service_time_ms": "service", "ttfb_ms": "ttfb"}
PAIRED_TREND_MIN = 4  # pairs from which a paired row takes the level's drift out


@dataclass(frozen=True)
class Settings:
    floor: float = 0.02  # relative effect below which a difference is "no change"
    alpha: float = 0.05  # false discovery rate across the table (Benjamini–Hochberg)
    min_repetitions: int = 3  # per side (pairs, when paired), for a verdict
    confidence: float = 0.95
    resamples: int = 2000
    test: str = "welch"  # welch | mannwhitney: the p-value the verdict uses
    seed: int = 0
    # auto: paired / blocked from the runs' times (docs/statistics.md); independent:
    # every run an independent sample of its side, whenever it ran (before issue 19)
    design: str = "auto"
    # Blocked sides with no calibration of their host: the between-block SD (relative)
    # assumed for the minimal detectable effect below which no verdict is given.
    block_cv: float = 0.03
    power: float = 0.8  # of the minimal detectable effect


@dataclass(frozen=True)
class BlockPrior:
    """What a calibration of the host says about one metric between blocks."""

    drift_sd: float  # SD (log scale, ~relative) of a block's level: 2·drift_sd² between two
    source: str  # e.g. "calibration 1a2b3c4d of host node7 (2025-01-01)"


def _slice_of(metric: str) -> tuple[str, str]:
    """("classes.get.", "latency_ms.p99") for a class's or a stage's metric (docs/workloads.md);
    ("", metric) for the whole trial's."""
    parts = metric.split(".", 2)
    if len(parts) == 3 and parts[0] in ("classes", "stages"):
        return f"{parts[0]}.{parts[1]}.", parts[2]
    return "", metric


def higher_is_better(metric: str) -> bool:
    """Direction of a metric: rates and quality up, latencies, errors and resources down
    (a class's or a stage's like the whole's)."""
    _, metric = _slice_of(metric)
    return metric.startswith(("throughput", "rates.", "quality.", "load.achieved_rate"))


def histogram_of(metric: str) -> tuple[str, float] | None:
    """(histogram name, percentile) a percentile metric is computed from, if any; a
    class's or a stage's from its own (``classes.get.latency`` in histograms.json)."""
    prefix, metric = _slice_of(metric)
    parts = metric.split(".")
    if parts[-1] not in _PCT:
        return None
    if len(parts) == 2 and parts[0] in _HIST_OF:
        return prefix + _HIST_OF[parts[0]], _PCT[parts[-1]]
    if len(parts) == 3 and parts[0] == "distributions" and not prefix:
        return f"x.{parts[1]}", _PCT[parts[-1]]
    return None


# -- one side of one comparison: per-run values (+ histograms, times) ---------------
@dataclass
class Sample:
    """The repetitions of one configuration on one side, for one metric; with the
    runs' start and end times (epoch seconds) and repetition numbers when known."""

    values: np.ndarray  # one value per run
    hists: list[LogHistogram] | None = None  # per run, for a percentile metric
    q: float | None = None  # that percentile
    starts: np.ndarray | None = None
    ends: np.ndarray | None = None
    repetitions: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.hists is not None and (
            len(self.hists) != len(self.values) or any(h.count == 0 for h in self.hists)
        ):
            self.hists = None  # resample runs only
        if self.starts is not None:
            self.starts = np.asarray(self.starts, dtype=np.float64)
            self.ends = self.starts if self.ends is None else np.asarray(self.ends, np.float64)
            if len(self.starts) != len(self.values) or not np.isfinite(self.starts).all():
                self.starts = self.ends = None
        if self.repetitions is not None:
            self.repetitions = np.asarray(self.repetitions)
            if len(self.repetitions) != len(self.values):
                self.repetitions = None

    @property
    def times(self) -> np.ndarray | None:
        """Each run's middle (epoch seconds)."""
        return None if self.starts is None else (self.starts + self.ends) / 2

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

    def resample(self, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The values of the runs ``idx`` (any shape) in one bootstrap resample: the
        run's value, or for a percentile a fresh draw resampling its requests."""
        if self.hists is None:
            return self.values[idx]
        vals = np.empty(idx.shape)
        for i in np.unique(idx):
            hit = idx == i
            vals[hit] = self.draw_percentile(int(i), int(hit.sum()), rng)
        return vals

    def bootstrap_medians(self, resamples: int, rng: np.random.Generator) -> np.ndarray:
        """Medians over runs of ``resamples`` two-level bootstrap samples."""
        n = len(self.values)
        idx = rng.integers(0, n, size=(resamples, n))
        return np.median(self.resample(idx, rng), axis=1)


@dataclass
class Row:
    """One configuration × metric of a comparison, with every number behind its verdict.

    ``p_welch`` / ``p_mannwhitney`` hold the t-test and the rank test of the row's
    design: Welch and Mann–Whitney (independent), the paired t-test on the log-ratios
    and the Wilcoxon signed-rank test (paired), a t-test widened by the
    between-block variance and no rank test (blocked).
    """

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
    design: str = INDEPENDENT  # paired | blocked | independent
    pairs: int | None = None  # paired: how many pairs
    mde: float | None = None  # minimal detectable effect (relative) at these repetitions
    drift: float | None = None  # blocked: SD (relative) the blocks add to the difference
    drift_source: str = ""  # blocked: where that came from
    constant: bool = False  # no variation to test: shown, left out of Benjamini–Hochberg
    min_effect: float | None = None  # blocked, not calibrated: no verdict below this change

    @property
    def change(self) -> float | None:
        return None if self.ratio is None else self.ratio - 1.0


def compare_samples(
    config: str,
    metric: str,
    base: Sample,
    cand: Sample,
    s: Settings,
    rng: np.random.Generator,
    prior: BlockPrior | None = None,
) -> Row:
    """Every statistic of one row except the table-wide adjustment and the verdict.

    The design comes from the samples' times (:func:`.design.design_of`) unless
    ``s.design`` is ``independent``; ``prior`` (a calibration of the host) is used
    when the sides were run apart.
    """
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
    row.design = (
        INDEPENDENT
        if s.design == "independent"
        else design_of(base.starts, base.ends, cand.starts, cand.ends)
    )
    with warnings.catch_warnings():
        # nearly identical runs: scipy warns about precision; the p-value is still right
        warnings.simplefilter("ignore", RuntimeWarning)
        if row.design == PAIRED:
            _paired(row, base, cand, s, rng)
        elif row.design == BLOCKED:
            _blocked(row, base, cand, s, rng, prior)
        else:
            _independent(row, base, cand, s, rng)
    if row.constant:
        row.mde = None  # nothing varies: no noise to detect an effect against
    return row


def _constant(x: np.ndarray) -> bool:
    return len(x) >= 2 and float(np.ptp(x)) <= 1e-12 * max(1.0, float(np.max(np.abs(x))))


def _positive(*xs: np.ndarray) -> bool:
    return all(len(x) and bool((x > 0).all()) for x in xs)


def _ci(r: Row, est: np.ndarray, s: Settings) -> None:
    est = est[np.isfinite(est)]
    if est.size:
        tail = (1 - s.confidence) / 2 * 100
        r.ci_low, r.ci_high = (float(x) for x in np.percentile(est, [tail, 100 - tail]))


def _ratio_of_medians_ci(
    r: Row, base: Sample, cand: Sample, s: Settings, rng: np.random.Generator
) -> None:
    if r.median_baseline and r.median_baseline > 0 and min(r.n_baseline, r.n_candidate) >= 2:
        bb = base.bootstrap_medians(s.resamples, rng)
        bc = cand.bootstrap_medians(s.resamples, rng)
        with np.errstate(divide="ignore", invalid="ignore"):
            _ci(r, bc / bb, s)


# -- independent: the runs as independent samples of their side ---------------------
def _independent(r: Row, base: Sample, cand: Sample, s: Settings, rng) -> None:
    from scipy import stats

    b, c = base.values, cand.values
    r.constant = _constant(b) and _constant(c)
    if len(b) >= 2 and len(c) >= 2 and not r.constant:
        r.p_welch = _welch(stats, c, b)
        r.p_mannwhitney = float(stats.mannwhitneyu(c, b, alternative="two-sided").pvalue)
    _ratio_of_medians_ci(r, base, cand, s, rng)
    if len(b) >= 2 and len(c) >= 2:
        r.mde = _mde_two_sample(b, c, s)


def _welch(stats, a: np.ndarray, b: np.ndarray) -> float:
    if np.var(a) == 0 and np.var(b) == 0:
        return 1.0 if float(np.mean(a)) == float(np.mean(b)) else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _dof(vb: float, vc: float, nb: int, nc: int, tau2: float = 0.0, tau_dof: float = math.inf):
    """Welch–Satterthwaite degrees of freedom of ``vb + vc + tau2`` (variances of the
    two means and the between-block term, the latter with ``tau_dof``: infinite when it
    comes from outside these runs — a calibration, an assumption)."""
    total = vb + vc + tau2
    denom = vb**2 / (nb - 1) + vc**2 / (nc - 1) + (tau2**2 / tau_dof if tau2 else 0.0)
    if total <= 0 or denom <= 0:
        return float(min(nb, nc) - 1)
    return total**2 / denom


def _mde_two_sample(
    b: np.ndarray, c: np.ndarray, s: Settings, tau2: float = 0.0, tau_dof: float = math.inf
) -> float | None:
    """Relative MDE of two samples (log scale when positive) with ``tau2`` added."""
    if _positive(b, c):
        yb, yc, scale = np.log(b), np.log(c), 1.0
    elif np.mean(b) > 0:
        yb, yc, scale = b, c, float(np.mean(b))
    else:
        return None
    vb, vc = np.var(yb, ddof=1) / len(yb), np.var(yc, ddof=1) / len(yc)
    se = math.sqrt(vb + vc + tau2)
    effect = mde(se, _dof(vb, vc, len(yb), len(yc), tau2, tau_dof), s.alpha, s.power)
    return relative(effect) if scale == 1.0 else effect / scale


# -- paired: each baseline run with the candidate run nearest in time ----------------
def _paired(r: Row, base: Sample, cand: Sample, s: Settings, rng) -> None:
    from scipy import stats

    pairs = pair_by_time(base.times, cand.times, base.repetitions, cand.repetitions)
    bi = np.array([i for i, _ in pairs])
    cj = np.array([j for _, j in pairs])
    n = r.pairs = len(pairs)
    xb, xc = base.values[bi], cand.values[cj]
    log = _positive(xb, xc)
    yb, yc = (np.log(xb), np.log(xc)) if log else (xb, xc)
    d = yc - yb
    r.constant = _constant(d) or (_constant(base.values) and _constant(cand.values))
    # The members of a pair ran one after the other (in an interleaved sweep the
    # candidate always second): a drift of the machine's level puts slope × gap into
    # every difference. The slope is estimated from the pairs' means over time (each
    # has one run of each side, so the sides' difference does not enter it; with equal
    # noise on both sides the means are independent of the differences) and taken
    # out; its own uncertainty is added to the difference's (Welch–Satterthwaite).
    # From PAIRED_TREND_MIN pairs on: the fit needs two residual degrees of freedom.
    dt = cand.times[cj] - base.times[bi]
    tau = (cand.times[cj] + base.times[bi]) / 2
    slope, trend_var = 0.0, 0.0
    if n >= PAIRED_TREND_MIN and not r.constant and np.ptp(tau) > 0:
        m = (yb + yc) / 2
        slope, icept = (float(x) for x in np.polyfit(tau, m, 1))
        resid = m - (icept + slope * tau)
        sxx = float(np.sum((tau - tau.mean()) ** 2))
        trend_var = float(np.mean(dt)) ** 2 * float(resid @ resid) / (n - 2) / sxx
        d = d - slope * dt
        unit = 1.0 if log else float(np.mean(xb)) or 1.0
        r.drift = abs(slope * float(np.mean(dt))) / unit
        r.drift_source = (
            f"level drift {slope * 60 / unit:+.2%}/min × {float(np.mean(dt)):.1f} s between "
            "a pair's runs, taken out"
        )
    if log:
        r.ratio = float(np.exp(np.mean(d)))  # the geometric mean of the pairs' ratios
    elif np.mean(xb) > 0:
        r.ratio = float((np.mean(xb) + np.mean(d)) / np.mean(xb))
    else:
        r.ratio = None
    if n < 2:
        return
    sd = float(np.std(d, ddof=1))
    v_d = sd**2 / n
    se = math.sqrt(v_d + trend_var)
    dof = float(n - 1)
    if trend_var > 0:
        dof = (v_d + trend_var) ** 2 / (v_d**2 / (n - 1) + trend_var**2 / (n - 2))
    if not r.constant:
        mean = float(np.mean(d))
        r.p_welch = float(2 * stats.t.sf(abs(mean) / se, dof)) if se > 0 else float(mean == 0)
        r.p_mannwhitney = _signed_rank(stats, d)
    if r.ratio is not None:
        # two-level bootstrap of the pairs: resample pairs, and each run's requests
        idx = rng.integers(0, n, size=(s.resamples, n))
        vb, vc = base.resample(bi[idx], rng), cand.resample(cj[idx], rng)
        with np.errstate(divide="ignore", invalid="ignore"):
            if log:
                est = np.exp(np.mean(np.log(vc) - np.log(vb) - slope * dt[idx], axis=1))
            else:
                est = np.mean(vc - slope * dt[idx], axis=1) / np.mean(vb, axis=1)
        _ci(r, est, s)
        if log and se > 0 and r.ci_low is not None:
            # with few pairs the bootstrap is too narrow: never narrower than the t interval
            half = t_quantile(1 - (1 - s.confidence) / 2, dof) * se
            m = float(np.mean(d))
            r.ci_low = min(r.ci_low, math.exp(m - half))
            r.ci_high = max(r.ci_high, math.exp(m + half))
    effect = mde(se, dof, s.alpha, s.power)
    if log:
        r.mde = relative(effect)
    elif np.mean(xb) > 0:
        r.mde = effect / float(np.mean(xb))


def _signed_rank(stats, d: np.ndarray) -> float:
    if not np.any(d):
        return 1.0
    try:
        return float(stats.wilcoxon(d).pvalue)
    except ValueError:
        return 1.0


# -- blocked: each side one block of time ---------------------------------------------
def _blocked(r: Row, base: Sample, cand: Sample, s: Settings, rng, prior) -> None:
    from scipy import stats

    b, c = base.values, cand.values
    r.constant = _constant(b) and _constant(c)
    _ratio_of_medians_ci(r, base, cand, s, rng)
    if len(b) < 2 or len(c) < 2 or r.constant:
        return
    log = _positive(b, c)
    if log:
        yb, yc, unit = np.log(b), np.log(c), 1.0
    else:  # e.g. an error rate with zeros: absolute units, relative to the larger mean
        yb, yc = b, c
        unit = max(float(np.mean(np.abs(b))), float(np.mean(np.abs(c)))) or 1.0
    # The between-block variance of the difference, τ²: the larger of what the trend
    # within the sides implies (estimated from these runs: their degrees of freedom)
    # and what the host's calibration measured (known). Without a calibration nothing
    # measures it: blocks are assumed to differ as much as --block-cv says, or as much
    # as the runs themselves vary when that is more (tail latencies on a busy machine),
    # and no verdict is given below the effect that could then be detected.
    vb, vc = np.var(yb, ddof=1), np.var(yc, ddof=1)
    sources: list[tuple[float, float, str]] = []
    trend = trend_drift(base.times, yb, cand.times, yc)
    if trend is not None:
        sources.append(
            (trend[0], len(b) + len(c) - 3, f"within-side trend ({trend[1] * 60 / unit:+.2%}/min)")
        )
    if prior is not None:
        sources.append((2 * (prior.drift_sd * unit) ** 2, math.inf, prior.source))
    else:
        pooled = math.sqrt(((len(b) - 1) * vb + (len(c) - 1) * vc) / (len(b) + len(c) - 2))
        assumed = max(s.block_cv * unit, pooled)
        sources.append(
            (
                2 * assumed**2,
                math.inf,
                f"assumed ({assumed / unit:.1%} per block: the larger of --block-cv and the "
                "runs' own spread)",
            )
        )
    tau2, tau_dof, source = max(sources, key=lambda x: x[0])
    if prior is None:
        source = f"no calibration of this host; {source}"
    r.drift = math.sqrt(tau2) / unit
    r.drift_source = source
    vb, vc = vb / len(yb), vc / len(yc)
    se = math.sqrt(vb + vc + tau2)
    dof = _dof(vb, vc, len(b), len(c), tau2, tau_dof)
    delta = float(np.mean(yc) - np.mean(yb))
    r.p_welch = float(2 * stats.t.sf(abs(delta) / se, dof)) if se > 0 else float(delta == 0)
    r.p_mannwhitney = None  # a rank test cannot hold the between-block variance
    if r.ci_low is not None and r.ratio is not None and log:
        z = float(stats.norm.ppf(1 - (1 - s.confidence) / 2))
        floor = t_quantile(1 - (1 - s.confidence) / 2, dof) * se
        lr = math.log(r.ratio)
        lo = max(math.hypot(lr - math.log(r.ci_low), z * math.sqrt(tau2)), floor)
        hi = max(math.hypot(math.log(r.ci_high) - lr, z * math.sqrt(tau2)), floor)
        r.ci_low, r.ci_high = math.exp(lr - lo), math.exp(lr + hi)
    r.mde = _mde_two_sample(b, c, s, tau2, tau_dof)
    if prior is None:
        r.min_effect = r.mde


# -- the table: Benjamini–Hochberg and the verdicts -----------------------------------
def _enough(r: Row, s: Settings) -> bool:
    if r.design == PAIRED:
        return (r.pairs or 0) >= s.min_repetitions
    return r.n_baseline >= s.min_repetitions and r.n_candidate >= s.min_repetitions


def judge(rows: list[Row], s: Settings) -> list[Row]:
    """Adjust p-values across the table (Benjamini–Hochberg) and give each row its
    verdict. Constant rows are judged without a test and left out of the adjustment."""
    from scipy import stats

    ready = [r for r in rows if _enough(r, s) and not r.constant and _p(r, s) is not None]
    if ready:
        adj = stats.false_discovery_control([_p(r, s) for r in ready], method="bh")
        for r, q in zip(ready, adj, strict=True):
            r.p_adjusted = float(q)
    ready_ids = {id(r) for r in ready}
    for r in rows:
        if not _enough(r, s):
            r.verdict = NO_DATA
            r.note = r.note or _too_few(r, s)
        elif r.constant:
            _judge_constant(r, s)
        elif id(r) not in ready_ids:
            r.verdict, r.note = NO_DATA, r.note or "no test applies"
        elif r.min_effect is not None and r.ratio is not None and abs(r.ratio - 1) < r.min_effect:
            r.verdict = NO_DATA
            r.note = (
                f"run apart (blocked) on a host without calibration: {r.ratio - 1:+.1%} is "
                f"below the minimal detectable effect ±{r.min_effect:.1%} (the blocks' levels "
                f"may differ by ±{r.drift:.1%}); interleave the sides or run "
                "`benchflow calibrate`"
            )
        else:
            _judge_tested(r, s)
    return rows


def _too_few(r: Row, s: Settings) -> str:
    if r.design == PAIRED:
        return (
            f"{r.pairs} pairs ({r.n_baseline} vs {r.n_candidate} runs): a verdict needs at "
            f"least {s.min_repetitions} repetitions on each side"
        )
    return (
        f"{r.n_baseline} vs {r.n_candidate} runs: a verdict needs at least "
        f"{s.min_repetitions} repetitions on each side"
    )


def _judge_constant(r: Row, s: Settings) -> None:
    """No variation within the sides (or within the pairs): the difference, if any, is
    not noise; no test, no part in the table's adjustment."""
    where = "every pair" if r.design == PAIRED else "each side"
    if r.ratio is None:
        diff = (r.median_candidate or 0.0) - (r.median_baseline or 0.0)
        changed, big, improved = diff != 0, diff != 0, (diff > 0) == r.higher_is_better
    else:
        changed = abs(r.ratio - 1) > 1e-12
        big = abs(r.ratio - 1) >= s.floor
        improved = (r.ratio > 1) == r.higher_is_better
    if not changed:
        r.verdict = SAME
        r.note = (
            f"identical in {where}: nothing to test (left out of the multiple-testing correction)"
        )
    elif big:
        r.verdict = BETTER if improved else WORSE
        r.note = f"the same in {where}: a deterministic difference, not tested"
    else:
        r.verdict = SAME
        r.note = f"the same in {where}: a deterministic difference below the {s.floor:.0%} floor"


def _judge_tested(r: Row, s: Settings) -> None:
    significant = r.p_adjusted < s.alpha
    if r.ratio is None:  # baseline median is 0 (e.g. no errors): no ratio, test alone
        diff = (r.median_candidate or 0.0) - (r.median_baseline or 0.0)
        if significant and diff != 0:
            r.verdict = BETTER if (diff > 0) == r.higher_is_better else WORSE
            r.note = f"q={r.p_adjusted:.3g}; baseline median is 0: no ratio, no floor"
        else:
            r.verdict, r.note = SAME, f"not significant (q={r.p_adjusted:.3g})"
        return
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


def _p(r: Row, s: Settings) -> float | None:
    if r.design == BLOCKED:  # only the widened t-test holds the between-block variance
        return r.p_welch
    return r.p_mannwhitney if s.test == "mannwhitney" else r.p_welch
