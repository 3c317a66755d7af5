"""The report's tables: per-service summary with best/median/worst marked, and the
side-by-side significance of subjects (services or targets) run under identical load."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchflow.analysis.compare import (
    Row,
    Sample,
    Settings,
    compare_samples,
    higher_is_better,
    histogram_of,
    judge,
    natural_key,
)
from benchflow.analysis.report.data import TrialSet

COLUMNS = [
    ("metrics.throughput", "throughput"),
    ("metrics.latency_ms.p50", "p50 ms"),
    ("metrics.latency_ms.p99", "p99 ms"),
    ("metrics.ttfb_ms.p50", "TTFB p50 ms"),
    ("metrics.errors.rate", "error rate"),
    ("metrics.resource.cpu_util", "CPU %"),
    ("metrics.resource.ram_mb", "RAM MB"),
    ("metrics.resource.gpu_util", "GPU %"),
]
SIDE_BY_SIDE_METRICS = ("throughput", "latency_ms.p50", "latency_ms.p99")


def _slice_columns(done: pd.DataFrame) -> list[tuple[str, str]]:
    """Each class's and each stage's throughput and p99 (docs/workloads.md), after the
    whole trial's columns: "get p99 ms", "stage 1 throughput"."""
    out = []
    for c in sorted(done.columns):
        parts = c.split(".")
        if len(parts) < 4 or parts[1] not in ("classes", "stages") or not done[c].notna().any():
            continue
        what = ".".join(parts[3:])
        name = parts[2] if parts[1] == "classes" else f"stage {parts[2]}"
        if what == "throughput":
            out.append((c, f"{name} throughput"))
        elif what == "latency_ms.p99":
            out.append((c, f"{name} p99 ms"))
    return out


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    marks: list[list[str]]  # per cell: "" | best | median | worst


def summaries(ts: TrialSet) -> list[Table]:
    """One table per service: a row per subject × configuration (medians over repetitions)."""
    runs = ts.runs
    done = ts.finished
    extra = sorted(
        c for c in done.columns if c.startswith("metrics.quality.") and done[c].notna().any()
    )
    cols = [(c, label) for c, label in COLUMNS if c in done and done[c].notna().any()]
    cols += [(c, c.removeprefix("metrics.quality.")) for c in extra]
    cols += _slice_columns(done)
    out = []
    for service, part in runs.groupby(runs["params.service.name"].fillna("?")):
        ok = done[done["params.service.name"] == service]
        keys = ["subject", "config"]
        g_all = part.groupby(keys)
        med = ok.groupby(keys)[[c for c, _ in cols]].median() if not ok.empty else pd.DataFrame()
        unit = (
            ok["tags.benchflow.throughput_unit"].dropna().iloc[0]
            if "tags.benchflow.throughput_unit" in ok
            and ok["tags.benchflow.throughput_unit"].notna().any()
            else ""
        )
        header = ["subject", "configuration", "runs (valid)"] + [
            f"{label} ({unit})" if c == "metrics.throughput" and unit else label
            for c, label in cols
        ]
        rows, numbers = [], []
        for key, grp in sorted(g_all, key=lambda kv: (kv[0][0], natural_key(kv[0][1]))):
            n_valid = int(
                ((grp["status"] == "FINISHED") & (grp["tags.benchflow.valid"] == "true")).sum()
            )
            vals = [med.at[key, c] if key in med.index else np.nan for c, _ in cols]
            rows.append(
                [str(key[0]), str(key[1]), f"{len(grp)} ({n_valid})", *(_fmt(v) for v in vals)]
            )
            numbers.append(vals)
        marks = [["", "", ""] + [""] * len(cols) for _ in rows]
        for j, (c, _) in enumerate(cols):
            col = np.array([r[j] for r in numbers], dtype=float)
            ok_idx = np.flatnonzero(np.isfinite(col))
            if len(ok_idx) < 3 or np.nanmax(col) == np.nanmin(col):
                continue
            metric = c.removeprefix("metrics.")
            order = ok_idx[np.argsort(col[ok_idx])]
            if higher_is_better(metric):
                order = order[::-1]
            marks[order[0]][3 + j] = "best"
            marks[order[-1]][3 + j] = "worst"
            marks[order[len(order) // 2]][3 + j] = "median"
        out.append(Table(f"service {service}", header, rows, marks))
    return out


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    v = float(v)
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) < 0.01:
        return f"{v:.2e}"
    return f"{v:.4g}"


def side_by_side(ts: TrialSet, settings: Settings | None = None) -> tuple[list[Row], list[str]]:
    """Under each workload run by two or more subjects (services or targets), every
    subject against the one with the highest median throughput there.

    Returns the judged rows (Benjamini–Hochberg across all of them) and notes.
    """
    s = settings or Settings(resamples=1000)
    done = ts.finished
    rng = np.random.default_rng(s.seed)
    rows: list[Row] = []
    notes = []
    groups = [(w, g) for w, g in done.groupby("workload") if g["subject"].nunique() > 1]
    if not groups:
        notes.append("no workload was run by more than one service or target: nothing side by side")
    for _w, g in groups:
        by_subject = dict(list(g.groupby("subject")))
        best = max(by_subject, key=lambda s_: by_subject[s_]["metrics.throughput"].median())
        label = str(by_subject[best]["config"].iloc[0])
        for subject, part in by_subject.items():
            if subject == best:
                continue
            for metric in SIDE_BY_SIDE_METRICS:
                col = f"metrics.{metric}"
                if col not in g:
                    continue
                r = compare_samples(
                    f"{label}: {subject} vs {best}",
                    metric,
                    _sample(ts, by_subject[best], metric),
                    _sample(ts, part, metric),
                    s,
                    rng,
                )
                rows.append(r)
    judge(rows, s)
    if rows and all(r.verdict == "not enough data" for r in rows):
        notes.append(
            f"every comparison has fewer than {s.min_repetitions} repetitions per side: "
            "run the sweep with repetitions=3 or more for significance"
        )
    return rows, notes


def _sample(ts: TrialSet, part: pd.DataFrame, metric: str) -> Sample:
    """The runs' values (and histograms) with their times and repetitions, so that the
    report judges a pair as ``benchflow compare`` does: paired when the sides were
    interleaved, drift-aware when they ran apart (docs/statistics.md)."""
    col = f"metrics.{metric}"
    part = part[part[col].notna()]
    values = part[col].to_numpy(dtype=float)
    times = _times(part)
    hq = histogram_of(metric)
    if hq is None:
        return Sample(values, **times)
    hists = [ts.files[rid].histograms().get(hq[0]) for rid in part["run_id"]]
    if any(h is None for h in hists):
        return Sample(values, **times)
    return Sample(values, hists, hq[1], **times)


def _times(part: pd.DataFrame) -> dict:
    """Start (the trial's own clock, tag benchflow.started_at, else the run's), end and
    repetition of each run; empty when a start is unknown (then: independent)."""
    col = part.get("tags.benchflow.started_at")
    started = None if col is None else pd.to_numeric(col, errors="coerce")
    if started is None or started.isna().any():
        if "start_time" not in part or part["start_time"].isna().any():
            return {}
        started = part["start_time"].map(lambda t: t.timestamp())
    starts = started.to_numpy(dtype=float)
    ends = starts
    if "end_time" in part and not part["end_time"].isna().any():
        ends = np.maximum(part["end_time"].map(lambda t: t.timestamp()).to_numpy(float), starts)
    col = part.get("tags.benchflow.repetition")
    reps = (
        np.full(len(part), -1)
        if col is None
        else pd.to_numeric(col, errors="coerce").fillna(-1).to_numpy(dtype=int)
    )
    return {"starts": starts, "ends": ends, "repetitions": reps}
