"""The comparison of two selections: their runs matched by workload, every matched
configuration × metric compared (:func:`compare_selections`), and the result
(:class:`Comparison`) as a dict, a Markdown table and its caveats, with the
labels of configurations, the default metrics and the formatting of numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
            "rows": [asdict(r) for r in self.rows],
        }

    def to_markdown(self) -> str:
        s = self.settings
        lines = [
            f"**baseline** {self.baseline} vs **candidate** {self.candidate} — ratio = "
            f"candidate/baseline of the median over runs; {s.confidence:.0%} bootstrap CI "
            f"({s.resamples} resamples); p: Welch / Mann–Whitney, q: {s.test} adjusted "
            f"(Benjamini–Hochberg); floor {s.floor:.0%}; at least {s.min_repetitions} "
            "repetitions per side",
            "",
            "| config | metric | n (b/c) | baseline | candidate | ratio | CI | p Welch | p MWU "
            "| q | verdict | note |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.config} | {r.metric} {'↑' if r.higher_is_better else '↓'} | "
                f"{r.n_baseline}/{r.n_candidate} | {fmt(r.median_baseline)} | "
                f"{fmt(r.median_candidate)} | {fmt(r.ratio)} | {fmt_ci(r)} | {fmt(r.p_welch)} | "
                f"{fmt(r.p_mannwhitney)} | {fmt(r.p_adjusted)} | **{r.verdict}** | {r.note} |"
            )
        lines += ["", *self.caveats()]
        return "\n".join(lines) + "\n"

    def caveats(self) -> list[str]:
        out = []
        few = [r for r in self.rows if r.verdict == NO_DATA]
        if few:
            out.append(
                f"- {len(few)} of {len(self.rows)} rows have too few repetitions for a verdict "
                f"(at least {self.settings.min_repetitions} per side are needed)."
            )
        for side, n in self.unmatched.items():
            if n:
                out.append(f"- {n} {side} configuration(s) have no partner on the other side.")
        for side, why in self.left_out.items():
            for w, n in why.items():
                out.append(f"- {side}: {n} run(s) left out: {w}.")
        return out


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
) -> Comparison:
    """Match the two sides' runs by workload and compare every configuration × metric."""
    s = settings or Settings()
    ignored = sorted({k for r in (*base.runs, *cand.runs) for k in r.target_keys} | set(ignore))

    def group(sel: Selection) -> dict[str, list[RunRecord]]:
        out: dict[str, list[RunRecord]] = {}
        for r in sel.runs:
            out.setdefault(workload_hash(r.params, ignored), []).append(r)
        return out

    gb, gc = group(base), group(cand)
    common = [k for k in gb if k in gc]
    if not common:
        raise CompareError(_no_match(base, cand, gb, gc, ignored))
    labels = _config_labels({k: gb[k][0].params for k in common}, ignored)
    wanted = list(metrics) if metrics else default_metrics(base, cand)
    rng = np.random.default_rng(s.seed)
    rows = []
    for k in sorted(common, key=lambda k: natural_key(labels[k])):
        for m in wanted:
            sb, sc = _sample(gb[k], m, results_dir), _sample(gc[k], m, results_dir)
            if sb is None and sc is None:
                continue
            row = compare_samples(labels[k], m, sb or Sample([]), sc or Sample([]), s, rng)
            row.workload = k
            rows.append(row)
    judge(rows, s)
    return Comparison(
        base.label,
        cand.label,
        s,
        rows,
        {"baseline": len(set(gb) - set(common)), "candidate": len(set(gc) - set(common))},
        {"baseline": base.left_out, "candidate": cand.left_out},
        ignored,
    )


def natural_key(label: str) -> list:
    """Sort "concurrency=2" before "concurrency=16"."""
    return [
        (0, float(x)) if re.fullmatch(r"-?\d+(\.\d+)?", x) else (1, x)
        for x in re.split(r"[ =]", label)
    ]


def default_metrics(*sides: Selection) -> list[str]:
    """The headline metrics plus every quality figure both sides have."""
    have = [set().union(*(r.metrics for r in sel.runs)) for sel in sides]
    common = set.intersection(*have) if have else set()
    out = [m for m in DEFAULT_METRICS if m in common]
    out += sorted(m for m in common if m.startswith("quality."))
    return out


def _sample(runs: list[RunRecord], metric: str, results_dir: Path | None) -> Sample | None:
    have = [r for r in runs if metric in r.metrics]
    if not have:
        return None
    values = [r.metrics[metric] for r in have]
    hq = histogram_of(metric)
    if hq is None:
        return Sample(values)
    hists = [r.histograms(results_dir).get(hq[0]) for r in have]
    if any(h is None for h in hists):
        return Sample(values)
    return Sample(values, hists, hq[1])


def _no_match(base: Selection, cand: Selection, gb: dict, gc: dict, ignored: list[str]) -> str:
    pb = next(iter(gb.values()))[0].params
    pc = next(iter(gc.values()))[0].params
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
