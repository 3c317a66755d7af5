"""The team tracking server's figures (issue: tracking server on PostgreSQL), against
a server this section starts: ``benchflow server start --embedded-db`` (MLflow on a
throwaway PostgreSQL, artifacts on local disk, workers as the default picks).

- a complete trial's upload (``tracking.upload_trial``: run, params, ~1,000 metric
  points, every file as an artifact, terminated, marked complete), median of 5;
- ``mlflow.search_runs`` with a filter over 10,000 runs of one experiment (the runs
  are created by 16 threads, each run one ``create_run`` with its tags and one
  ``log_batch`` of 3 params and 3 metrics; the creation time is reported too);
- 64 processes uploading complete trials at once: runs logged per second.

Run it alone: ``python -m bench tracking_server``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import Row, Workspace, check

S = "tracking server"
ORDER = 70
HOW = "python -m bench tracking_server"
SEARCH_RUNS = 10_000
WRITERS = 64  # a sweep of 64 trials ending at once (issue 16: the write rate with 64 writers)
TRIALS_PER_WRITER = 2


def _server(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchflow", "server", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def _synth(root: Path, experiment: str, seconds: int, seed: int, uri: str) -> Path:
    from benchflow.analysis.synthetic import SynthTrial, write_trial

    return write_trial(
        root, SynthTrial(experiment, experiment, seconds=seconds, seed=seed, tracking_uri=uri)
    )


def _points(tdir: Path) -> int:
    """Metric points one upload of this trial sends (summary figures + series)."""
    from benchflow.results import TrialResult, metrics_flat, read_json
    from benchflow.tracking.upload import series_metrics

    meta = read_json(tdir / "meta.json")
    flat = metrics_flat(TrialResult.model_validate(read_json(tdir / "metrics.json")))
    return len(flat) + len(series_metrics(tdir, meta))


def _trial_upload(url: str, root: Path) -> list[Row]:
    from benchflow import tracking

    c = tracking.client(url, http_timeout_s=60)
    tracking.upload_trial(_synth(root, "bench-trial", 160, 0, url), c)  # experiment, warm-up
    times, points, files = [], 0, 0
    for seed in range(1, 6):
        tdir = _synth(root, "bench-trial", 160, seed, url)
        points = _points(tdir)
        files = sum(1 for f in tdir.rglob("*") if f.is_file())
        t0 = time.perf_counter()
        tracking.upload_trial(tdir, c)
        times.append(time.perf_counter() - t0)
    v = statistics.median(times)
    return [
        Row(
            S,
            f"one complete trial logged ({points} metric points, {files} artifacts), median of 5",
            v,
            "s",
            "<= 1",
            check(v, "<=", 1.0),
            HOW,
        )
    ]


def _search(url: str) -> list[Row]:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    c = MlflowClient(url)
    exp = c.create_experiment(f"bench-search-{time.time_ns()}")
    concurrency = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    now = int(time.time() * 1000)

    def one(i: int) -> None:
        run = c.create_run(
            exp,
            tags={"benchflow.service": "synth", "benchflow.trial_id": f"t{i:05d}"},
            run_name=f"r{i}",
        )
        c.log_batch(
            run.info.run_id,
            metrics=[
                Metric("throughput", float(i % 1000), now, 0),
                Metric("latency_ms.p99", float(i % 97), now, 0),
                Metric("error_rate", 0.0, now, 0),
            ],
            params=[
                Param("concurrency", str(concurrency[i % 10])),
                Param("service.name", "synth"),
                Param("seed", str(i)),
            ],
        )

    t0 = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(SEARCH_RUNS)))
    created_s = time.perf_counter() - t0
    mlflow.set_tracking_uri(url)
    flt = (
        "params.concurrency = '8' and metrics.throughput >= 100 "
        "and tags.`benchflow.service` = 'synth'"
    )
    times, n = [], 0
    for _ in range(3):
        t0 = time.perf_counter()
        df = mlflow.search_runs([exp], filter_string=flt)
        times.append(time.perf_counter() - t0)
        n = len(df)
    v = statistics.median(times)
    return [
        Row(
            S,
            f"search_runs, filter on a param, a metric and a tag over {SEARCH_RUNS:,} runs "
            f"({n} match), median of 3",
            v,
            "s",
            "<= 2",
            check(v, "<=", 2.0),
            HOW,
        ),
        Row(
            S,
            f"  creating those {SEARCH_RUNS:,} runs (16 threads, 2 requests each)",
            SEARCH_RUNS / created_s,
            "runs/s",
            how=HOW,
        ),
    ]


def _writer(url: str, dirs: list[str], barrier, out) -> None:
    from benchflow import tracking

    c = tracking.client(url, http_timeout_s=300)
    barrier.wait(120)
    t0 = time.perf_counter()
    for d in dirs:
        tracking.upload_trial(d, c)
    out.put(time.perf_counter() - t0)


def _writers(url: str, root: Path) -> list[Row]:
    experiment = f"bench-writers-{time.time_ns()}"
    dirs = [
        [str(_synth(root, experiment, 30, w * 100 + k, url)) for k in range(TRIALS_PER_WRITER)]
        for w in range(WRITERS)
    ]
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(WRITERS + 1), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, d, barrier, out)) for d in dirs]
    for p in procs:
        p.start()
    barrier.wait(120)
    t0 = time.perf_counter()
    _ = [out.get(timeout=900) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join(60)
    from mlflow import MlflowClient

    c = MlflowClient(url)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], max_results=5000)
    ids = [r.data.tags.get("benchflow.trial_id") for r in runs]
    total = WRITERS * TRIALS_PER_WRITER
    points = _points(Path(dirs[0][0]))
    files = sum(1 for f in Path(dirs[0][0]).rglob("*") if f.is_file())
    lost_or_dup = total - len(set(ids)) + (len(ids) - len(set(ids)))
    return [
        Row(
            S,
            f"{WRITERS} processes uploading complete trials at once "
            f"({total} runs, {points} metric points + {files} artifacts each)",
            total / wall,
            "runs/s",
            how=HOW,
        ),
        Row(S, "  same: runs lost or duplicated", lost_or_dup, "runs", "0", lost_or_dup == 0, HOW),
    ]


def rows(ws: Workspace) -> list[Row]:
    root = Path(tempfile.mkdtemp(prefix="bench-tracking-", dir=ws.dir))
    env = dict(os.environ, BENCHFLOW_SERVER_DIR=str(root / "server"))
    env.pop("BENCHFLOW_SERVER_BACKEND_URI", None)
    started = _server("start", "--embedded-db", "--port", "0", env=env)
    if started.returncode != 0:
        raise RuntimeError(f"benchflow server start failed: {started.stderr[-1500:]}")
    try:
        state = json.loads(_server("status", "--json", env=env).stdout)
        url = state["url"]
        out = _trial_upload(url, root / "results")
        out += _search(url)
        out += _writers(url, root / "results")
        return out
    finally:
        _server("stop", env=env)
