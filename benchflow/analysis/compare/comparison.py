"""The comparison of two selections: their runs matched by workload, every matched
configuration × metric compared (:func:`compare_selections`), and the result
(:class:`Comparison`) as a dict, a Markdown table and its caveats, with the
labels of configurations, the default metrics and the formatting of numbers.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchflow.analysis.compare.calibrations import Calibrations
from benchflow.analysis.compare.design import BLOCKED, PAIRED
from benchflow.analysis.compare.selection import CompareError, RunRecord, Selection
from benchflow.analysis.compare.statistics import (
    NO_DATA,
    WORSE,
    Row,
    Sample,
    Settings,
    compare_samples,
    histogram_of,
    judge,
)
from benchflow.results.identity import NON_IDENTITY, workload_hash

DEFAULT_METRICS = ("throughput", "latency_ms.p50", "latency_ms.p99", "errors.rate")


# -- the comparison of two selections ---------------------------------------------
@dataclass
class Comparison:
    baseline: str
    candidate: str
    settings: Settings
    rows: list[Row]
    unmatched: dict[str, int]  # side -> configurations without a partner
    left_out: dict[str, dict[str, int]]
    ignored_keys: list[str]
    # blocked rows: the calibrations used (label -> run id) and why others had none
    calibrations: dict[str, str] = field(default_factory=dict)
    uncalibrated: dict[str, int] = field(default_factory=dict)  # reason -> configurations

    def mde_by_metric(self) -> dict[str, float | None]:
        """Per metric, the largest minimal detectable effect over the configurations."""
        out: dict[str, float | None] = {}
        for r in self.rows:
            if r.mde is not None and math.isfinite(r.mde):
                out[r.metric] = max(out.get(r.metric) or 0.0, r.mde)
            else:
                out.setdefault(r.metric, None)
        return out

    def rows_for(self, metric: str) -> list[Row]:
        return [r for r in self.rows if r.metric == metric]

    def regressions(self, metrics: Iterable[str]) -> list[Row]:
        wanted = set(metrics)
        return [r for r in self.rows if r.metric in wanted and r.verdict == WORSE]

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "candidate": self.candidate,
            "settings": asdict(self.settings),
            "unmatched": self.unmatched,
            "left_out": self.left_out,
            "ignored_keys": self.ignored_keys,
            "calibrations": self.calibrations,
            "uncalibrated": self.uncalibrated,
            "mde": self.mde_by_metric(),
            "caveats": self.caveats(),
            "rows": [asdict(r) for r in self.rows],
        }

    def to_markdown(self) -> str:
        s = self.settings
        lines = [
            f"**baseline** {self.baseline} vs **candidate** {self.candidate} — ratio = "
            "candidate/baseline (paired: geometric mean of the pairs' ratios; otherwise of "
            f"the medians over runs); {s.confidence:.0%} bootstrap CI ({s.resamples} "
            "resamples); p t / p rank: paired t-test and Wilcoxon signed-rank (paired), "
            "Welch and Mann–Whitney (independent), t-test widened by the between-block "
            f"variance (blocked); q: {s.test} adjusted (Benjamini–Hochberg); floor "
            f"{s.floor:.0%}; at least {s.min_repetitions} repetitions per side; MDE: "
            f"minimal detectable effect ({s.power:.0%} power, α={s.alpha:g}) "
            "(docs/statistics.md)",
            "",
            "| config | metric | design | n (b/c) | baseline | candidate | ratio | CI | "
            "p t | p rank | q | MDE | verdict | note |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.config} | {r.metric} {'↑' if r.higher_is_better else '↓'} | "
                f"{fmt_design(r)} | {r.n_baseline}/{r.n_candidate} | {fmt(r.median_baseline)} | "
                f"{fmt(r.median_candidate)} | {fmt(r.ratio)} | {fmt_ci(r)} | {fmt(r.p_welch)} | "
                f"{fmt(r.p_mannwhitney)} | {fmt(r.p_adjusted)} | {fmt_mde(r.mde)} | "
                f"**{r.verdict}** | {r.note} |"
            )
        lines += ["", *self.caveats()]
        return "\n".join(lines) + "\n"

    def caveats(self) -> list[str]:
        out = []
        n = len(self.rows)
        paired = [r for r in self.rows if r.design == PAIRED]
        blocked = [r for r in self.rows if r.design == BLOCKED]
        if paired:
            adjusted = [r.drift for r in paired if r.drift is not None]
            out.append(
                f"- {len(paired)} of {n} rows are **paired**: the sides overlapped in time, so "
                "each baseline run is paired with the candidate run nearest in time and the "
                "pairs' log-ratios are compared (drift common to a pair cancels)"
                + (
                    f"; the machine's linear drift between a pair's two runs (up to "
                    f"{max(adjusted):.2%}) is taken out."
                    if adjusted
                    else "."
                )
            )
        if blocked:
            widened = [r for r in blocked if r.drift]
            out.append(
                f"- {len(blocked)} of {n} rows are **blocked**: the sides ran apart in time, "
                "so their runs are not independent samples of their performance; the interval "
                "and the test include the between-block variance"
                + (
                    f" (up to ±{max(r.drift for r in widened):.1%} SD, estimated from "
                    + " and ".join(sorted({_source_kind(r.drift_source) for r in widened}))
                    + ")"
                    if widened
                    else " (estimated as 0: no trend within the sides)"
                )
                + "."
            )
            for label, run_id in self.calibrations.items():
                out.append(f"- blocked rows use {label} (run {run_id}).")
            gated = [r for r in blocked if r.min_effect is not None]
            if gated:
                why = "; ".join(self.uncalibrated)
                out.append(
                    f"- {len(gated)} blocked rows have no calibration ({why}): the blocks' "
                    f"levels are assumed to differ by at least {self.settings.block_cv:.0%} "
                    "(SD; more when the runs themselves vary more), and no verdict is given "
                    "below the minimal detectable effect that leaves. Interleave the sides "
                    "(one sweep, order=interleaved) or run `benchflow calibrate` on this host."
                )
        constant = [r for r in self.rows if r.constant]
        if constant:
            out.append(
                f"- {len(constant)} of {n} rows do not vary (constant on both sides or in "
                "every pair): shown, not tested, left out of the Benjamini–Hochberg correction."
            )
        few = [r for r in self.rows if r.verdict == NO_DATA and r.min_effect is None]
        if few:
            out.append(
                f"- {len(few)} of {n} rows have too few repetitions for a verdict "
                f"(at least {self.settings.min_repetitions} per side are needed)."
            )
        below = [r for r in self.rows if r.verdict == NO_DATA and r.min_effect is not None]
        if below:
            out.append(
                f"- {len(below)} of {n} rows are not enough data: their change is below the "
                "minimal detectable effect of sides run apart."
            )
        mdes = {m: v for m, v in self.mde_by_metric().items() if v is not None}
        if mdes:
            out.append(
                "- minimal detectable effect at the repetitions used (largest over the "
                "configurations): " + ", ".join(f"{m} {fmt_mde(v)}" for m, v in mdes.items())
            )
        for side, k in self.unmatched.items():
            if k:
                out.append(f"- {k} {side} configuration(s) have no partner on the other side.")
        for side, why in self.left_out.items():
            for w, k in why.items():
                out.append(f"- {side}: {k} run(s) left out: {w}.")
        return out


def _source_kind(source: str) -> str:
    """``within-side trend (+1.2%/min)`` and the like, without the per-metric figure."""
    kinds = [part.strip().split(" (")[0] for part in source.split(";")]
    kinds = [k for k in kinds if k and not k.startswith("no calibration")]
    names = {
        "within-side trend": "the trend within the sides",
        "assumed": "an assumption (--block-cv, or the runs' own spread when larger)",
    }
    return ", ".join(names.get(k, k) for k in kinds) or "nothing"


def fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) < 1e-3:
        return f"{v:.1e}"
    return f"{v:.4g}"


def fmt_ci(r: Row) -> str:
    return "–" if r.ci_low is None else f"[{r.ci_low:.3f}, {r.ci_high:.3f}]"


def fmt_mde(v: float | None) -> str:
    if v is None:
        return "–"
    return "∞" if not math.isfinite(v) else f"±{v:.1%}"


def fmt_design(r: Row) -> str:
    if r.design == PAIRED:
        return f"paired ({r.pairs})"
    return r.design


def _config_labels(params_by_key: dict[str, dict[str, str]], ignore: list[str]) -> dict[str, str]:
    skip = (*NON_IDENTITY, "target", *ignore)
    keep = {
        k: {
            kk: v for kk, v in p.items() if not any(kk == s or kk.startswith(s + ".") for s in skip)
        }
        for k, p in params_by_key.items()
    }
    all_keys = sorted({kk for p in keep.values() for kk in p})
    varying = [kk for kk in all_keys if len({p.get(kk) for p in keep.values()}) > 1]
    out = {}
    for k, p in keep.items():
        label = " ".join(f"{kk}={p.get(kk)}" for kk in varying)
        out[k] = label or p.get("service.name", "all")
    return out


def compare_selections(
    base: Selection,
    cand: Selection,
    metrics: list[str] | None = None,
    settings: Settings | None = None,
    ignore: Iterable[str] = (),
    results_dir: Path | None = None,
    calibrations: Calibrations | None = None,
) -> Comparison:
    """Match the two sides' runs by workload and compare every configuration × metric.

    Params are read by value (``benchflow.config.validate.normalize_params``), so
    runs logged with the text of their config match runs logged now. ``calibrations``
    finds the calibration of the runs' host for configurations whose sides ran apart.
    """
    s = settings or Settings()
    ignored = sorted({k for r in (*base.runs, *cand.runs) for k in r.target_keys} | set(ignore))

    def group(sel: Selection) -> dict[str, list[RunRecord]]:
        out: dict[str, list[RunRecord]] = {}
        for r in sel.runs:
            out.setdefault(workload_hash(by_value(r.params), ignored), []).append(r)
        return out

    gb, gc = group(base), group(cand)
    common = [k for k in gb if k in gc]
    if not common:
        raise CompareError(_no_match(base, cand, gb, gc, ignored))
    labels = _config_labels({k: by_value(gb[k][0].params) for k in common}, ignored)
    wanted = list(metrics) if metrics else default_metrics(base, cand)
    rng = np.random.default_rng(s.seed)
    rows = []
    used: dict[str, str] = {}
    uncalibrated: dict[str, int] = {}
    for k in sorted(common, key=lambda k: natural_key(labels[k])):
        cal, why = (
            calibrations.for_runs([*gb[k], *gc[k]])
            if calibrations is not None
            else (None, "no calibration looked up")
        )
        blocked = False
        for m in wanted:
            sb, sc = _sample(gb[k], m, results_dir), _sample(gc[k], m, results_dir)
            if sb is None and sc is None:
                continue
            prior = cal.prior(m) if cal is not None else None
            row = compare_samples(
                labels[k], m, sb or Sample([]), sc or Sample([]), s, rng, prior=prior
            )
            row.workload = k
            rows.append(row)
            if row.design == BLOCKED:
                blocked = True
                if prior is not None:
                    used[cal.label] = cal.run_id
                elif cal is not None:
                    why = f"{cal.label} does not cover {m}"
                    uncalibrated[why] = uncalibrated.get(why, 0) + 1
        if blocked and cal is None:
            uncalibrated[why] = uncalibrated.get(why, 0) + 1
    judge(rows, s)
    return Comparison(
        base.label,
        cand.label,
        s,
        rows,
        {"baseline": len(set(gb) - set(common)), "candidate": len(set(gc) - set(common))},
        {"baseline": base.left_out, "candidate": cand.left_out},
        ignored,
        used,
        uncalibrated,
    )


@functools.lru_cache(maxsize=4096)
def _by_value(items: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    from benchflow.config.validate import normalize_params

    return tuple(normalize_params(dict(items)).items())


def by_value(params: dict[str, str]) -> dict[str, str]:
    """A run's identity params as a trial logs them now (identity by value: ``5.0`` ->
    ``5``), without the keys that say where or how it ran (:data:`NON_IDENTITY`: they
    take no part in matching, and leaving them out lets runs share the cached form)."""
    kept = tuple(
        sorted(
            (k, v)
            for k, v in params.items()
            if not any(k == p or k.startswith(p + ".") for p in NON_IDENTITY)
        )
    )
    return dict(_by_value(kept))


def natural_key(label: str) -> list:
    """Sort "concurrency=2" before "concurrency=16"."""
    return [
        (0, float(x)) if re.fullmatch(r"-?\d+(\.\d+)?", x) else (1, x)
        for x in re.split(r"[ =]", label)
    ]


def default_metrics(*sides: Selection) -> list[str]:
    """The headline metrics plus every quality figure both sides have, and the
    headline metrics of each class of a mix and each stage both sides have."""
    have = [set().union(*(r.metrics for r in sel.runs)) for sel in sides]
    common = set.intersection(*have) if have else set()
    out = [m for m in DEFAULT_METRICS if m in common]
    out += sorted(m for m in common if m.startswith("quality."))
    slices = sorted(
        {".".join(m.split(".")[:2]) for m in common if m.startswith(("classes.", "stages."))}
    )
    out += [f"{s}.{m}" for s in slices for m in DEFAULT_METRICS if f"{s}.{m}" in common]
    return out


def _sample(runs: list[RunRecord], metric: str, results_dir: Path | None) -> Sample | None:
    have = [r for r in runs if metric in r.metrics]
    if not have:
        return None
    values = [r.metrics[metric] for r in have]
    times: dict = {}
    if all(r.started_at is not None for r in have):
        times = {
            "starts": [r.started_at for r in have],
            "ends": [r.ended_at or r.started_at for r in have],
            "repetitions": [-1 if r.repetition is None else r.repetition for r in have],
        }
    hq = histogram_of(metric)
    if hq is None:
        return Sample(values, **times)
    hists = [r.histograms(results_dir).get(hq[0]) for r in have]
    if any(h is None for h in hists):
        return Sample(values, **times)
    return Sample(values, hists, hq[1], **times)


def _no_match(base: Selection, cand: Selection, gb: dict, gc: dict, ignored: list[str]) -> str:
    pb = by_value(next(iter(gb.values()))[0].params)
    pc = by_value(next(iter(gc.values()))[0].params)
    skip = (*NON_IDENTITY, "target", *ignored)
    diff = sorted(
        k
        for k in set(pb) | set(pc)
        if pb.get(k) != pc.get(k) and not any(k == s or k.startswith(s + ".") for s in skip)
    )
    shown = ", ".join(f"{k} ({pb.get(k, '—')} vs {pc.get(k, '—')})" for k in diff[:6])
    return (
        f"no matching configurations: baseline {base.label} has {len(gb)} configuration(s), "
        f"candidate {cand.label} has {len(gc)}, and none share a workload; e.g. they differ in "
        f"{shown or '(nothing visible)'}; run the same workload on both, or pass --ignore KEY "
        "for keys that are part of what you compare"
    )
