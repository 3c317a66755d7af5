"""Statistics for "is the candidate really better than the baseline?".

Trials of the two sides are paired by *workload* (:func:`benchflow.config.workload_hash`
over their params, ignoring what the targets set). For each matched
configuration and metric the repetitions (one value per run) are compared:

- the point estimate is the **ratio of medians** of the per-run values
  (candidate / baseline);
- its **bootstrap confidence interval** resamples runs with replacement and, for
  latency percentiles, the requests *within* each resampled run as well: a run's
  bootstrapped q-th percentile is drawn exactly from its histogram as the
  k-th order statistic, ``F⁻¹(U)`` with ``U ~ Beta(k, n-k+1)``, ``k = ⌈q·n⌉``, which
  is what resampling its n requests and taking the percentile would give, at no
  cost per request;
- **Welch's t-test** and the **Mann–Whitney U** test on the per-run values, the
  chosen one's p-values adjusted with **Benjamini–Hochberg** across the table;
- an **effect-size floor** (default 2 %): a smaller change is "no significant
  change" even when it is statistically significant.

A row is *better* or *worse* only when the adjusted p-value is below alpha, the
confidence interval excludes 1 on the same side, and the change reaches the
floor; with fewer than ``min_repetitions`` runs on a side it is *not enough
data* (the numbers are shown all the same).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from benchflow.config import NON_IDENTITY, conf_dir, workload_hash
from benchflow.load.histogram import LogHistogram

BETTER, WORSE, SAME, NO_DATA = "better", "worse", "no significant change", "not enough data"
DEFAULT_METRICS = ("throughput", "latency_ms.p50", "latency_ms.p99", "errors.rate")
_PCT = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
_HIST_OF = {"latency_ms": "latency", "service_time_ms": "service", "ttfb_ms": "ttfb"}
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class CompareError(Exception):
    """Nothing to compare (no runs, no matching configuration); ``str()`` says why."""


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


# -- runs from MLflow ------------------------------------------------------------
@dataclass
class RunRecord:
    """What comparison needs of one trial run."""

    run_id: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifact_uri: str = ""
    _hists: dict[str, LogHistogram] | None = field(default=None, repr=False)

    @property
    def target_keys(self) -> list[str]:
        keys = self.tags.get("benchflow.target_keys", "")
        return [k for k in keys.split(",") if k]

    def histograms(self, results_dir: Path | None = None) -> dict[str, LogHistogram]:
        """The run's latency histograms: from the trial's files if they are here, else
        from its artifacts; empty when it has none."""
        if self._hists is None:
            self._hists = {}
            data = _read_histograms(self, results_dir)
            if data:
                self._hists = {k: LogHistogram.from_dict(v) for k, v in data.items()}
        return self._hists


def _read_histograms(run: RunRecord, results_dir: Path | None) -> dict | None:
    candidates = []
    uri = run.artifact_uri.removeprefix("file://")
    if uri.startswith("/"):
        candidates.append(Path(uri) / "histograms.json")
    scen, tid = run.tags.get("benchflow.scenario"), run.tags.get("benchflow.trial_id")
    if scen and tid:
        candidates.append(Path(results_dir or "results") / scen / tid / "histograms.json")
    for p in candidates:
        if p.is_file():
            return json.loads(p.read_text())
    try:
        import mlflow.artifacts

        path = mlflow.artifacts.download_artifacts(
            run_id=run.run_id, artifact_path="histograms.json"
        )
        return json.loads(Path(path).read_text())
    except Exception:
        return None


def _record(r) -> RunRecord:
    return RunRecord(
        r.info.run_id,
        dict(r.data.params),
        dict(r.data.metrics),
        dict(r.data.tags),
        r.info.artifact_uri,
    )


@dataclass
class Selection:
    """The runs one side of a comparison stands for."""

    spec: str
    kind: str  # target | runs | sweep | experiment
    label: str
    runs: list[RunRecord]
    left_out: dict[str, int] = field(default_factory=dict)  # why -> count
    target: Any = None  # registry.ResolvedTarget for a target


def select(spec: str, client, experiment: str | None = None) -> Selection:
    """Resolve NAME@ALIAS, NAME/VERSION, run ids (comma-separated), a sweep id or an
    experiment name (prefix ``target:``, ``run:``, ``sweep:`` or ``experiment:`` to
    say which) into its valid, finished trial runs."""
    from benchflow import registry

    kind, _, value = (
        spec.partition(":")
        if re.match(r"^(target|run|sweep|experiment):", spec)
        else ("", "", spec)
    )
    exp_ids = None
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise CompareError(f"--experiment {experiment!r}: no such experiment")
        exp_ids = [exp.experiment_id]
    all_exps = exp_ids or [e.experiment_id for e in client.search_experiments()]

    def search(flt: str) -> list:
        out, token = [], None
        while all_exps:
            page = client.search_runs(
                all_exps, filter_string=flt, max_results=5000, page_token=token
            )
            out += list(page)
            token = page.token
            if not token:
                break
        return out

    if kind == "target" or (not kind and ("@" in value or re.match(r"^[^/\s]+/\d+$", value))):
        try:
            t = registry.resolve(value, client=client)
        except registry.TargetError as exc:
            raise CompareError(str(exc)) from None
        runs = search(f"tags.`benchflow.target` = '{t.label}'")
        return _finish(
            Selection(
                spec,
                "target",
                t.label if t.ref == t.label else f"{t.ref} ({t.label})",
                [],
                target=t,
            ),
            runs,
        )
    if kind == "run" or (not kind and all(_RUN_ID.match(x) for x in value.split(","))):
        runs = []
        for rid in value.split(","):
            try:
                r = client.get_run(rid)
            except Exception:
                raise CompareError(f"run {rid}: no such run") from None
            if r.data.tags.get("benchflow.role") == "sweep":
                runs += search(f"tags.`mlflow.parentRunId` = '{rid}'")
            else:
                runs.append(r)
        return _finish(Selection(spec, "runs", f"{len(value.split(','))} run(s)", []), runs)
    if kind == "experiment" or (not kind and client.get_experiment_by_name(value) is not None):
        exp = client.get_experiment_by_name(value)
        if exp is None:
            raise CompareError(f"experiment {value!r}: no such experiment")
        runs = []
        token = None
        while True:
            page = client.search_runs([exp.experiment_id], max_results=5000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                break
        return _finish(Selection(spec, "experiment", f"experiment {value}", []), runs)
    if kind == "sweep" or not kind:
        sweep_id = Path(value).name if kind or "/" in value else value
        runs = search(f"tags.`benchflow.sweep_id` = '{sweep_id}'")
        if runs or kind:
            return _finish(Selection(spec, "sweep", f"sweep {sweep_id}", []), runs)
    raise CompareError(
        f"{spec!r} is not a target (NAME@ALIAS, NAME/VERSION), a run id, a sweep id "
        "or an experiment name that has runs here"
    )


def _finish(sel: Selection, runs: Iterable) -> Selection:
    for r in runs:
        tags = r.data.tags
        if tags.get("benchflow.role") == "sweep":
            continue
        if "benchflow.trial_id" not in tags:
            why = "not a benchflow trial"
        elif r.info.status != "FINISHED":
            why = f"status {r.info.status}"
        elif tags.get("benchflow.valid") != "true":
            why = "invalid (see benchflow.invalid_reasons)"
        else:
            sel.runs.append(_record(r))
            continue
        sel.left_out[why] = sel.left_out.get(why, 0) + 1
    if not sel.runs:
        extra = (
            "; left out: " + ", ".join(f"{n} {w}" for w, n in sel.left_out.items())
            if sel.left_out
            else ""
        )
        raise CompareError(f"{sel.spec}: no valid finished trial runs{extra}")
    return sel


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


# -- promotion policy ------------------------------------------------------------
@dataclass(frozen=True)
class Policy:
    primary: str = "throughput"
    guards: tuple[str, ...] = ("latency_ms.p99", "errors.rate")


def load_policy(
    service: str | None, target_tags: dict[str, str] | None = None, path: Path | None = None
) -> Policy:
    """The promotion policy: conf/promotion.yaml's default, then its per-service entry,
    then the registered target's ``benchflow.primary`` / ``benchflow.guards`` tags."""
    import yaml

    p = path or conf_dir() / "promotion.yaml"
    data = yaml.safe_load(p.read_text()) if p.is_file() else {}
    merged = dict(data.get("default") or {})
    merged.update((data.get("services") or {}).get(service or "", {}) or {})
    tags = target_tags or {}
    if tags.get("benchflow.primary"):
        merged["primary"] = tags["benchflow.primary"]
    if tags.get("benchflow.guards"):
        merged["guards"] = [g.strip() for g in tags["benchflow.guards"].split(",") if g.strip()]
    return Policy(
        primary=merged.get("primary", Policy.primary),
        guards=tuple(merged.get("guards", Policy.guards)),
    )


@dataclass
class Decision:
    accepted: bool
    reasons: list[str]


def gate(cmp: Comparison, policy: Policy) -> Decision:
    """Promote only when the primary metric is significantly better in at least one
    matched configuration and worse in none, and no guard is significantly worse."""
    reasons = []
    prim = cmp.rows_for(policy.primary)
    judged = [r for r in prim if r.verdict != NO_DATA]
    if not prim:
        reasons.append(f"the primary metric {policy.primary} is not in the runs")
    elif not judged:
        reasons.append(f"not enough data on the primary metric {policy.primary}")
    worse_p = [r for r in prim if r.verdict == WORSE]
    if worse_p:
        reasons.append(
            f"{policy.primary} is significantly worse in {len(worse_p)} configuration(s): "
            + "; ".join(f"{r.config} ({r.ratio - 1:+.1%})" for r in worse_p[:5])
        )
    if judged and not any(r.verdict == BETTER for r in prim):
        reasons.append(f"{policy.primary} is not significantly better in any configuration")
    for g in policy.guards:
        bad = [r for r in cmp.rows_for(g) if r.verdict == WORSE]
        if bad:
            reasons.append(
                f"guard {g} is significantly worse in {len(bad)} configuration(s): "
                + "; ".join(f"{r.config} ({fmt(r.ratio)}×)" for r in bad[:5])
            )
    if reasons:
        return Decision(False, reasons)
    better = [r for r in prim if r.verdict == BETTER]
    return Decision(
        True,
        [
            f"{policy.primary} significantly better in {len(better)} of {len(prim)} "
            "configuration(s); "
            f"no guard ({', '.join(policy.guards) or 'none'}) significantly worse"
        ],
    )
