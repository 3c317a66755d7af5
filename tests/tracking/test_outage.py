"""Nothing lost, against the team server (PostgreSQL + S3): the server stopped in the
middle of a sweep, an upload killed half-way, corrupt result directories, a trial
process killed with SIGKILL. (tests/test_pipeline.py covers the same promises for
a local store and an unreachable URI; these are about a real server going away.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchflow.analysis.synthetic import SynthTrial, write_trial

from .conftest import SERVER


def _popen(workdir, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "benchflow", *args],
        cwd=workdir.path,
        env=workdir.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: killed whole, like a lost node
    )


def _wait_for(what: str, cond, proc: subprocess.Popen | None = None, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = cond()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before {what}:\n{proc.stdout.read()}")
        time.sleep(0.05)
    raise AssertionError(f"no {what} after {timeout} s")


def _marker(tdir: Path) -> dict:
    try:
        return json.loads((tdir / "upload.json").read_text())
    except (OSError, ValueError):
        return {}


def _trial_runs(server, experiment: str) -> list:
    c = server.client()
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], max_results=1000) if exp else []
    return [r for r in runs if r.data.tags.get("benchflow.role") != "sweep"]


def test_server_stopped_mid_sweep_loses_nothing_and_sync_uploads_once(
    server_workdir, tracking_server, scenario
):
    """A sweep of 3 trials; the server is stopped as soon as the first is uploaded.
    Every trial completes and keeps its files; after the restart one sync uploads
    the rest and a second uploads nothing."""
    results = server_workdir.results / scenario
    sweep = _popen(
        server_workdir,
        "-m",
        "service=noop",
        "seed=1,2,3",
        f"scenario={scenario}",
        *SERVER,
        "duration_s=2",
        "warmup_s=0.2",
        "monitor.interval_s=0.2",
    )
    try:
        _wait_for(
            "first trial uploaded",
            lambda: (
                results.is_dir()
                and any(_marker(d).get("state") == "complete" for d in results.iterdir())
            ),
            sweep,
        )
        tracking_server.stop()
        out, _ = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
        tracking_server.start()  # the session's server: back for everyone after this test
    assert sweep.returncode == 0, out[-3000:]
    assert "run `benchflow sync`" in out

    tdirs = server_workdir.trial_dirs(scenario)
    assert len(tdirs) == 3
    for d in tdirs:  # every trial completed and kept its files
        assert server_workdir.meta(d)["status"] == "finished"
        assert server_workdir.metrics(d)["throughput"]["value"] > 0
        assert (d / "logs" / "events.jsonl").stat().st_size > 0
    before = {d.name: _marker(d).get("state") == "complete" for d in tdirs}
    n_up = sum(before.values())
    assert 1 <= n_up < 3, before  # the outage really hit the sweep

    sync = server_workdir.run("sync", check=True)
    assert f"uploaded {3 - n_up}, already in MLflow {n_up}," in sync.stdout
    again = server_workdir.run("sync", check=True)
    assert "uploaded 0, already in MLflow 3," in again.stdout

    runs = _trial_runs(tracking_server, scenario)
    assert sorted(r.data.tags["benchflow.trial_id"] for r in runs) == sorted(before)
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.tags["benchflow.upload"] == "complete" for r in runs)
    # one sweep parent (created while the server was up) holds all three
    assert len({r.data.tags["mlflow.parentRunId"] for r in runs}) == 1
    by_id = {r.data.tags["benchflow.trial_id"]: r for r in runs}
    c = tracking_server.client()
    for d in tdirs:
        run = by_id[d.name]
        assert run.data.metrics["throughput"] == server_workdir.metrics(d)["throughput"]["value"]
        assert "metrics.json" in {a.path for a in c.list_artifacts(run.info.run_id)}


def test_an_upload_killed_half_way_is_completed_not_duplicated(tracking_server, tmp_path):
    """A real partial upload: the uploading process is SIGKILLed after it created the
    run and while it sends the series; sync completes that same run, each point once."""
    experiment = f"half-{tmp_path.name[-12:]}"
    seconds = 1500  # 5 series x 1500 points: the upload takes long enough to be cut
    tdir = write_trial(
        tmp_path / "results",
        SynthTrial(experiment, experiment, seconds=seconds, tracking_uri=tracking_server.url),
    )
    uploader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from benchflow import tracking; tracking.upload_trial(sys.argv[1])",
            str(tdir),
        ],
        env={**tracking_server.env, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    try:
        started = _wait_for("run created", lambda: _marker(tdir).get("state"), uploader, 120)
    finally:
        uploader.send_signal(signal.SIGKILL)
        uploader.wait()
    assert started == "started", "the upload finished before it could be cut"
    run_id = _marker(tdir)["run_id"]
    c = tracking_server.client()
    cut = c.get_run(run_id)
    assert cut.info.status == "RUNNING" and "benchflow.upload" not in cut.data.tags

    env = {**tracking_server.env, "MLFLOW_DISABLE_TELEMETRY": "true"}
    sync = subprocess.run(
        [sys.executable, "-m", "benchflow", "sync", "--results-dir", str(tmp_path / "results")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sync.returncode == 0, sync.stdout + sync.stderr
    assert "uploaded 1," in sync.stdout
    (run,) = _trial_runs(tracking_server, experiment)
    assert run.info.run_id == run_id  # completed in place
    assert run.info.status == "FINISHED" and run.data.tags["benchflow.upload"] == "complete"
    hist = c.get_metric_history(run_id, "timeseries/throughput")
    assert sorted(m.step for m in hist) == list(range(seconds))  # every point, once
    assert {a.path for a in c.list_artifacts(run_id)} >= {"metrics.json", "meta.json"}


def test_corrupt_result_directories_are_reported_and_the_rest_uploads(
    server_workdir, tracking_server, tmp_path
):
    experiment = f"corrupt-{tmp_path.name[-12:]}"
    good, trunc, no_meta = (
        write_trial(
            server_workdir.results,
            SynthTrial(experiment, experiment, seed=i, tracking_uri=tracking_server.url),
        )
        for i in range(3)
    )
    text = (trunc / "metrics.json").read_text()
    (trunc / "metrics.json").write_text(text[: len(text) // 2])  # cut off by a full disk
    (no_meta / "meta.json").write_text('{"trial_id": "')  # cut off mid-write

    sync = server_workdir.run("sync")
    assert sync.returncode == 0, sync.stdout + sync.stderr
    assert "uploaded 1, already in MLflow 0," in sync.stdout and "corrupt 2," in sync.stdout
    assert f"corrupt, skipped: {experiment}/{trunc.name}: corrupt metrics.json" in sync.stdout
    assert f"corrupt, skipped: {experiment}/{no_meta.name}: unreadable meta.json" in sync.stdout
    assert [
        r.data.tags["benchflow.trial_id"] for r in _trial_runs(tracking_server, experiment)
    ] == [good.name]
    again = server_workdir.run("sync")
    assert "uploaded 0, already in MLflow 1," in again.stdout and "corrupt 2," in again.stdout


def test_a_sigkilled_trial_is_incomplete_in_status_and_sync_never_a_success(
    server_workdir, tracking_server, scenario
):
    results = server_workdir.results / scenario
    proc = _popen(
        server_workdir,
        "-m",
        "service=noop",
        "seed=1",
        f"scenario={scenario}",
        *SERVER,
        "duration_s=60",
        "warmup_s=0",
    )
    try:
        _wait_for(
            "the trial started",
            lambda: results.is_dir() and list(results.glob("*/meta.json")),
            proc,
        )
        time.sleep(1.0)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the job and everything it started
        proc.wait()
    (tdir,) = server_workdir.trial_dirs(scenario)
    assert server_workdir.meta(tdir)["status"] == "running"  # as the kill left it
    assert not (tdir / "metrics.json").exists()
    (sweep_dir,) = (results / "_sweeps").iterdir()

    def totals() -> dict:
        st = server_workdir.run("status", str(sweep_dir), "--json", check=True)
        return json.loads(st.stdout)[0]["totals"]

    t = totals()
    assert t == {**dict.fromkeys(t, 0), "incomplete": 1}
    sync = server_workdir.run("sync", check=True)
    assert "uploaded 0," in sync.stdout and "incomplete 1," in sync.stdout
    assert f"incomplete (the trial process died; uploaded as KILLED): {scenario}/" in sync.stdout
    (run,) = _trial_runs(tracking_server, scenario)
    assert run.info.status == "KILLED"
    assert run.data.tags["benchflow.status"] == "incomplete"
    assert run.data.tags["benchflow.valid"] == "false"
    assert "throughput" not in run.data.metrics
    # now in MLflow as what it is: still incomplete, never done
    t = totals()
    assert t["incomplete"] == 1 and t["done"] == 0 and t["invalid"] == 0
