"""The throughput–latency curve of a search: its rows (``curve.csv``, ``curve.json``,
logged to the parent run under ``search/``) and its figure (``search/curve.png``).

One point per probe (its repeats pooled): the load it was given, the throughput
it completed, the latency percentiles, each SLO's figure with its interval and
the verdict. The figure puts completed throughput on x and the binding SLO's
figure (else latency p99) on y, with the SLO as a horizontal line, passes and
failures marked, and the knee — the answer — as a vertical line with its
interval shaded; a saturation sweep marks its maximum throughput instead.
``benchflow report`` draws every search's curve side by side with the same
function (:func:`plot`).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

CURVE_JSON = "curve.json"
CURVE_CSV = "curve.csv"
CURVE_PNG = "curve.png"
ARTIFACT_DIR = "search"  # in the parent run


def rows(curve: dict[str, Any]) -> list[dict[str, Any]]:
    """The curve as flat rows (one per point), for the CSV."""
    out = []
    for p in curve.get("points", []):
        row = {
            "phase": p.get("phase"),
            "over": p.get("over"),
            "load": p.get("x"),
            "verdict": p.get("verdict"),
            "offered_rate": p.get("offered_rate"),
            "throughput": p.get("throughput"),
            "latency_ms.p50": p.get("latency_ms.p50"),
            "latency_ms.p99": p.get("latency_ms.p99"),
            "errors.rate": p.get("errors.rate"),
            "trials": len(p.get("trials", [])),
            "reused": sum(bool(t.get("reused")) for t in p.get("trials", [])),
            "reasons": "; ".join(p.get("reasons", [])),
        }
        for r in p.get("slo", []):
            row[f"{r['slo']} estimate"] = r.get("estimate")
            row[f"{r['slo']} low"] = r.get("low")
            row[f"{r['slo']} high"] = r.get("high")
            row[f"{r['slo']} verdict"] = r.get("verdict")
        out.append(row)
    return out


def write_csv(curve: dict[str, Any], path: Path) -> None:
    data = rows(curve)
    fields: list[str] = []
    for r in data:
        fields += [k for k in r if k not in fields]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields or ["load"])
        w.writeheader()
        for r in data:
            w.writerow({k: "" if v is None else v for k, v in r.items()})


def _y_series(curve: dict[str, Any]) -> tuple[str, str, float | None]:
    """What the y axis shows: the binding (else first) ceiling SLO on a distribution —
    (its text, its metric, its limit) — else latency p99 without a limit."""
    slos = [s for s in curve.get("slo_specs", []) if s.get("upper") and s.get("stat")]
    binding = curve.get("binding_slo")
    chosen = next((s for s in slos if s["text"] == binding), slos[0] if slos else None)
    if chosen is None:
        return "latency_ms.p99", "latency_ms.p99", None
    return chosen["text"], chosen.get("metric") or chosen["text"], chosen["value"]


def _y_of(p: dict[str, Any], key: str) -> tuple[float | None, float | None, float | None]:
    for r in p.get("slo", []):
        if r["slo"] == key:
            return r.get("low"), r.get("estimate"), r.get("high")
    v = p.get(key)
    return None, v, None


def plot(ax, curve: dict[str, Any], title: str | None = None) -> None:
    """Draw one search's curve on a matplotlib axis."""
    key, metric, limit = _y_series(curve)
    pts = [p for p in curve.get("points", []) if p.get("throughput") is not None]
    sweep = curve.get("kind") == "saturation"
    pts.sort(
        key=lambda p: (
            p["throughput"] if sweep else (p["x"] if p.get("over") == curve.get("over") else 0),
            p["throughput"],
        )
    )
    xs = [p["throughput"] for p in pts]
    ys = [_y_of(p, key) for p in pts]
    # the line joins the probes of the searched axis (a sweep: all, by throughput); the
    # closed-loop probes of a rate search or sweep (synchronous, throughput) are diamonds
    on_axis = [p.get("over") == curve.get("over") for p in pts]
    joined = [a or sweep for a in on_axis]
    ax.plot(
        [x for x, a in zip(xs, joined, strict=True) if a],
        [y[1] if y[1] is not None else math.nan for y, a in zip(ys, joined, strict=True) if a],
        "-",
        color="0.6",
        lw=1,
        zorder=1,
    )
    judged = bool(curve.get("slo"))
    for p, x, (lo, est, hi), a in zip(pts, xs, ys, on_axis, strict=True):
        if est is None:
            continue
        ok = p.get("verdict") == "pass" or not judged
        yerr = None
        if lo is not None and hi is not None and lo <= est <= hi:
            yerr = [[est - lo], [hi - est]]
        ax.errorbar(
            [x],
            [est],
            yerr=yerr,
            fmt=("o" if ok else "x") if a else "D",
            color=("tab:green" if ok else "tab:red") if judged else "tab:blue",
            mfc="none" if not a else None,
            ms=6,
            capsize=3,
            zorder=3,
        )
        if not a:
            ax.annotate(
                str(p.get("phase", "")),
                (x, est),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
    if limit is not None:
        ax.axhline(limit, color="tab:orange", ls="--", lw=1.2, label=f"SLO {key}")
    ans = curve.get("answer") or {}
    knee = ans.get("throughput")
    if knee is not None:
        what = "max" if curve.get("kind") == "saturation" and not curve.get("slo") else "knee"
        ax.axvline(knee, color="tab:blue", ls=":", lw=1.5, label=f"{what} {knee:.4g}/s")
        if ans.get("throughput_high") is not None:
            ax.axvspan(knee, ans["throughput_high"], color="tab:blue", alpha=0.12)
    ceiling = curve.get("max_throughput")
    if ceiling is not None and curve.get("kind") == "saturation":
        ax.axvline(ceiling, color="0.3", ls="-.", lw=1, label=f"max throughput {ceiling:.4g}/s")
    vals = [y[1] for y in ys if y[1] is not None and y[1] > 0]
    if vals and max(vals) / min(vals) > 20:
        ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(6))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.4g}"))
    ax.set_xlabel("completed throughput (requests/s)")
    ax.set_ylabel(metric.replace("_ms.", " ") + (" (ms)" if "_ms" in metric else ""))
    ax.set_title(title or str(curve.get("subject") or curve.get("service") or "search"))
    ax.legend(fontsize=7, loc="upper left")


def figure_png(curve: dict[str, Any]) -> bytes:
    """The curve of one search as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.4))
    ans = curve.get("answer") or {}
    title = f"{curve.get('service', '')}: {curve.get('kind', '')}"
    if ans.get("value") is not None:
        unit = "/s" if curve.get("over") == "rate" else " in flight"
        if ans.get("ci_high") is None:
            title += f" ≥ {ans['value']:g}{unit}"
        else:
            title += f" {ans['value']:g}{unit} [{ans['ci_low']:g}, {ans['ci_high']:g}]"
    plot(ax, curve, title)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
