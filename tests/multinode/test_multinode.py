"""A real three-node Slurm cluster (tests/fixtures/slurm.py: each slurmd in network,
UTS and mount namespaces of its own, on a private bridge): nodes with their own
names and addresses, a server job on one node serving clients on the two others,
a shard whose node dies, a GPU and a CPU service placed on the nodes that offer
what they ask, and ``benchflow stop`` leaving nothing behind on any node."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import FAST

from drivers.calibration.sleep import server_state

CD = str(Path(__file__).resolve().parents[1] / "slurm" / "conf")
SITE = ["--config-dir", CD, "site=local"]


@pytest.fixture
def mwd(workdir, slurm_multinode, tmp_path):
    """A workdir whose commands talk to the three-node cluster."""
    workdir.env["SLURM_CONF"] = slurm_multinode["SLURM_CONF"]
    workdir.env["BENCHFLOW_SERVERS_DIR"] = str(tmp_path / "servers")
    return workdir


def _slurm(env, *cmd: str, timeout: float = 60) -> str:
    return subprocess.run(
        cmd, env=env, capture_output=True, text=True, check=True, timeout=timeout
    ).stdout


def _node_pids(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _cmdline(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def _server_node(start_stdout: str) -> str:
    return re.search(r"\(Slurm job \S+ on (\S+)\)", start_stdout).group(1)


def _four_clients_on_two_nodes(mwd, server_id: str, *more: str) -> None:
    """One trial against a server job: 4 clients as srun tasks over 2 nodes."""
    proc = mwd.run(
        "-m",
        *SITE,
        "service=sleep",
        f"service.server={server_id}",
        "clients=4",
        "concurrency=8",
        "client_launch=srun",
        "++service.resources.nodes=2",
        "warmup_s=0.5",
        "monitor.interval_s=0.5",
        *more,
        timeout=300,
    )
    assert proc.returncode == 0, mwd.explain(proc)


def _sweep_dir(wd) -> Path:
    return sorted((wd.results / "adhoc" / "_sweeps").iterdir())[-1]


def test_three_nodes_with_their_own_names_and_addresses(slurm_multinode):
    env = {"SLURM_CONF": slurm_multinode["SLURM_CONF"], "PATH": "/usr/bin:/bin:/usr/sbin"}
    names = slurm_multinode["SLURM_NODES"].split(",")
    addrs = slurm_multinode["SLURM_NODE_ADDRS"].split(",")
    assert len(set(names)) == 3 and len(set(addrs)) == 3
    sinfo = _slurm(env, "sinfo", "-h", "-N", "-p", "debug", "-o", "%N %T %G")
    rows = [ln.split() for ln in sinfo.splitlines()]
    assert sorted(r[0] for r in rows) == sorted(names)
    assert all(r[1] == "idle" for r in rows), sinfo
    assert [r[2] for r in sorted(rows)] == ["gpu:2", "(null)", "(null)"]  # node 1 has the GPUs
    hostnames = _slurm(env, "srun", "-N3", "hostname").split()
    assert sorted(hostnames) == sorted(names)
    own = _slurm(env, "srun", "-N3", "--label", "hostname", "-I").splitlines()
    assert sorted(ln.split(":", 1)[1].split()[0] for ln in own) == sorted(addrs)
    # node 2 reaches node 3 by name, on the private link
    reach = _slurm(env, "srun", "-N1", "-w", names[1], "getent", "hosts", names[2])
    assert reach.split()[0] == addrs[2]


def test_server_on_one_node_serves_clients_on_two_others_into_mlflow(mwd, slurm_multinode):
    """`benchflow servers start` puts the SUT on a node and publishes that node's
    address; the trial's four clients run as srun tasks on the two other nodes (its
    job keeps off the server's node), reach the server over the private link, and
    their histograms merge into one result whose lineage names every shard's node."""
    names = slurm_multinode["SLURM_NODES"].split(",")
    start = mwd.run(
        "servers", "start", "sleep", "service.service_ms=2", "--timeout", "120", check=True
    )
    server_id = start.stdout.split()[0]
    endpoint = start.stdout.split(" ready at ")[1].split()[0]
    server_node = _server_node(start.stdout)
    assert server_node in names
    addr = slurm_multinode["SLURM_NODE_ADDRS"].split(",")[names.index(server_node)]
    assert endpoint.startswith(f"http://{addr}:"), endpoint  # the node's, not a name
    try:
        _four_clients_on_two_nodes(mwd, server_id, "duration_s=3")
    finally:
        mwd.run("servers", "stop", server_id)
    (tdir,) = mwd.trial_dirs()
    meta, m = mwd.meta(tdir), mwd.metrics(tdir)
    assert meta["status"] == "finished" and m["validity"]["valid"], m["validity"]
    slurm = meta["lineage"]["slurm"]
    shards = meta["lineage"]["shards"]
    hosts = [s["host"] for s in shards]
    others = sorted(set(names) - {server_node})
    assert sorted(set(hosts)) == others and len(hosts) == 4, hosts  # 2 tasks per node
    assert meta["lineage"]["host"] in others  # the coordinator too
    assert all(s["state"] == "ok" for s in shards)
    assert m["extra"]["clients.hosts"] == 2 and m["extra"]["clients.failed"] == 0
    # merged histograms: the shards' own counts add up to the result's
    assert sum(s["requests"] for s in shards) == m["latency_ms"]["count"]
    assert all(s["p99_ms"] >= 2 for s in shards)  # the 2 ms service time, at least
    assert m["latency_ms"]["p50"] >= 2
    assert all(s["clock_error_ms"] < 3 for s in shards), shards  # one machine's clock
    show = _slurm(mwd.env, "scontrol", "show", "job", "-o", slurm["job_id"])
    assert f"ExcNodeList={server_node}" in show, show
    runs = mwd.runs()
    run = runs[runs["tags.benchflow.trial_id"] == tdir.name].iloc[0]
    assert run["tags.slurm.job_id"] == slurm["job_id"]
    assert run["tags.slurm.nodelist"] == slurm["nodelist"]
    assert run["tags.benchflow.shard_hosts"].split(",") == hosts
    assert run["params.service.endpoint"] == endpoint
    for i in range(4):
        assert run[f"metrics.extra.clients.{i}.requests"] == shards[i]["requests"]


def test_a_shard_whose_node_dies_is_counted_and_judged_by_the_allowed_share(mwd, slurm_multinode):
    """Mid-trial (the server has served 2,000 requests of the trial's load), every shard
    process on one node is killed (the node "dies" for the trial): the other node's
    shards finish, the trial records the two failed shards and the half of the load
    they carried; with validity.max_lost_client_share=0.5 it stays valid, and the loss
    is in its figures and lineage."""
    names = slurm_multinode["SLURM_NODES"].split(",")
    start = mwd.run(
        "servers", "start", "sleep", "service.service_ms=2", "--timeout", "120", check=True
    )
    server_id = start.stdout.split()[0]
    server_node = _server_node(start.stdout)
    endpoint = start.stdout.split(" ready at ")[1].split()[0]
    host, port = endpoint.rsplit("//", 1)[1].split(":")
    killed: dict[str, list[int]] = {}

    def kill_one_node():
        # The load starts only once every shard has said it is ready (host and all): wait
        # for the server to have served a good share of it, then kill one node's shards.
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline and not killed:
            try:
                served = server_state(host, int(port))["served"]
            except OSError:
                served = 0
            by_node = {
                n: [p for p in _node_pids(n) if "benchflow.load.shard" in _cmdline(p)[1:3]]
                for n in names
                if n != server_node
            }
            alive = {n: ps for n, ps in by_node.items() if ps}
            if served >= 2000 and len(alive) == 2:
                victim = sorted(alive)[-1]
                for pid in alive[victim]:
                    psutil.Process(pid).kill()
                killed[victim] = alive[victim]
            time.sleep(0.2)

    killer = threading.Thread(target=kill_one_node, daemon=True)
    killer.start()
    try:
        _four_clients_on_two_nodes(
            mwd,
            server_id,
            "duration_s=6",
            "validity.max_lost_client_share=0.5",
            # losing half the load mid-window moves the per-second throughput on purpose:
            # the trend rule is not what this test judges (it would flag the kill itself)
            "validity.max_throughput_trend=10",
            "validity.max_latency_trend=10",
        )
    finally:
        killer.join(5)
        mwd.run("servers", "stop", server_id)
    assert killed, "the shards never ran on two nodes"
    (victim,) = killed
    (tdir,) = mwd.trial_dirs()
    meta, m = mwd.meta(tdir), mwd.metrics(tdir)
    assert meta["status"] == "finished"
    assert m["extra"]["clients.failed"] == 2 and m["extra"]["clients.lost_share"] == 0.5
    assert m["validity"]["valid"], m["validity"]  # 50% lost, 50% allowed
    shards = meta["lineage"]["shards"]
    dead = [s for s in shards if s["state"] == "failed"]
    assert len(dead) == 2 and {s["host"] for s in dead} == {victim}
    assert all(s["reason"] for s in dead)
    live = [s for s in shards if s["state"] == "ok"]
    assert sum(s["requests"] for s in live) == m["latency_ms"]["count"] > 0


def test_gpu_and_cpu_services_land_on_nodes_that_offer_what_they_ask(mwd, slurm_multinode):
    """One sweep, a GPU service (gres gpu:1) and a CPU one, twice each: every GPU trial
    runs on the one node with GPUs, read back from sacct; the plan names the nodes
    each job can land on."""
    gpu_node = slurm_multinode["SLURM_NODES"].split(",")[0]
    overrides = ["-m", *SITE, "service=sleep_gpu,noop_small", "repetitions=2", *FAST]
    plan = mwd.run("plan", *overrides, check=True).stdout
    assert f"sleep_gpu: {gpu_node}" in plan, plan
    proc = mwd.run(*overrides, timeout=400)
    assert proc.returncode == 0, mwd.explain(proc)
    trials = [mwd.meta(d) for d in mwd.trial_dirs()]
    assert len(trials) == 4 and all(t["status"] == "finished" for t in trials)
    for t in trials:
        job = t["lineage"]["slurm"]["job_id"]
        assert t["lineage"]["slurm"]["array_job_id"] and "array_task_id" in t["lineage"]["slurm"]
        # (a task's job id also names its array when it is the first task: set of rows)
        out = _slurm(mwd.env, "sacct", "-n", "-X", "-P", "-o", "NodeList", "-j", job)
        nodes = set(out.split())
        if t["service"] == "sleep_gpu":
            assert nodes == {gpu_node}, (job, out)
            assert t["lineage"]["host"] == gpu_node
        else:
            assert nodes <= set(slurm_multinode["SLURM_NODES"].split(",")), out


def test_stop_cancels_a_sweep_on_every_node_and_leaves_no_process(mwd, slurm_multinode):
    """Three long trials, one per node (exclusive jobs); `benchflow stop` cancels them
    all, and no benchflow process is left in any node's namespace."""
    names = slurm_multinode["SLURM_NODES"].split(",")
    sweep = subprocess.Popen(
        [sys.executable, "-m", "benchflow", "-m", *SITE, "service=noop_small",
         "concurrency=1,2,3", "duration_s=150", "warmup_s=0", "max_retries=0",
         "++hydra.launcher.additional_parameters.exclusive=true"],
        cwd=mwd.path, env=mwd.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        running: set[str] = set()
        while time.monotonic() < deadline and len(running) < 3:
            out = _slurm(mwd.env, "squeue", "-h", "-t", "R", "-o", "%N")
            running = {n for n in out.split() if n}
            time.sleep(0.5)
        assert running == set(names), f"jobs did not spread over the three nodes: {running}"
        stop = mwd.run("stop", _sweep_dir(mwd).name, check=True)
        assert "cancelled 3 job(s)" in stop.stdout, stop.stdout
        sweep.wait(180)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    deadline = time.monotonic() + 60
    left: dict[str, list] = {}
    while time.monotonic() < deadline:
        left = {
            n: [c for p in _node_pids(n) if (c := _cmdline(p)) and "slurmd" not in c[0]]
            for n in names
        }
        if not any(left.values()):
            break
        time.sleep(0.5)
    assert not any(left.values()), json.dumps(left)[:2000]
    # A cancelled job stays in CG (completing) until its slurmd reports the step's end,
    # which on a loaded machine trails the processes' exit by seconds; the claim is
    # that the queue empties, not that it is empty the instant the processes are gone.
    deadline = time.monotonic() + 60
    queue = _slurm(mwd.env, "squeue", "-h").strip()
    while queue and time.monotonic() < deadline:
        time.sleep(0.5)
        queue = _slurm(mwd.env, "squeue", "-h").strip()
    assert queue == "", queue


def test_interleaved_sweep_is_submitted_in_its_order_in_arrays_no_larger_than_allowed(mwd):
    """Two configurations x 3 repetitions, interleaved, with at most 2 tasks per array
    (``hydra.launcher.max_array_size=2``, as a site's MaxArraySize would cut a
    10,000-trial sweep): three arrays, and (array job, task) order is the sweep's
    order — repetition 0 of both configurations, then 1, then 2."""
    proc = mwd.run(
        "-m",
        *SITE,
        "service=noop_small",
        "concurrency=1,2",
        "repetitions=3",
        "order=interleaved",
        "hydra.launcher.max_array_size=2",
        *FAST,
        timeout=400,
    )
    assert proc.returncode == 0, mwd.explain(proc)
    assert "as 3 arrays of <= 2" in proc.stderr + proc.stdout
    rows = []
    for d in mwd.trial_dirs():
        meta = mwd.meta(d)
        slurm = meta["lineage"]["slurm"]
        conc = next(o for o in meta["overrides"] if o.startswith("concurrency="))
        key = (int(slurm["array_job_id"]), int(slurm["array_task_id"]))
        rows.append((key, meta["repetition"], conc))
    rows.sort()
    assert len({k[0] for k, _, _ in rows}) == 3, rows
    assert all(k[1] in (0, 1) for k, _, _ in rows), rows
    assert [(r, c) for _, r, c in rows] == [
        (rep, f"concurrency={c}") for rep in range(3) for c in (1, 2)
    ], rows
