"""The trial pipeline through its real entry points: runs, sweeps, MLflow, failures, sync."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import FAST


@pytest.fixture
def sleep_server():
    """A sleep server started outside benchflow (mode=server points at it)."""
    from benchflow.sut.servers import free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "drivers.calibration.sleep_server",
            "--port",
            str(port),
            "--service-ms",
            "1",
        ]
    )
    from benchflow.sut.servers import http_ready

    deadline = time.time() + 10
    while not http_ready("127.0.0.1", port) and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(5)


def test_single_trial_writes_files_then_mlflow(workdir):
    proc = workdir.run("service=noop", *FAST, check=True)
    assert "see them in MLflow: mlflow ui --backend-store-uri sqlite:///" in proc.stdout
    (tdir,) = workdir.trial_dirs()
    for f in (
        "metrics.json",
        "metrics.csv",
        "meta.json",
        "effective_config.yaml",
        "timeseries.csv",
        "system.csv",
        "histograms.json",
        "logs/events.jsonl",
        "upload.json",
    ):
        assert (tdir / f).exists(), f
    m, meta = workdir.metrics(tdir), workdir.meta(tdir)
    assert meta["status"] == "finished" and meta["trial_id"] == m["trial_id"] == tdir.name
    assert m["service"] == "noop" and m["component"] == "calibration"
    assert m["throughput"]["unit"] == "requests_per_s" and m["throughput"]["value"] > 1000
    assert m["latency_ms"]["p50"] <= m["latency_ms"]["p99"] <= m["latency_ms"]["max"]
    assert m["validity"]["valid"] is True
    for key in ("git", "host", "versions", "slurm", "container_digest"):
        assert key in meta["lineage"]
    events = [json.loads(x) for x in (tdir / "logs/events.jsonl").read_text().splitlines()]
    assert all(
        {"timestamp", "level", "trial_id", "component", "message"} <= e.keys() for e in events
    )
    assert {e["trial_id"] for e in events} == {tdir.name}

    runs = workdir.runs()
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["status"] == "FINISHED"
    assert run["tags.benchflow.trial_id"] == tdir.name
    assert run["tags.benchflow.valid"] == "true"
    assert run["params.service.driver"] == "noop"
    assert run["metrics.latency_ms.p99"] == m["latency_ms"]["p99"]
    assert run["metrics.throughput"] == m["throughput"]["value"]


def test_sweep_has_a_parent_run_and_a_child_per_trial(workdir):
    proc = workdir.run("-m", "service=faiss,fileio", "concurrency=1,4", *FAST, timeout=600)
    assert proc.returncode == 0, workdir.explain(proc)
    runs = workdir.runs()
    parents = runs[runs["tags.benchflow.role"] == "sweep"]
    children = runs[runs["tags.benchflow.role"] != "sweep"]
    assert len(parents) == 1 and len(children) == 4
    parent_id = parents.run_id.iloc[0]
    assert (children["tags.mlflow.parentRunId"] == parent_id).all()
    assert set(children["params.service.name"]) == {"faiss", "fileio"}
    assert set(children["params.concurrency"]) == {"1", "4"}
    assert (children["status"] == "FINISHED").all()
    assert children["metrics.quality.recall_at_10"].notna().sum() == 2
    assert (children["tags.benchflow.sweep_id"] == parents["tags.benchflow.sweep_id"].iloc[0]).all()
    assert parents["metrics.trials.finished"].iloc[0] == 4

    import mlflow

    client = mlflow.MlflowClient(workdir.tracking_uri)
    child = children.run_id.iloc[0]
    series = client.get_metric_history(child, "timeseries/throughput")
    assert [m.step for m in series] == list(range(len(series))) and series
    assert client.get_metric_history(child, "system/host.cpu_util")
    arts = {a.path for a in client.list_artifacts(child)}
    assert {"metrics.json", "meta.json", "effective_config.yaml", "logs"} <= arts
    assert {a.path for a in client.list_artifacts(parent_id)} >= {"summary.csv", "summary.md"}


def test_repetitions_are_separate_trials_sharing_a_config_hash(workdir):
    workdir.run("service=noop", "repetitions=3", *FAST, check=True)
    metas = [workdir.meta(d) for d in workdir.trial_dirs()]
    assert len(metas) == 3
    assert len({m["trial_id"] for m in metas}) == 3
    assert len({m["config_hash"] for m in metas}) == 1
    assert sorted(m["repetition"] for m in metas) == [0, 1, 2]
    workdir.run("service=noop", "concurrency=2", *FAST, check=True)
    hashes = {workdir.meta(d)["config_hash"] for d in workdir.trial_dirs()}
    assert len(hashes) == 2


def test_a_failing_trial_is_a_failed_run_and_the_sweep_goes_on(workdir, sleep_server):
    # The first endpoint answers; nobody listens on the others: their setup fails.
    proc = workdir.run(
        "-m",
        "service=sleep",
        "service.mode=server",
        f"service.endpoint=http://127.0.0.1:9,{sleep_server},http://127.0.0.1:1",
        *FAST,
    )
    assert proc.returncode == 1, "the multirun exits non-zero at the end"
    assert "1 finished, 2 failed" in proc.stdout
    runs = workdir.runs()
    trials = runs[runs["tags.benchflow.role"] != "sweep"]
    failed = trials[trials["status"] == "FAILED"]
    assert len(failed) == 2 and len(trials) == 3
    assert set(failed["tags.benchflow.error_class"]) == {"connection_refused"}
    assert (trials[trials["status"] == "FINISHED"]["params.service.endpoint"] == sleep_server).all()
    import mlflow

    client = mlflow.MlflowClient(workdir.tracking_uri)
    arts = [a.path for a in client.list_artifacts(failed.run_id.iloc[0], "logs")]
    assert "logs/traceback.txt" in arts
    assert runs[runs["tags.benchflow.role"] == "sweep"]["status"].iloc[0] == "FAILED"


def test_unreachable_tracking_keeps_files_and_sync_uploads_once(workdir):
    dead = "http://127.0.0.1:9"  # discard port: connection refused
    proc = workdir.run(
        "service=noop",
        "tracking=server",
        f"tracking.uri={dead}",
        "tracking.http_retries=0",
        "tracking.http_timeout_s=2",
        *FAST,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "run `benchflow sync`" in proc.stdout + proc.stderr
    (tdir,) = workdir.trial_dirs()
    assert workdir.meta(tdir)["status"] == "finished"
    assert not (tdir / "upload.json").exists()

    sync = workdir.run("sync", "--tracking-uri", workdir.tracking_uri, check=True)
    assert "uploaded 1," in sync.stdout
    again = workdir.run("sync", "--tracking-uri", workdir.tracking_uri, check=True)
    assert "uploaded 0, already in MLflow 1" in again.stdout
    runs = workdir.runs()
    assert len(runs) == 1 and runs.iloc[0]["tags.benchflow.trial_id"] == tdir.name
    assert runs.iloc[0]["metrics.throughput"] == workdir.metrics(tdir)["throughput"]["value"]


def test_a_half_uploaded_trial_is_completed_not_duplicated(workdir):
    workdir.run("service=noop", "tracking.upload=false", *FAST, check=True)
    (tdir,) = workdir.trial_dirs()
    assert workdir.runs().empty
    # Simulate an upload cut off after the run was created.
    import mlflow

    client = mlflow.MlflowClient(workdir.tracking_uri)
    exp = client.create_experiment("adhoc")
    run = client.create_run(exp, tags={"benchflow.trial_id": tdir.name})
    (tdir / "upload.json").write_text(
        json.dumps(
            {"run_id": run.info.run_id, "tracking_uri": workdir.tracking_uri, "state": "started"}
        )
    )
    workdir.run("sync", "--tracking-uri", workdir.tracking_uri, check=True)
    runs = workdir.runs()
    assert len(runs) == 1 and runs.iloc[0]["run_id"] == run.info.run_id
    assert runs.iloc[0]["status"] == "FINISHED"
    assert runs.iloc[0]["tags.benchflow.upload"] == "complete"


def test_a_killed_trial_is_reported_incomplete_never_successful(workdir):
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchflow", "service=noop", "duration_s=30", "warmup_s=0"],
        cwd=workdir.path,
        env=workdir.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        dirs = (
            list((workdir.results / "adhoc").glob("*/meta.json"))
            if (workdir.results / "adhoc").exists()
            else []
        )
        if dirs:
            break
        time.sleep(0.2)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (tdir,) = workdir.trial_dirs()
    assert workdir.meta(tdir)["status"] == "running"
    out = workdir.run("sync", check=True).stdout
    assert "incomplete 1" in out
    runs = workdir.runs()
    assert runs.iloc[0]["status"] == "KILLED"
    assert runs.iloc[0]["tags.benchflow.valid"] == "false"


def test_corrupt_results_are_reported_and_the_rest_uploads(workdir):
    workdir.run("-m", "service=noop", "seed=1,2", "tracking.upload=false", *FAST, check=True)
    a, _b = workdir.trial_dirs()
    (a / "metrics.json").write_text('{"trial_id": "trunc')
    out = workdir.run("sync").stdout
    assert "uploaded 1," in out and "corrupt 1" in out and a.name in out
    assert len(workdir.runs().query("`tags.benchflow.role` != 'sweep'")) == 1


def test_clients_merge_their_histograms(workdir):
    workdir.run("service=noop", "clients=2", "concurrency=2", *FAST, check=True)
    (tdir,) = workdir.trial_dirs()
    m = workdir.metrics(tdir)
    assert m["load"]["clients"] == 2 and m["validity"]["valid"]
    hist = json.loads((tdir / "histograms.json").read_text())["latency"]
    assert hist["count"] == m["latency_ms"]["count"] == m["load"]["completed"]


def test_open_loop_reports_target_and_achieved_rate(workdir):
    workdir.run(
        "service=sleep",
        "service.transport=inprocess",
        "service.service_ms=1",
        "rate=200",
        "concurrency=8",
        "arrival=constant",
        "duration_s=2",
        "warmup_s=0.2",
        check=True,
    )
    (tdir,) = workdir.trial_dirs()
    m = workdir.metrics(tdir)
    assert m["load"]["mode"] == "open" and m["load"]["target_rate"] == 200
    assert abs(m["load"]["achieved_rate"] / 200 - 1) < 0.05
    assert m["latency_ms"]["p50"] >= 1.0
    assert m["load"]["dispatch_lag_ms"]["count"] == m["load"]["completed"]


def test_unreachable_rate_marks_the_trial_invalid(workdir):
    # One worker, 5 ms per request: at most 200/s, far from 1000/s.
    workdir.run(
        "service=sleep",
        "service.transport=inprocess",
        "rate=1000",
        "concurrency=1",
        "duration_s=1",
        "warmup_s=0",
        check=True,
    )
    (tdir,) = workdir.trial_dirs()
    m = workdir.metrics(tdir)
    assert m["validity"]["valid"] is False
    assert any("short of the target rate" in r for r in m["validity"]["reasons"])
    # Latency counts from the intended time, so the backlog shows.
    assert m["latency_ms"]["p99"] > 100
    assert workdir.runs().iloc[0]["tags.benchflow.valid"] == "false"


def test_too_few_samples_marks_the_trial_invalid(workdir):
    workdir.run(
        "service=sleep", "service.transport=inprocess", "requests=20", "warmup_s=0", check=True
    )
    m = workdir.metrics(workdir.trial_dirs()[0])
    assert m["latency_ms"]["count"] == 20 and m["latency_ms"]["p99"] is None
    assert m["validity"]["valid"] is False and "p99 needs" in m["validity"]["reasons"][0]


def test_launched_server_is_monitored_and_torn_down(workdir):
    workdir.run("service=sleep", "concurrency=2", *FAST, check=True)
    (tdir,) = workdir.trial_dirs()
    m = workdir.metrics(tdir)
    assert m["resource"]["scope"] == "sut_process" and m["resource"]["ram_mb"] > 1
    banner = (tdir / "logs" / "sleep_server.out").read_text()
    port = banner.split("http://127.0.0.1:")[1].split()[0]
    # Only this trial's server (other sleep servers may run on a shared machine).
    ps = subprocess.run(["pgrep", "-f", f"sleep_server .*--port {port} "], capture_output=True)
    assert ps.returncode == 1, "the sleep server must be gone"


def test_credentials_in_a_tracking_uri_never_reach_files(workdir):
    secret = "s3cr3t-Value-123"
    workdir.run(
        "service=noop",
        "tracking=server",
        f"tracking.uri=http://bob:{secret}@127.0.0.1:9",
        "tracking.http_retries=0",
        *FAST,
        check=True,
    )
    (tdir,) = workdir.trial_dirs()
    written = [f for f in tdir.rglob("*") if f.is_file()]
    assert written
    for f in written:
        assert secret not in f.read_text(errors="ignore"), f


def test_drivers_command_lists_installed_drivers(workdir):
    out = workdir.run("drivers", "--json", check=True).stdout
    names = {d["name"]: d for d in json.loads(out)}
    assert {"noop", "sleep", "fileio", "faiss"} <= names.keys()
    assert names["faiss"]["family"] == "vectordb" and names["faiss"]["deprecated"] is False


def test_lineage_plugin_tags_runs_started_outside_benchflow(workdir):
    code = (
        "import mlflow\n"
        "with mlflow.start_run() as r: pass\n"
        "print(dict(mlflow.get_run(r.info.run_id).data.tags))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=workdir.path,
        env=workdir.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "'benchflow.version'" in out and "'benchflow.host'" in out


def test_summary_in_dataframe(workdir):
    workdir.run("-m", "service=noop", "concurrency=1,2", *FAST, check=True)
    df = workdir.runs()
    assert isinstance(df, pd.DataFrame)
    kids = df[df["tags.benchflow.role"] != "sweep"]
    assert kids["metrics.latency_ms.p99"].notna().all()
