"""The report's plots (seaborn on matplotlib's Agg backend). Each function returns a
:class:`Figure` or ``None`` when the trials have nothing for it (no recall, no
time-to-first-token, nothing that scales)."""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchflow.analysis.report.data import TrialSet

SCALING_KEYS = ("concurrency", "batch", "clients", "rate", "service.resources.gpus", "nodes")
MAX_CDF_LINES = 12
MAX_SERIES_TRIALS = 12


@dataclass
class Figure:
    name: str  # file stem
    title: str
    caption: str
    png: bytes


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def _save(fig, name: str, title: str, caption: str) -> Figure:
    plt, _ = _plt()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return Figure(name, title, caption, buf.getvalue())


def _medians(ts: TrialSet, cols: list[str]) -> pd.DataFrame:
    df = ts.finished
    cols = [c for c in cols if c in df]
    keys = ["subject", "config", "config_key"]
    extra = [f"params.{k}" for k in ts.params if f"params.{k}" in df]
    g = df.groupby(keys, dropna=False)
    out = g[cols].median()
    out["n"] = g.size()
    for c in extra:
        out[c] = g[c].first()
    return out.reset_index()


def _series(ts: TrialSet, df: pd.DataFrame, along: str) -> pd.Series:
    """A label per row naming its curve: the subject and every other varying key."""
    others = [k for k in ts.params if k != along and f"params.{k}" in df]
    label = df["subject"].astype(str)
    for k in others:
        # only keys that vary within a subject: the rest the subject's name already says
        if df.groupby("subject")[f"params.{k}"].nunique().max() > 1:
            label = label + f" {k.rsplit('.', 1)[-1]}=" + df[f"params.{k}"].astype(str)
    return label


def _load_key(ts: TrialSet) -> str | None:
    for key in ("rate", "concurrency", "batch", "clients"):
        if key in ts.params:
            return key
    return None


def latency_throughput(ts: TrialSet) -> Figure | None:
    m = _medians(ts, ["metrics.throughput", "metrics.latency_ms.p50", "metrics.latency_ms.p99"])
    if m.empty or "metrics.latency_ms.p99" not in m:
        return None
    along = _load_key(ts)
    m["curve"] = _series(ts, m, along) if along else m["subject"].astype(str)
    order = (
        pd.to_numeric(m[f"params.{along}"], errors="coerce") if along else m["metrics.throughput"]
    )
    m = m.assign(_order=order).sort_values("_order")
    plt, _ = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharex=True)
    cols = (("metrics.latency_ms.p50", "p50"), ("metrics.latency_ms.p99", "p99"))
    for ax, (col, q) in zip(axes, cols, strict=True):
        if col not in m:
            continue
        for curve, part in m.groupby("curve", sort=True):
            ax.plot(part["metrics.throughput"], part[col], marker="o", label=str(curve)[:50])
        ax.set_xlabel("throughput (median over repetitions)")
        ax.set_ylabel(f"latency {q} (ms)")
        ax.set_title(f"latency {q} vs throughput")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    how = f"in order of increasing {along}" if along else "in throughput order"
    return _save(
        fig,
        "latency_throughput",
        "Latency–throughput",
        f"One point per configuration (median over repetitions); a curve joins them {how}.",
    )


def scaling(ts: TrialSet) -> Figure | None:
    keys = [k for k in SCALING_KEYS if k in ts.params]
    if not keys:
        return None
    df = ts.finished
    plt, _ = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(5.6 * len(keys), 5.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        d = df.assign(
            **{"_x": pd.to_numeric(df[f"params.{key}"], errors="coerce")},
            curve=_series(ts, df, key).str.slice(0, 50),
        ).dropna(subset=["_x"])
        # median with the repetitions' range, computed once (seaborn's estimator is slow)
        agg = d.groupby(["curve", "_x"])["metrics.throughput"].agg(["median", "min", "max"])
        for curve, part in agg.groupby(level=0, sort=True):
            x = part.index.get_level_values(1).to_numpy()
            (line,) = ax.plot(x, part["median"], marker="o", label=curve)
            ax.fill_between(x, part["min"], part["max"], alpha=0.15, color=line.get_color())
        ax.set_xlabel(key)
        ax.set_ylabel("throughput")
        ax.set_title(f"scaling over {key}")
        if d["_x"].max() / max(d["_x"].min(), 1e-9) >= 8:
            ax.set_xscale("log", base=2)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(0.0, -0.22), ncol=2)
    return _save(
        fig,
        "scaling",
        "Scaling",
        "Median throughput over repetitions, one curve per subject and setting of the other "
        "keys; the band spans the repetitions' minimum to maximum.",
    )


def _merged(ts: TrialSet, name: str) -> dict[tuple[str, str], object]:
    """One merged histogram per (subject, config)."""
    out = {}
    for (subject, config), part in ts.finished.groupby(["subject", "config"]):
        merged = None
        for rid in part["run_id"]:
            h = ts.files[rid].histograms().get(name)
            if h is None or h.count == 0:
                continue
            # the first is copied: merging adds into it, and parsed histograms are cached
            merged = copy.deepcopy(h) if merged is None else merged.merge(h)
        if merged is not None:
            out[(str(subject), str(config))] = merged
    return out


def _cdf(h, points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """The CDF at most ``points`` steps (a fine quantile grid plus the far tail): a
    histogram has thousands of buckets, which a reader cannot see and a renderer pays for."""
    nz = np.flatnonzero(h.counts)
    x = np.clip(np.asarray(h.upper_edge(nz)), h.vmin, h.vmax) / 1e6
    y = np.cumsum(h.counts[nz]) / h.count
    if len(x) > points:
        grid = np.unique(np.r_[np.linspace(0, 0.99, points - 50), 1 - np.logspace(-2, -6, 50)])
        idx = np.unique(np.minimum(np.searchsorted(y, grid), len(y) - 1))
        x, y = x[idx], y[idx]
    return x, y


def _log_ms_axis(ax) -> None:
    """A log x axis labelled 0.5, 1, 2, 5, 10 ... (plain numbers, no overlapping minors)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _cdf_figure(
    ts: TrialSet, names: list[tuple[str, str]], fname: str, title: str, caption: str
) -> Figure | None:
    panels = [(n, label, _merged(ts, n)) for n, label in names]
    panels = [p for p in panels if p[2]]
    if not panels:
        return None
    plt, _ = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.8 * len(panels), 4.2), squeeze=False)
    for ax, (_, label, hists) in zip(axes[0], panels, strict=True):
        for (subject, config), h in list(hists.items())[:MAX_CDF_LINES]:
            x, y = _cdf(h)
            ax.step(x, y, where="post", label=f"{subject} {config}"[:60])
        _log_ms_axis(ax)
        ax.set_xlabel(f"{label} (ms, log)")
        ax.set_ylabel("fraction of requests ≤ x")
        ax.set_title(label)
    axes[0][0].legend(fontsize=7, loc="lower right")
    more = sum(len(h) for *_, h in panels) > MAX_CDF_LINES * len(panels)
    return _save(
        fig, fname, title, caption + (f" (first {MAX_CDF_LINES} configurations)" if more else "")
    )


def latency_cdf(ts: TrialSet) -> Figure | None:
    return _cdf_figure(
        ts,
        [("latency", "latency"), ("service", "service time")],
        "latency_cdf",
        "Latency CDFs",
        "All requests of a configuration's repetitions; latency from the intended start.",
    )


def llm_distributions(ts: TrialSet) -> Figure | None:
    names = [("ttfb", "time to first token/byte")]
    seen = set()
    for rid in ts.finished["run_id"][:50]:
        seen |= {k for k in ts.files[rid].histograms() if k.startswith("x.")}
    names += [(k, k[2:].upper() if k[2:] in ("itl", "tpot") else k[2:]) for k in sorted(seen)]
    return _cdf_figure(
        ts,
        names,
        "ttft_itl",
        "TTFT / inter-token latency",
        "First-token (first-byte) times and per-request distributions such as ITL.",
    )


def time_series(ts: TrialSet) -> Figure | None:
    frames = []
    for _, row in ts.finished.head(MAX_SERIES_TRIALS).iterrows():
        d = ts.files[row["run_id"]].csv("timeseries.csv")
        if d.empty:
            continue
        d["trial"] = (
            f"{row['subject']} {row['config']} #{row.get('tags.benchflow.repetition', '')}"[:60]
        )
        frames.append(d)
    if not frames:
        return None
    d = pd.concat(frames, ignore_index=True)
    plt, _ = _plt()
    cols = [c for c in ("throughput", "latency_ms.p99") if c in d]
    fig, axes = plt.subplots(1, len(cols), figsize=(5.8 * len(cols), 4), squeeze=False)
    marker = "o" if d["second"].nunique() < 6 else None
    for ax, col in zip(axes[0], cols, strict=True):
        for trial, part in d.groupby("trial", sort=False):
            ax.plot(part["second"], part[col], marker=marker, linewidth=1, label=trial)
        ax.set_xlabel("second of the measured phase")
        ax.set_title(f"{col} per second")
    axes[0][0].legend(fontsize=6, loc="upper left", bbox_to_anchor=(0.0, -0.2), ncol=3)
    n = ts.finished.shape[0]
    return _save(
        fig,
        "timeseries",
        "Per-second series",
        "The measured phase of each trial, second by second"
        + (f" (first {MAX_SERIES_TRIALS} of {n} trials)" if n > MAX_SERIES_TRIALS else "")
        + ".",
    )


def recall_qps(ts: TrialSet) -> Figure | None:
    df = ts.finished
    recall = sorted(c for c in df.columns if c.startswith("metrics.quality.recall"))
    if not recall or df[recall[0]].isna().all():
        return None
    col = recall[0]
    m = _medians(ts, ["metrics.throughput", col]).dropna(subset=[col])
    m["curve"] = _series(ts, m, "").str.slice(0, 50)
    plt, sns = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    sns.scatterplot(data=m, x=col, y="metrics.throughput", hue="curve", s=70, ax=ax)
    styles = ("-", "--", "-.", ":")
    for i, (subject, part) in enumerate(m.groupby("subject", sort=True)):
        front = pareto_front(part[col].to_numpy(), part["metrics.throughput"].to_numpy())
        if len(front) > 1:
            fx, fy = zip(*front, strict=True)
            ax.plot(
                fx,
                fy,
                styles[i % len(styles)],
                color="0.25",
                lw=1,
                label=f"{str(subject)[:30]}: Pareto front",
            )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xlabel(col.removeprefix("metrics.quality."))
    ax.set_ylabel("queries/s")
    ax.set_title("recall vs QPS")
    return _save(
        fig,
        "recall_qps",
        "Recall–QPS",
        "One point per configuration (median over repetitions); up and right is better. "
        "A line joins each subject's Pareto front: the configurations no other of the same "
        "subject beats on both recall and QPS (ann-benchmarks' view).",
    )


def pareto_front(recall: np.ndarray, qps: np.ndarray) -> list[tuple[float, float]]:
    """The points no other beats on both recall and QPS, by increasing recall."""
    pts = sorted(
        ((float(r), float(q)) for r, q in zip(recall, qps, strict=True) if r == r and q == q),
        key=lambda p: (-p[0], -p[1]),
    )
    front, best = [], -np.inf
    for r, q in pts:  # from the highest recall down: keep a point only if it is faster
        if q > best:
            front.append((r, q))
            best = q
    return front[::-1]


# -- capacity searches (benchflow.search) ----------------------------------------------
MAX_SEARCH_PANELS = 6


def _search_curves(ts: TrialSet) -> list[dict]:
    """The curves of the searches whose probes are among these trials: each search's
    parent run holds its ``search/curve.json``; the latest search per subject, kind
    and SLOs is kept."""
    import json
    import os

    import mlflow

    from benchflow.analysis.report.data import _local_artifacts
    from benchflow.search.curve import ARTIFACT_DIR, CURVE_JSON

    ids = set()
    if "tags.mlflow.parentRunId" in ts.runs:
        ids |= {p for p in ts.runs["tags.mlflow.parentRunId"].dropna().unique() if p}
    if ts.parent_run_id:
        ids.add(ts.parent_run_id)
    client = mlflow.MlflowClient()
    found = {}
    for pid in sorted(ids):
        try:
            run = client.get_run(pid)
        except Exception:
            continue
        if not run.data.tags.get("benchflow.search"):
            continue
        name = f"{ARTIFACT_DIR}/{CURVE_JSON}"
        try:
            local = _local_artifacts(run.info.artifact_uri)
            if local is not None and (local / name).is_file():
                path = local / name
            else:
                os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
                path = mlflow.artifacts.download_artifacts(run_id=pid, artifact_path=name)
            with open(path) as f:
                curve = json.load(f)
        except Exception:
            continue
        key = (curve.get("subject"), curve.get("kind"), tuple(curve.get("slo") or ()))
        if key not in found or run.info.start_time > found[key][0]:
            found[key] = (run.info.start_time, curve)
    return [c for _, c in sorted(found.values(), key=lambda t: str(t[1].get("subject")))]


def capacity_curves(ts: TrialSet) -> Figure | None:
    curves = _search_curves(ts)[:MAX_SEARCH_PANELS]
    if not curves:
        return None
    from benchflow.search.curve import plot

    plt, _ = _plt()
    cols = min(len(curves), 3)
    rows = -(-len(curves) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.8 * cols, 4.3 * rows), squeeze=False)
    for ax, curve in zip(axes.flat, curves, strict=False):
        ans = curve.get("answer") or {}
        title = f"{curve.get('subject')}: {curve.get('kind')}"
        if ans.get("value") is not None:
            unit = "/s" if curve.get("over") == "rate" else " in flight"
            title += f" {ans['value']:g}{unit}"
        plot(ax, curve, title)
    for ax in list(axes.flat)[len(curves) :]:
        ax.set_visible(False)
    return _save(
        fig,
        "capacity",
        "Capacity: throughput–latency per service",
        "Each search's probes (repeats pooled): completed throughput against the binding "
        "SLO's figure with its confidence interval; green passed, red broke an SLO (or "
        "was invalid). Dashed: the SLO; dotted: the knee (the search's answer), its "
        "interval shaded; a saturation sweep marks its maximum throughput. "
        "docs/capacity.md defines them.",
    )


def resources(ts: TrialSet) -> Figure | None:
    cols = [
        c
        for c in (
            "metrics.resource.cpu_util",
            "metrics.resource.ram_mb",
            "metrics.resource.gpu_util",
            "metrics.resource.gpu_mem_mb",
        )
        if c in ts.finished and ts.finished[c].notna().any()
    ]
    if not cols:
        return None
    m = _medians(ts, cols)
    m["label"] = (m["subject"].astype(str) + " " + m["config"].astype(str)).str.slice(0, 40)
    m = m.head(30)
    plt, sns = _plt()
    fig, axes = plt.subplots(
        1, len(cols), figsize=(4.6 * len(cols), 0.28 * len(m) + 1.8), squeeze=False
    )
    for ax, col in zip(axes[0], cols, strict=True):
        sns.barplot(data=m, y="label", x=col, ax=ax, color="#4C72B0")
        ax.set_xlabel(col.removeprefix("metrics.resource."))
        ax.set_ylabel("")
        if ax is not axes[0][0]:
            ax.set_yticklabels([])
    return _save(
        fig,
        "resources",
        "Resource use",
        "Measured-window averages (CPU %, peak RAM MB, GPU), median over repetitions.",
    )


ALL = (
    capacity_curves,
    latency_throughput,
    scaling,
    latency_cdf,
    time_series,
    recall_qps,
    llm_distributions,
    resources,
)


def make_all(ts: TrialSet) -> list[Figure]:
    """Every figure that applies to these trials."""
    return [f for f in (fn(ts) for fn in ALL) if f is not None]
