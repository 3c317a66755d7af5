"""clients > 1 as Slurm tasks (client_launch=srun) on the test cluster: one shard per
task, histograms merged, clock offsets reported, a killed shard counted while the
other finishes."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

CD = str(Path(__file__).parent / "conf")


@pytest.fixture
def swd(workdir, slurm_cluster):
    workdir.env["SLURM_CONF"] = slurm_cluster["SLURM_CONF"]
    return workdir


def _shards(slurm_conf: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = p.info["cmdline"] or []
            if cmd[1:3] == ["-m", "benchflow.load.shard"] and (  # the shard, not srun
                p.environ().get("SLURM_CONF") == slurm_conf
            ):
                out.append(p)
        except psutil.Error:
            continue
    return out


def test_clients_run_as_srun_tasks_merge_and_survive_a_failed_shard(swd, slurm_cluster):
    killed: list[int] = []

    def kill_one():  # once both shards measure, kill one of them
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            shards = _shards(slurm_cluster["SLURM_CONF"])
            if len(shards) == 2 and time.time() - min(p.create_time() for p in shards) > 3:
                shards[1].kill()
                killed.append(shards[1].pid)
            time.sleep(0.2)

    killer = threading.Thread(target=kill_one, daemon=True)
    killer.start()
    swd.run(
        "-m",
        "--config-dir",
        CD,
        "site=local",
        "service=sleep",
        "clients=2",
        "concurrency=4",
        "client_launch=srun",
        "duration_s=5",
        "warmup_s=0.5",
        "monitor.interval_s=0.5",
        "validity.max_error_rate=1",
        check=False,
        timeout=300,
    )
    killer.join(5)
    assert killed, "the two shards never ran"
    (tdir,) = swd.trial_dirs()
    m, meta = swd.metrics(tdir), swd.meta(tdir)
    assert meta["status"] == "finished"
    assert m["config"]["clients"] == 2
    assert m["extra"]["clients.failed"] == 1
    assert any("client shard(s) failed" in r for r in m["validity"]["reasons"])
    assert m["extra"]["clients.hosts"] == 1
    assert abs(m["extra"]["clients.clock_offset_ms_max"]) < 50  # one host: one clock
    assert m["throughput"]["value"] > 0  # the surviving shard's requests
    job = meta["lineage"]["slurm"]["job_id"]
    steps = subprocess.run(
        ["sacct", "-n", "-P", "-o", "JobID,NTasks", "-j", job],
        env=swd.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"{job}.1|2" in steps, steps  # the shard step: 2 tasks
    show = subprocess.run(
        ["scontrol", "show", "job", "-o", job],
        env=swd.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "NumTasks=2" in show
    runs = swd.runs()
    run = runs[runs["tags.benchflow.trial_id"] == tdir.name].iloc[0]
    assert run["metrics.extra.clients.failed"] == 1
    assert json.loads((tdir / "meta.json").read_text())["lineage"]["slurm"]["partition"]
