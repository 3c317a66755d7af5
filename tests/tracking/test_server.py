"""`benchflow server start|stop|status`: a real MLflow server on PostgreSQL, artifacts on
S3 or disk, its logs in one place, trials pointed at it with tracking=server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import psycopg2
from conftest import FAST, REPO

from .conftest import SERVER


def _server(*args: str, env=None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchflow", "server", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


def test_trials_land_in_postgres_and_their_artifacts_in_s3(
    server_workdir, tracking_server, postgres_server, s3_server, scenario
):
    proc = server_workdir.run("service=noop", f"scenario={scenario}", *SERVER, *FAST, check=True)
    assert f"see them in MLflow: {tracking_server.url}" in proc.stdout
    (tdir,) = server_workdir.trial_dirs(scenario)
    run_id = json.loads((tdir / "upload.json").read_text())["run_id"]

    # the run is a row of the server's PostgreSQL database ...
    conn = psycopg2.connect(postgres_server.dsn.replace("dbname=postgres", "dbname=mlflow_tests"))
    with conn, conn.cursor() as cur:
        cur.execute("select status from runs where run_uuid = %s", (run_id,))
        assert cur.fetchall() == [("FINISHED",)]
        cur.execute("select count(*) from metrics where run_uuid = %s", (run_id,))
        assert cur.fetchone()[0] > 10  # summary figures + 1 s series
    conn.close()
    # ... and its files are objects in the S3 bucket (proxied by the server)
    keys = [
        o["Key"]
        for o in s3_server.client()
        .list_objects_v2(Bucket=tracking_server.bucket, MaxKeys=1000)
        .get("Contents", [])
    ]
    mine = [k for k in keys if f"/{run_id}/artifacts/" in k]
    assert any(k.endswith("/metrics.json") for k in mine), keys[:20]
    assert any(k.endswith("/logs/events.jsonl") for k in mine)


def test_status_of_the_running_server(tracking_server):
    proc = tracking_server.cli("status", "--dir", str(tracking_server.dir), "--json")
    state = json.loads(proc.stdout)
    assert state["healthy"] is True and state["status"] == "ready"
    assert state["url"] == tracking_server.url
    assert state["artifacts"] == f"s3://{tracking_server.bucket}"
    assert state["backend"].startswith("postgresql+psycopg2://postgres@127.0.0.1:")
    # the database password is in no file the server wrote
    pw = tracking_server.env["BENCHFLOW_SERVER_BACKEND_URI"].split(":")[2].split("@")[0]
    for f in tracking_server.dir.rglob("*"):
        if f.is_file():
            assert pw not in f.read_text(errors="ignore"), f


def test_embedded_db_server_starts_answers_and_stops(tmp_path, workdir):
    d = tmp_path / "srv"
    env = {**os.environ, "BENCHFLOW_SERVER_DIR": str(d)}
    env.pop("BENCHFLOW_SERVER_BACKEND_URI", None)
    started = _server("start", "--embedded-db", "--port", "0", env=env)
    assert started.returncode == 0, started.stderr[-3000:]
    assert "MLflow tracking server ready: http://127.0.0.1:" in started.stdout
    state = json.loads(_server("status", "--json", env=env).stdout)
    assert state["healthy"] and state["embedded_db"] and state["status"] == "ready"
    try:
        # a second server on the same directory is refused while the first runs
        again = _server("start", "--embedded-db", "--port", "0", env=env)
        assert again.returncode == 1 and "already runs" in again.stderr

        workdir.env["MLFLOW_TRACKING_URI"] = state["url"]
        workdir.run("service=sleep", *SERVER, *FAST, check=True)
        (tdir,) = workdir.trial_dirs()
        run_id = json.loads((tdir / "upload.json").read_text())["run_id"]
        # local artifacts under DIR/artifacts; every log under DIR/logs, as JSON lines
        assert list((d / "artifacts").glob(f"*/{run_id}/artifacts/metrics.json"))
        logs = d / "logs"
        for name in ("supervisor.jsonl", "mlflow.jsonl", "postgres.jsonl"):
            records = [json.loads(x) for x in (logs / name).read_text().splitlines()]
            assert records, name
            assert all(
                {"timestamp", "level", "trial_id", "component", "message"} <= r.keys()
                for r in records
            )
        mlflow_log = [json.loads(x) for x in (logs / "mlflow.jsonl").read_text().splitlines()]
        assert any("/api/2.0/mlflow/runs/create" in r["message"] for r in mlflow_log)
        assert {r["component"] for r in mlflow_log} == {"sut.mlflow"}
    finally:
        stopped = _server("stop", env=env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    after = _server("status", env=env)
    assert after.returncode == 3 and after.stdout.startswith("stopped")
    for pid in (state["pid"], state["mlflow_pid"]):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def test_bad_server_options_are_refused_with_a_clear_error(tmp_path):
    env = {**os.environ, "BENCHFLOW_SERVER_DIR": str(tmp_path)}
    env.pop("BENCHFLOW_SERVER_BACKEND_URI", None)
    none = _server("start", env=env)
    assert none.returncode == 2 and "--backend-store-uri" in none.stderr
    both = _server("start", "--embedded-db", "--backend-store-uri", "postgresql://x@h/db", env=env)
    assert both.returncode == 2 and "not both" in both.stderr
    env.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)
    auth = _server("start", "--embedded-db", "--auth", env=env)
    assert auth.returncode == 2 and "MLFLOW_AUTH_ADMIN_PASSWORD" in auth.stderr
