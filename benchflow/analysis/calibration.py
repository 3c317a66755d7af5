"""``benchflow calibrate``: how noisy is this machine (or Slurm partition)?

An **A/A experiment**: one configuration (by default the sleep calibration
service, closed loop) run ``2N`` times in one sweep, and read as N interleaved
pairs — run 2k is side A, run 2k+1 side B of pair k, both the same thing. From
those runs, per metric (on the log scale, so SDs read as relative):

- ``noise_cv``: the run-to-run noise, the SD of the runs' log values (≈ their CV);
- ``pair_sd``: the SD of the pairs' log-ratios — what a paired comparison sees;
- ``drift_sd``: how far the level wanders over the calibration, beyond run-to-run
  noise: ``sqrt(max(0, var(all runs) − pair_sd²/2))`` (``pair_sd²/2`` is the
  short-term variance of one run). Two sides run apart differ by ``2·drift_sd²``
  in variance on top of their noise: what ``compare`` adds for blocked sides;
- the **minimal detectable effect** (80 % power, α = 0.05) for 3, 5 and 10
  repetitions, paired (interleaved) and blocked;
- the **false-positive rate** of ``compare`` on this A/A: every disjoint group of
  ``group`` consecutive pairs compared as baseline vs candidate (rows and
  comparisons with a verdict, where none is true), and, for contrast, what the
  statistics that ignore time give on the same runs split into two blocks.

The result is logged as a run of the ``benchflow-calibrations`` experiment
tagged with the host (and the Slurm partition) the trials ran on;
``compare`` uses the latest one of the runs' host for sides run apart
(:mod:`benchflow.analysis.compare.calibrations`). Method: docs/statistics.md.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from benchflow.analysis.compare import (
    BETTER,
    NO_DATA,
    WORSE,
    CompareError,
    RunRecord,
    Selection,
    Settings,
    by_value,
    compare_selections,
    select,
)
from benchflow.analysis.compare.calibrations import (
    CAL_PARTITION_TAG,
    EXPERIMENT,
    HOST_TAG,
    PARTITION_TAG,
    ROLE,
)
from benchflow.analysis.compare.design import mde_blocked, mde_paired
from benchflow.results.identity import workload_hash

# The default A/A: the sleep service over loopback HTTP (a real server process, so the
# machine's noise reaches it as it reaches a real SUT), short trials.
DEFAULT_OVERRIDES = (
    "service=sleep",
    "service.service_ms=5",
    "concurrency=4",
    "duration_s=2",
    "warmup_s=0.5",
    "monitor.interval_s=0.5",
)
REPETITIONS = (3, 5, 10)
HEADLINE = ("throughput", "errors.rate")
LATENCY = ("latency_ms.",)


@dataclass
class MetricCalibration:
    metric: str
    runs: int
    median: float
    noise_cv: float
    pair_sd: float
    drift_sd: float
    mde_paired: dict[int, float] = field(default_factory=dict)
    mde_blocked: dict[int, float] = field(default_factory=dict)


@dataclass
class CalibrationResult:
    """The figures of one A/A experiment (see the module's docstring)."""

    host: str | None
    partition: str | None
    service: str | None
    sweep_id: str | None
    pairs: int
    overrides: list[str]
    started_at: float
    ended_at: float
    metrics: list[MetricCalibration]
    group: int  # pairs per A/A comparison
    comparisons: int = 0
    rows: int = 0  # rows of those comparisons that could have a verdict
    false_rows: int = 0  # ... and got one
    false_comparisons: int = 0  # comparisons with at least one
    naive_rows: int = 0  # the runs split in two blocks, time ignored
    naive_false_rows: int = 0

    @property
    def false_positive_rate(self) -> float | None:
        return self.false_rows / self.rows if self.rows else None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["false_positive_rate"] = self.false_positive_rate
        return out

    def to_markdown(self) -> str:
        where = f"host {self.host}" + (f", partition {self.partition}" if self.partition else "")
        minutes = (self.ended_at - self.started_at) / 60
        lines = [
            f"**Calibration of {where}**: an A/A experiment of {self.pairs} interleaved pairs "
            f"({2 * self.pairs} runs over {minutes:.1f} min) of "
            f"`{' '.join(self.overrides)}`",
            "",
            "| metric | median | run-to-run noise (CV) | pair SD | drift SD | "
            + " | ".join(f"MDE paired n={n}" for n in REPETITIONS)
            + " | "
            + " | ".join(f"MDE blocked n={n}" for n in REPETITIONS)
            + " |",
            "|---|---|---|---|---|" + "---|" * (2 * len(REPETITIONS)),
        ]
        for m in self.metrics:
            lines.append(
                f"| {m.metric} | {m.median:.4g} | {m.noise_cv:.2%} | {m.pair_sd:.2%} | "
                f"{m.drift_sd:.2%} | "
                + " | ".join(_pct(m.mde_paired.get(n)) for n in REPETITIONS)
                + " | "
                + " | ".join(_pct(m.mde_blocked.get(n)) for n in REPETITIONS)
                + " |"
            )
        fpr = self.false_positive_rate
        lines += [
            "",
            f"- false positives of `compare` on this A/A ({self.comparisons} comparisons of "
            f"{self.group} interleaved pairs): {self.false_rows} of {self.rows} rows"
            + (f" ({fpr:.0%})" if fpr is not None else "")
            + f", {self.false_comparisons} of {self.comparisons} comparisons",
            f"- for contrast, the same runs split into two blocks and read as independent "
            f"samples (the statistics before issue 19): {self.naive_false_rows} of "
            f"{self.naive_rows} rows with a verdict",
            "- MDE: the smallest true change found with 80% power (α = 0.05): paired = "
            "interleaved sides, blocked = sides run apart (`compare` uses this calibration's "
            "drift SD for those). Method: docs/statistics.md.",
        ]
        return "\n".join(lines) + "\n"


def _pct(v: float | None) -> str:
    if v is None:
        return "–"
    return "∞" if not math.isfinite(v) else f"±{v:.1%}"


# -- running the A/A ----------------------------------------------------------------
def merged_overrides(extra: list[str] | tuple[str, ...]) -> list[str]:
    """The default A/A with the user's overrides on top: a key given replaces the
    default one; another ``service=`` drops the sleep service's keys."""
    keys = {o.split("=", 1)[0].lstrip("+~") for o in extra}
    other_service = any(o.startswith("service=") for o in extra)
    keep = [
        o
        for o in DEFAULT_OVERRIDES
        if o.split("=", 1)[0] not in keys and not (other_service and o.startswith("service."))
    ]
    return [*keep, *extra]


def run_sweep(
    pairs: int,
    overrides: list[str],
    scenario: str = "calibration",
    tracking_uri: str | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
) -> str:
    """Run the A/A sweep (``2·pairs`` repetitions, interleaved) as a user would, through
    ``python -m benchflow -m``; returns its sweep id."""
    sweep_id = f"calibrate-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    cmd = [
        sys.executable,
        "-m",
        "benchflow",
        "-m",
        f"scenario={scenario}",
        *overrides,
        f"repetitions={2 * pairs}",
        "order=interleaved",
        "resume=false",  # the same configuration as the last calibration: run it again
        "progress=off",
        f"hydra.sweep.dir=${{results_dir}}/${{scenario}}/_sweeps/{sweep_id}",
    ]
    env = dict(os.environ)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-15:]
        raise CompareError(
            f"the A/A sweep failed (exit {proc.returncode}): {' '.join(cmd[2:])}\n"
            + "\n".join(tail)
        )
    return sweep_id


# -- reading it -----------------------------------------------------------------------
def analyse(
    runs: list[RunRecord],
    overrides: list[str] | None = None,
    sweep_id: str | None = None,
    group: int = 5,
    settings: Settings | None = None,
) -> CalibrationResult:
    """The calibration figures of the runs of one configuration, in time order."""
    if len({workload_hash(by_value(r.params)) for r in runs}) > 1:
        raise CompareError("a calibration needs runs of one configuration (an A/A)")
    runs = sorted(runs, key=lambda r: r.started_at or 0.0)
    n = len(runs) // 2
    if n < 2:
        raise CompareError(f"{len(runs)} valid run(s): a calibration needs at least 2 pairs")
    runs = runs[: 2 * n]
    s = settings or Settings()
    hosts = {r.tags.get(HOST_TAG) for r in runs} - {None}
    parts = {r.tags.get(PARTITION_TAG) for r in runs} - {None}
    result = CalibrationResult(
        host=hosts.pop() if len(hosts) == 1 else None,
        partition=parts.pop() if len(parts) == 1 else None,
        service=runs[0].tags.get("benchflow.service"),
        sweep_id=sweep_id or runs[0].tags.get("benchflow.sweep_id"),
        pairs=n,
        overrides=list(overrides or runs[0].tags.get("benchflow.overrides", "").split()),
        started_at=min(r.started_at or 0.0 for r in runs),
        ended_at=max(r.ended_at or r.started_at or 0.0 for r in runs),
        metrics=[],
        group=min(group, n),
    )
    for metric in _metrics(runs):
        y = np.log(np.array([r.metrics[metric] for r in runs]))
        d = y[1::2] - y[0::2]
        pair_sd = float(np.std(d, ddof=1))
        total = float(np.var(y, ddof=1))
        mc = MetricCalibration(
            metric,
            len(y),
            float(np.exp(np.median(y))),
            noise_cv=math.sqrt(total),
            pair_sd=pair_sd,
            drift_sd=math.sqrt(max(0.0, total - pair_sd**2 / 2)),
        )
        for k in REPETITIONS:
            mc.mde_paired[k] = mde_paired(pair_sd, k, s.alpha)
            mc.mde_blocked[k] = mde_blocked(pair_sd / math.sqrt(2), mc.drift_sd, k, s.alpha)
        result.metrics.append(mc)
    _false_positives(result, runs, s)
    return result


def _metrics(runs: list[RunRecord]) -> list[str]:
    """The metrics to calibrate: throughput and latency percentiles that every run has,
    with positive values that vary."""
    common = set.intersection(*(set(r.metrics) for r in runs))
    wanted = [m for m in HEADLINE if m in common]
    wanted += sorted(
        (m for m in common if m.startswith(LATENCY) and m.rsplit(".", 1)[-1].startswith("p")),
        key=lambda m: float(m.rsplit(".p", 1)[-1].replace("999", "99.9")),
    )
    out = []
    for m in wanted:
        v = np.array([r.metrics[m] for r in runs])
        if (v > 0).all() and np.ptp(v) > 0:
            out.append(m)
    return out


def _false_positives(result: CalibrationResult, runs: list[RunRecord], s: Settings) -> None:
    """``compare`` on the A/A: disjoint groups of ``group`` pairs, and the naive split."""
    from benchflow.analysis.compare import DEFAULT_METRICS

    metrics = [m for m in DEFAULT_METRICS if all(m in r.metrics for r in runs)]
    n, g = result.pairs, result.group
    for start in range(0, n - g + 1, g):
        part = runs[2 * start : 2 * (start + g)]
        cmp = compare_selections(_side("A", part[0::2]), _side("B", part[1::2]), metrics, s)
        judged = [r for r in cmp.rows if r.verdict != NO_DATA]
        false = [r for r in judged if r.verdict in (BETTER, WORSE)]
        result.comparisons += 1
        result.rows += len(judged)
        result.false_rows += len(false)
        result.false_comparisons += bool(false)
    naive = Settings(**{**asdict(s), "design": "independent"})
    cmp = compare_selections(_side("A", runs[:n]), _side("B", runs[n : 2 * n]), metrics, naive)
    judged = [r for r in cmp.rows if r.verdict != NO_DATA]
    result.naive_rows = len(judged)
    result.naive_false_rows = sum(r.verdict in (BETTER, WORSE) for r in judged)


def _side(name: str, runs: list[RunRecord]) -> Selection:
    return Selection(name, "runs", f"A/A side {name}", list(runs))


# -- logging it -----------------------------------------------------------------------
def log_calibration(c, result: CalibrationResult) -> str:
    """Log the calibration as a run of ``benchflow-calibrations``; returns its id."""
    from benchflow import tracking

    exp = tracking.ensure_experiment(c, EXPERIMENT)
    where = result.host or result.partition or "unknown host"
    tags = {
        "benchflow.role": ROLE,
        "benchflow.calibration.pairs": str(result.pairs),
        "benchflow.calibration.overrides": " ".join(result.overrides)[:5000],
    }
    if result.host:
        tags[HOST_TAG] = result.host
    if result.partition:
        tags[CAL_PARTITION_TAG] = result.partition
    if result.service:
        tags["benchflow.service"] = result.service
    if result.sweep_id:
        tags["benchflow.calibration.sweep_id"] = result.sweep_id
    run = c.create_run(
        exp,
        start_time=int(result.ended_at * 1000) or None,
        run_name=f"calibration of {where}",
        tags=tags,
    )
    rid = run.info.run_id
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    metrics = []
    for m in result.metrics:
        figures = {"noise_cv": m.noise_cv, "pair_sd": m.pair_sd, "drift_sd": m.drift_sd}
        for k, v in m.mde_paired.items():
            figures[f"mde.paired.{k}"] = v
        for k, v in m.mde_blocked.items():
            figures[f"mde.blocked.{k}"] = v
        metrics += [
            Metric(f"{f}.{m.metric}", float(v), now, 0)
            for f, v in figures.items()
            if math.isfinite(v)
        ]
    if result.false_positive_rate is not None:
        metrics.append(Metric("false_positive_rate", result.false_positive_rate, now, 0))
    params = [
        Param("pairs", str(result.pairs)),
        Param("group", str(result.group)),
        Param("sweep_id", str(result.sweep_id)),
    ]
    c.log_batch(rid, metrics=metrics, params=params)
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in (
            ("calibration.json", json.dumps(result.to_dict(), indent=2)),
            ("calibration.md", result.to_markdown()),
        ):
            (Path(tmp) / name).write_text(text)
            c.log_artifact(rid, str(Path(tmp) / name))
    c.set_terminated(rid, "FINISHED")
    return rid


def calibrate(
    client,
    pairs: int = 10,
    overrides: tuple[str, ...] | list[str] = (),
    scenario: str = "calibration",
    tracking_uri: str | None = None,
    sweep: str | None = None,
    group: int = 5,
    log: bool = True,
    cwd: Path | None = None,
) -> tuple[CalibrationResult, str | None]:
    """Run the A/A sweep (or read an existing one: ``sweep``), compute its figures and
    log them; returns the result and the calibration run's id."""
    if pairs < 2:
        raise CompareError(f"--pairs {pairs}: at least 2")
    used = merged_overrides(list(overrides))
    if sweep is None:
        sweep = run_sweep(pairs, used, scenario, tracking_uri, cwd)
        given = used
    else:
        given = None
    runs = select(f"sweep:{sweep}", client).runs
    result = analyse(runs, given, sweep, group)
    rid = log_calibration(client, result) if log else None
    return result, rid
