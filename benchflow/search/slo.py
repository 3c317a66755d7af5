"""Judging a probe against its SLOs: the decision rule of docs/capacity.md.

Each SLO's figure is read with its confidence interval:

- a percentile (``latency_ms.p99``): the order-statistic (binomial) interval of
  :func:`benchflow.load.precision.interval`, read from the trial's histogram;
- ``errors.rate``: the Clopper–Pearson interval of errors / completed requests;
- anything else (a mean, a max, throughput, recall): the value itself, no interval.

Interval entirely on the good side of the SLO: *pass*; entirely on the bad side:
*fail*; straddling: *undecided* — the probe is repeated (another seed) and the
repeats pooled (histograms merged, counts added) until it is decided or
``search.repeats`` is reached, when the pooled point estimate decides. A trial
that is invalid (rate shortfall, errors, the SUT saturated or stalled) breaks
the SLOs whatever its figures, with the reason kept; a trial with too few
samples for its percentile is only undecided (more samples decide it).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from benchflow.config.search import Slo, parse_slo
from benchflow.load.histogram import LogHistogram

Verdict = Literal["pass", "fail", "undecided"]

# validity reasons that say "not enough samples yet", not "broken": more samples decide
_NOT_BROKEN = ("only ", "precision")
# a trend over the window (load.steady false) is noted, not a break by itself: a queue
# that builds up is the saturation flag's (which breaks), and a latency SLO sees the rest
_TREND = "least-squares fit"


@dataclass
class TrialData:
    """What the judge needs of one finished trial: its metrics.json and histograms."""

    metrics: dict[str, Any]
    hists: dict[str, LogHistogram]


@dataclass
class SloReading:
    """One SLO read on a probe (pooled over its repeats)."""

    slo: str
    low: float | None
    estimate: float | None
    high: float | None
    verdict: Verdict
    margin: float  # log(limit / estimate) for a ceiling (> 0: within); -inf: no figure

    def as_dict(self) -> dict[str, Any]:
        return {
            "slo": self.slo,
            "low": self.low,
            "estimate": self.estimate,
            "high": self.high,
            "verdict": self.verdict,
            "margin": None if not math.isfinite(self.margin) else self.margin,
        }


@dataclass
class Judgement:
    verdict: Verdict
    readings: list[SloReading] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)  # why the trial itself breaks the SLOs
    notes: list[str] = field(default_factory=list)  # validity reasons that do not break them
    generator_limited: bool = False  # the generator, not the SUT, fell short of the rate

    @property
    def binding(self) -> SloReading | None:
        """The SLO closest to breaking (smallest margin): the one that binds."""
        return min(self.readings, key=lambda r: r.margin, default=None)

    @property
    def margin(self) -> float:
        b = self.binding
        return -math.inf if self.broken or b is None else b.margin

    @property
    def reasons(self) -> list[str]:
        out = list(self.broken)
        out += [f"{r.slo} broken ({_fmt(r)})" for r in self.readings if r.verdict == "fail"]
        return out


def _fmt(r: SloReading) -> str:
    if r.estimate is None:
        return "not reported"
    if r.low is None or r.high is None or r.low == r.high:
        return f"{r.estimate:.4g}"
    return f"{r.estimate:.4g} [{r.low:.4g}, {r.high:.4g}]"


# -- pooling -----------------------------------------------------------------------
def pool(trials: list[TrialData]) -> TrialData:
    """Repeats of one probe as one: histograms merged, error counts added, other
    numbers averaged (each repeat's own figures stay in its trial)."""
    if len(trials) == 1:
        return trials[0]
    hists: dict[str, LogHistogram] = {}
    for t in trials:
        for name, h in t.hists.items():
            if name in hists:
                hists[name].merge(h)
            else:
                hists[name] = copy.deepcopy(h)
    metrics = copy.deepcopy(trials[0].metrics)
    _average_into(metrics, [t.metrics for t in trials])
    errs = [t.metrics.get("errors") or {} for t in trials]
    loads = [t.metrics.get("load") or {} for t in trials]
    count = sum(int(e.get("count") or 0) for e in errs)
    completed = sum(int(ld.get("completed") or 0) for ld in loads)
    metrics.setdefault("errors", {})["count"] = count
    metrics["errors"]["rate"] = count / completed if completed else 0.0
    metrics.setdefault("load", {})["completed"] = completed
    # a percentile of the pool is the pool's, not an average of percentiles
    for block, name in (("latency_ms", "latency"), ("service_time_ms", "service")):
        h = hists.get(name)
        if h is not None and isinstance(metrics.get(block), dict):
            metrics[block].update(_summary(h))
    for name, h in hists.items():
        if name.startswith("x.") and isinstance(metrics.get("distributions"), dict):
            metrics["distributions"].setdefault(name[2:], {}).update(_summary(h))
    if "ttfb" in hists and isinstance(metrics.get("ttfb_ms"), dict):
        metrics["ttfb_ms"].update(_summary(hists["ttfb"]))
    return TrialData(metrics, hists)


def _summary(h: LogHistogram) -> dict[str, Any]:
    from benchflow.results.schema import PERCENTILES

    return h.summary_ms(PERCENTILES)


def _average_into(out: dict, items: list[dict]) -> None:
    for k, v in out.items():
        vals = [i.get(k) for i in items]
        if isinstance(v, dict):
            _average_into(v, [x if isinstance(x, dict) else {} for x in vals])
        elif isinstance(v, int | float) and not isinstance(v, bool):
            nums = [x for x in vals if isinstance(x, int | float) and not isinstance(x, bool)]
            if nums:
                out[k] = sum(nums) / len(nums)


# -- reading -----------------------------------------------------------------------
def _lookup(metrics: dict, path: tuple[str, ...]) -> float | None:
    node: Any = metrics
    for p in path:
        if not isinstance(node, dict) or p not in node:
            return None
        node = node[p]
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def read(slo: Slo, data: TrialData, confidence: float) -> tuple[float | None, ...]:
    """(low, estimate, high) of the SLO's figure on a trial (or pooled repeats)."""
    if slo.q is not None and slo.hist is not None and data.hists.get(slo.hist) is not None:
        from benchflow.load.precision import interval

        h = data.hists[slo.hist]
        if h.count == 0:
            return None, None, None
        iv = interval(h, slo.q * 100, confidence)
        ms = [None if v is None else v / 1e6 for v in (iv.low, iv.estimate, iv.high)]
        return ms[0], ms[1], ms[2]
    if slo.path == ("errors", "rate"):
        errs, load = data.metrics.get("errors") or {}, data.metrics.get("load") or {}
        n, k = int(load.get("completed") or 0), int(errs.get("count") or 0)
        if n == 0:
            return None, None, None
        lo, hi = clopper_pearson(k, n, confidence)
        return lo, k / n, hi
    v = _lookup(data.metrics, slo.path)
    return v, v, v


def clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """The exact (Clopper–Pearson) interval of a proportion k/n."""
    from scipy.stats import beta

    a = 1 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def margin(slo: Slo, estimate: float | None) -> float:
    """How far inside the SLO a figure is, as a log ratio (> 0 within, < 0 beyond)."""
    if estimate is None:
        return -math.inf
    good, limit = (estimate, slo.value) if not slo.upper else (slo.value, estimate)
    if limit <= 0 or good <= 0:  # a zero error rate, a zero limit: far inside or far out
        if slo.holds(estimate):
            return math.inf
        return -math.inf
    return math.log(good / limit)


def replicate_interval(
    estimates: list[float], pooled: float, confidence: float
) -> tuple[float, float] | None:
    """The interval the repeats' own estimates give the pooled one: Student's t on their
    logarithms (they are independent: one seed each). None with fewer than two."""
    xs = [math.log(e) for e in estimates if e is not None and e > 0]
    if len(xs) < 2 or pooled is None or pooled <= 0:
        return None
    from scipy.stats import t

    k = len(xs)
    mean = sum(xs) / k
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (k - 1))
    half = float(t.ppf((1 + confidence) / 2, k - 1)) * sd / math.sqrt(k)
    return pooled * math.exp(-half), pooled * math.exp(half)


def reading(
    slo: Slo,
    data: TrialData,
    confidence: float,
    final: bool,
    repeats: list[TrialData] = (),
) -> SloReading:
    lo, est, hi = read(slo, data, confidence)
    if len(repeats) > 1 and est is not None:  # widened to what the repeats disagree by
        rep = replicate_interval([read(slo, r, confidence)[1] for r in repeats], est, confidence)
        if rep is not None:
            lo = rep[0] if lo is None else min(lo, rep[0])
            hi = rep[1] if hi is None else max(hi, rep[1])
    if est is None:
        verdict: Verdict = "fail" if final else "undecided"
        return SloReading(slo.text, lo, est, hi, verdict, -math.inf)
    bad_end, good_end = (hi, lo) if slo.upper else (lo, hi)
    if bad_end is not None and slo.holds(bad_end):
        verdict = "pass"  # even the worst end of the interval holds
    elif good_end is not None and not slo.holds(good_end):
        verdict = "fail"  # even the best end breaks it
    elif final:
        verdict = "pass" if slo.holds(est) else "fail"
    else:
        verdict = "undecided"
    return SloReading(slo.text, lo, est, hi, verdict, margin(slo, est))


# -- the trial itself ----------------------------------------------------------------
def broken_reasons(metrics: dict, max_rate_shortfall: float) -> tuple[list[str], bool]:
    """Why a trial breaks the SLOs whatever its figures, and whether the shortfall of
    the rate was the generator's own (the SUT kept up: the answer is then a lower bound)."""
    reasons = [
        r
        for r in (metrics.get("validity") or {}).get("reasons", [])
        if not str(r).startswith(_NOT_BROKEN) and _TREND not in str(r)
    ]
    load = metrics.get("load") or {}
    generator = False
    target = load.get("target_rate")
    sent = load.get("offered_rate")
    sent = load.get("achieved_rate") if sent is None else sent
    if target and sent is not None and 1 - sent / target > max_rate_shortfall:
        # Short of the rate: the SUT's fault when it held the requests in flight up to the
        # cap (Little's law: completed/s x service time ~ concurrency), or saturated; the
        # generator's own when it sent too few while the SUT kept up (then the answer is
        # a lower bound)
        inflight = in_flight(metrics)
        cap = load.get("concurrency") or 0
        generator = (
            load.get("saturated") is not True and inflight is not None and inflight < cap / 2
        )
        if not generator:
            why = "the SUT did not keep up: requests in flight reached the cap"
            if inflight is not None:
                why += f" (~{inflight:.0f} of concurrency={cap})"
            reasons.append(why)
    if load.get("saturated") and not any("saturat" in str(r) for r in reasons):
        reasons.append("the SUT saturated (completed less than offered)")
    return reasons, generator


def in_flight(metrics: dict) -> float | None:
    """Mean requests in flight over the window (Little's law: completed rate x mean
    service time from the actual start); None when the result lacks either."""
    load = metrics.get("load") or {}
    rate = load.get("completed_rate")
    if rate is None:
        rate = (metrics.get("rates") or {}).get("requests_per_s")
    mean = (metrics.get("service_time_ms") or {}).get("mean")
    if rate is None or mean is None:
        return None
    return rate * mean / 1000


def judge(
    slos: list[Slo],
    trials: list[TrialData],
    confidence: float,
    final: bool,
    max_rate_shortfall: float = 0.05,
    near: float = 0.0,
    min_trials: int = 1,
) -> Judgement:
    """The verdict on one probe (its repeats pooled); ``final``: no more repeats, so an
    undecided SLO is decided by the pooled point estimate. A probe passing with an
    estimate within ``near`` of an SLO's limit stays undecided until ``min_trials``
    trials: near the limit, samples of a queue are not independent enough for one
    trial's order-statistic interval, and the repeats' spread says how far to trust it."""
    broken: list[str] = []
    notes: list[str] = []
    generator = False
    for t in trials:
        why, gen = broken_reasons(t.metrics, max_rate_shortfall)
        broken += [w for w in why if w not in broken]
        generator = generator or gen
        for r in (t.metrics.get("validity") or {}).get("reasons", []):
            if r not in why and r not in notes:
                notes.append(str(r))
    data = pool(trials)
    readings = [reading(s, data, confidence, final, trials) for s in slos]
    if broken:
        return Judgement("fail", readings, broken, notes, generator)
    verdicts = {r.verdict for r in readings}
    if "fail" in verdicts:
        v: Verdict = "fail"
    elif "undecided" in verdicts:
        v = "undecided"
    elif not final and len(trials) < min_trials and near_slo(readings, slos, near):
        v = "undecided"  # close to an SLO: one trial's interval is not trusted alone
    else:
        v = "pass"
    return Judgement(v, readings, [], notes, False)


def near_slo(readings: list[SloReading], slos: list[Slo], near: float) -> bool:
    """Whether an estimate lies within ``near`` (relative) of its SLO's limit."""
    for r, s in zip(readings, slos, strict=True):
        if r.estimate is not None and s.value and abs(r.estimate / s.value - 1) < near:
            return True
    return False


def parse_all(texts: list[str]) -> list[Slo]:
    return [parse_slo(t) for t in texts]
