"""Slurm (issue: sweeps through submitit): time to queue a 100-trial sweep, and the
harness's overhead per Slurm trial, on the single-node test cluster
(scripts/slurm_cluster.py, started and stopped here)."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Row, Workspace, check

S = "slurm"
ORDER = 60
REPO = Path(__file__).resolve().parents[1]
CD = str(REPO / "tests" / "slurm" / "conf")


def _sweep_dir(ws_dir: Path, scenario: str) -> Path | None:
    root = ws_dir / "results" / scenario / "_sweeps"
    dirs = sorted(root.iterdir()) if root.exists() else []
    return dirs[-1] if dirs else None


def _queued(sweep: Path | None, n: int) -> bool:
    if sweep is None or not (sweep / "slurm.json").exists():
        return False
    try:
        jobs = json.loads((sweep / "slurm.json").read_text())["jobs"]
    except (OSError, ValueError):
        return False
    return len(jobs) == n and all(j["attempts"] for j in jobs)


def rows(ws: Workspace) -> list[Row]:
    if os.geteuid() != 0 or not shutil.which("slurmctld"):
        return [Row(S, "Slurm test cluster", None, "", "runs", False, "needs root + slurm-wlm")]
    cluster = Path(tempfile.mkdtemp(prefix="benchflow-slurm-bench-"))
    os.chmod(cluster, 0o755)
    script = [sys.executable, str(REPO / "scripts" / "slurm_cluster.py")]
    started = subprocess.run([*script, "start", str(cluster)], capture_output=True, text=True)
    if started.returncode != 0:
        return [Row(S, "Slurm test cluster", None, "", "starts", False, started.stderr[-300:])]
    env = {**ws.env, "SLURM_CONF": json.loads(started.stdout)["SLURM_CONF"]}
    try:
        # the overhead sweep first: it also creates the MLflow store, so the queue time
        # is measured against an existing store, as on a team's tracking server
        over = _overhead(ws, env)
        return _queue_time(ws, env) + over
    finally:
        subprocess.run([*script, "stop", str(cluster)], capture_output=True)
        shutil.rmtree(cluster, ignore_errors=True)


def _queue_time(ws: Workspace, env: dict) -> list[Row]:
    """From `python -m benchflow -m ...` starting to all 100 jobs queued in Slurm."""
    scenario = "slurmqueue"
    o = [
        "-m",
        "--config-dir",
        CD,
        "site=local",
        f"scenario={scenario}",
        "service=noop_small,sleep_gpu",
        "seed=range(50)",
        "duration_s=1",
        "warmup_s=0",
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchflow", *o],
        cwd=ws.dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    queued = None
    while proc.poll() is None and time.perf_counter() - t0 < 120:
        if _queued(_sweep_dir(ws.dir, scenario), 100):
            queued = time.perf_counter() - t0
            break
        time.sleep(0.05)
    sweep = _sweep_dir(ws.dir, scenario)
    if sweep is not None:  # the jobs are not the point here: cancel them
        subprocess.run(
            [sys.executable, "-m", "benchflow", "stop", sweep.name],
            cwd=ws.dir,
            env=env,
            capture_output=True,
        )
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
    how = "python -m benchflow " + " ".join(o) + " (2 job arrays; 2-core shared machine)"
    return [
        Row(
            S,
            "sweep start -> all 100 jobs queued",
            queued,
            "s",
            "<= 10",
            check(queued, "<=", 10.0),
            how,
        )
    ]


def _overhead(ws: Workspace, env: dict) -> list[Row]:
    """Per Slurm job: wall time beyond the trial's own warm-up + measured phase."""
    scenario, n, own = "slurmoverhead", 4, 2.0
    o = [
        "-m",
        "--config-dir",
        CD,
        "site=local",
        f"scenario={scenario}",
        "service=noop_small",
        f"seed=range({n})",
        "duration_s=2",
        "warmup_s=0",
        "hydra.launcher.array_parallelism=1",
    ]
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "benchflow", *o],
        cwd=ws.dir,
        env=env,
        capture_output=True,
        timeout=900,
    )
    total = time.perf_counter() - t0
    sweep = _sweep_dir(ws.dir, scenario)
    jobs = json.loads((sweep / "slurm.json").read_text())["jobs"]
    ids = ",".join(j["attempts"][-1]["job_id"] for j in jobs)
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "ElapsedRaw", "-j", ids],
        env=env,
        capture_output=True,
        text=True,
    ).stdout.split()
    elapsed = [float(x) for x in out if x.strip()]
    per_job = statistics.median(elapsed) - own if elapsed else None
    walls = []
    for t in (ws.dir / "results" / scenario).iterdir():
        if (t / "meta.json").exists():
            m = json.loads((t / "meta.json").read_text())
            walls.append(m["ended_at_epoch"] - m["started_at_epoch"] - own)
    how = "python -m benchflow " + " ".join(o) + " (sequential; sacct ElapsedRaw, 1 s steps)"
    return [
        Row(S, "Slurm job wall time - trial's own work (median of 4)", per_job, "s", how=how),
        Row(
            S,
            "  of which inside the trial (setup, result, MLflow upload)",
            statistics.median(walls) if walls else None,
            "s",
            how=how,
        ),
        Row(
            S,
            "  sweep wall time per trial, 4 in sequence, incl. queueing and startup",
            total / n - own,
            "s",
            how=how,
        ),
    ]
