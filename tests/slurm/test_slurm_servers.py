"""Servers as jobs on the test cluster: start, ps, check, a client sweep against the
endpoint, stop; a server that fails to start leaves nothing behind."""

from __future__ import annotations

import subprocess

import pytest
from conftest import FAST


@pytest.fixture
def swd(workdir, slurm_cluster, tmp_path):
    workdir.env["SLURM_CONF"] = slurm_cluster["SLURM_CONF"]
    workdir.env["BENCHFLOW_SERVERS_DIR"] = str(tmp_path / "servers")
    return workdir


def _squeue(swd) -> str:
    return subprocess.run(
        ["squeue", "-h", "-o", "%i %j"], env=swd.env, capture_output=True, text=True, check=True
    ).stdout


def test_server_job_serves_a_client_sweep_and_stops_clean(swd, tmp_path):
    from benchflow.sut.servers import http_ready

    start = swd.run(
        "servers",
        "start",
        "sleep",
        "service.service_ms=1",
        "--host",
        "127.0.0.1",
        "--timeout",
        "120",
        check=True,
    )
    server_id = start.stdout.split()[0]
    endpoint = start.stdout.split(" ready at ")[1].split()[0]
    assert endpoint.startswith("http://127.0.0.1:")
    ps = swd.run("servers", "ps", check=True).stdout
    assert server_id in ps and "RUNNING" in ps and endpoint in ps
    assert swd.run("servers", "check", server_id, "--timeout", "10").returncode == 0

    swd.run(
        "-m", "service=sleep", f"service.server={server_id}", "concurrency=1,2", *FAST, check=True
    )
    for tdir in swd.trial_dirs():
        meta = swd.meta(tdir)
        assert meta["status"] == "finished"
        assert f"service.server={server_id}" in meta["overrides"]
        assert swd.metrics(tdir)["throughput"]["value"] > 0
    runs = swd.runs()
    trials = runs[runs["tags.benchflow.trial_id"].notna()]
    assert set(trials["params.service.endpoint"]) == {endpoint}
    assert set(trials["params.service.mode"]) == {"server"}

    stop = swd.run("servers", "stop", server_id, check=True)
    assert "stopped" in stop.stdout
    assert "no servers" in swd.run("servers", "ps", check=True).stdout
    host, port = endpoint.rsplit("//", 1)[1].split(":")
    assert not http_ready(host, int(port)), "the server process is gone"
    left = [p.name for p in (tmp_path / "servers").iterdir() if p.name not in ("logs", ".submitit")]
    assert left == [], left
    assert "bf-server" not in _squeue(swd)
    gone = swd.run("-m", "service=sleep", f"service.server={server_id}", *FAST)
    assert gone.returncode == 2 and "no ready server" in gone.stderr


def test_a_server_that_fails_to_start_leaves_nothing_behind(swd, tmp_path):
    proc = swd.run(
        "servers",
        "start",
        "sleep",
        "service.ready_timeout_s=0.001",
        "--host",
        "127.0.0.1",
        "--timeout",
        "60",
    )
    assert proc.returncode == 1 and "FAILED" in proc.stderr
    assert "no servers" in swd.run("servers", "ps", check=True).stdout
    left = [p.name for p in (tmp_path / "servers").iterdir() if p.name not in ("logs", ".submitit")]
    assert left == [], left
    assert "bf-server" not in _squeue(swd)
