"""Many nodes (issue 16), on the three-node test cluster (scripts/slurm_cluster.py
--nodes 3, started and stopped here): client scale-out over 1, 2 and 3 nodes, the
merged p99 of clients on three nodes against the same load from one node, and the
time to queue 100 and 1,000 trials (and to read their status).

The three "nodes" are namespaces of one 2-core machine: they share its CPUs, so
scale-out here measures the harness's cost of spreading clients (coordination,
clock probes, merging), not a cluster's added capacity.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Row, Workspace, check

S = "multinode"
ORDER = 61
REPO = Path(__file__).resolve().parents[1]
CD = str(REPO / "tests" / "slurm" / "conf")
SITE = ["--config-dir", CD, "site=local"]


def rows(ws: Workspace) -> list[Row]:
    if os.geteuid() != 0 or not all(shutil.which(x) for x in ("slurmctld", "ip", "nsenter")):
        return [Row(S, "3-node test cluster", None, "", "runs", False, "needs root, slurm, ip")]
    cluster = Path(tempfile.mkdtemp(prefix="benchflow-multinode-bench-"))
    os.chmod(cluster, 0o755)
    script = [sys.executable, str(REPO / "scripts" / "slurm_cluster.py")]
    t0 = time.perf_counter()
    started = subprocess.run(
        [*script, "start", str(cluster), "--nodes", "3"], capture_output=True, text=True
    )
    if started.returncode != 0:
        return [Row(S, "3-node test cluster", None, "", "starts", False, started.stderr[-300:])]
    up = time.perf_counter() - t0
    info = json.loads(started.stdout)
    env = {
        **ws.env,
        "SLURM_CONF": info["SLURM_CONF"],
        "BENCHFLOW_SERVERS_DIR": str(ws.dir / "servers"),
    }
    out = [
        Row(S, "3-node cluster start (namespaces, daemons, srun probe)", up, "s", how=_cmd(script))
    ]
    try:
        out += _scale_out(ws, env)
        out += _merged_p99(ws, env)
        out += _queue(ws, env, 100) + _queue(ws, env, 1000) + _plan_10k(ws, env)
    finally:
        subprocess.run([*script, "stop", str(cluster)], capture_output=True)
        shutil.rmtree(cluster, ignore_errors=True)
    return out


def _cmd(script) -> str:
    return " ".join(script[1:]) + " start DIR --nodes 3"


def _run(ws: Workspace, env: dict, scenario: str, *overrides: str, timeout: float = 600):
    """One sweep through the Slurm launcher; returns its trials' (metrics, meta)."""
    cmd = [sys.executable, "-m", "benchflow", "-m", *SITE, f"scenario={scenario}", *overrides]
    proc = subprocess.run(cmd, cwd=ws.dir, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[3:])}:\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
    root = ws.dir / "results" / scenario
    trials = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith("_")]
    return [
        (json.loads((d / "metrics.json").read_text()), json.loads((d / "meta.json").read_text()))
        for d in trials
    ]


def _server(ws: Workspace, env: dict, *overrides: str) -> tuple[str, str]:
    cmd = [sys.executable, "-m", "benchflow", "servers", "start", "sleep", *overrides]
    proc = subprocess.run(cmd, cwd=ws.dir, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"servers start: {proc.stderr[-1500:]}")
    return proc.stdout.split()[0], proc.stdout.split(" ready at ")[1].split()[0]


def _stop_server(ws: Workspace, env: dict, server_id: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "benchflow", "servers", "stop", server_id],
        cwd=ws.dir,
        env=env,
        capture_output=True,
        timeout=120,
    )


def _scale_out(ws: Workspace, env: dict) -> list[Row]:
    """Closed-loop throughput with 6 clients as srun tasks on 1, 2 and 3 nodes."""
    out: list[Row] = []
    common = ["clients=6", "client_launch=srun", "duration_s=8", "warmup_s=1", "repetitions=1"]
    noop = [*common, "service=noop", "concurrency=6"]
    base = None
    for nodes in (1, 2, 3):
        ov = [*noop, f"++service.resources.nodes={nodes}", "++service.resources.cpus=1"]
        ((m, _),) = _run(ws, env, f"mn_noop{nodes}", *ov)
        thr = m["throughput"]["value"]
        base = base or thr
        out.append(
            Row(
                S,
                f"noop throughput, 6 clients on {nodes} node(s) (ratio to 1 node: "
                f"{thr / base:.2f}; hosts {m['extra']['clients.hosts']:g})",
                thr,
                "ops/s",
                how="python -m benchflow -m " + " ".join([*SITE, *ov]),
            )
        )
    sid, _ = _server(ws, env, "service.service_ms=2")
    try:
        base = None
        sleep = [*common, "service=sleep", f"service.server={sid}", "concurrency=24"]
        for nodes in (1, 2, 3):
            # three nodes include the server's own: let the clients share it
            share = ["hydra.launcher.server_node=share"] if nodes == 3 else []
            ov = [*sleep, f"++service.resources.nodes={nodes}", *share]
            ((m, _),) = _run(ws, env, f"mn_sleep{nodes}", *ov)
            thr = m["throughput"]["value"]
            base = base or thr
            out.append(
                Row(
                    S,
                    f"sleep (HTTP, 2 ms, server job on its node) throughput, 6 clients on "
                    f"{nodes} node(s) (ratio to 1 node: {thr / base:.2f})",
                    thr,
                    "req/s",
                    how="benchflow servers start sleep service.service_ms=2; "
                    "python -m benchflow -m " + " ".join([*SITE, *ov]),
                )
            )
    finally:
        _stop_server(ws, env, sid)
    return out


def _merged_p99(ws: Workspace, env: dict) -> list[Row]:
    """Poisson 150/s on a sleep server whose service time is uniform in [10, 30] ms: p99
    merged over 3 clients on 3 nodes vs the same 3 clients on one node (interleaved, 3
    repetitions each, medians). The spread is the server's, so the percentile measures
    the merge, not this shared machine's scheduling jitter (which alone moved a
    constant-service p99 by 20 % between trials)."""
    sid, _ = _server(ws, env, "service.service_ms=20", "service.service_dist=uniform")
    try:
        ov = [
            "service=sleep",
            f"service.server={sid}",
            "service.service_dist=uniform",
            "clients=3",
            "client_launch=srun",
            "rate=150",
            "concurrency=32",
            "duration_s=10",
            "warmup_s=1",
            "repetitions=3",
            "++service.resources.nodes=1,3",
            "hydra.launcher.server_node=share",
        ]
        trials = _run(ws, env, "mn_p99", *ov, timeout=1200)
    finally:
        _stop_server(ws, env, sid)
    by_nodes: dict[int, list[float]] = {}
    for m, meta in trials:
        n = len({s["host"] for s in meta["lineage"]["shards"]})
        by_nodes.setdefault(n, []).append(m["latency_ms"]["p99"])
    one = sorted(by_nodes.get(1, []))
    three = sorted(by_nodes.get(3, []))
    if not one or not three:
        return [Row(S, "merged p99, 3 nodes vs 1", None, "%", "within 5%", False, str(by_nodes))]
    med1, med3 = one[len(one) // 2], three[len(three) // 2]
    diff = (med3 / med1 - 1) * 100
    how = (
        "benchflow servers start sleep service.service_ms=20 service.service_dist=uniform; "
        "python -m benchflow -m " + " ".join([*SITE, *ov])
    )
    return [
        Row(S, "p99, 3 clients on 1 node (median of 3; service p99: 29.8 ms)", med1, "ms", how=how),
        Row(S, "p99, 3 clients on 3 nodes, histograms merged (median of 3)", med3, "ms", how=how),
        Row(
            S,
            "merged p99 over 3 nodes vs 1 node",
            diff,
            "%",
            "within ±5",
            check(abs(diff), "<=", 5.0),
            how,
        ),
    ]


def _plan_10k(ws: Workspace, env: dict) -> list[Row]:
    """`benchflow plan` of a 10,000-trial sweep: composing and validating every job."""
    o = [*SITE, "service=noop_small,sleep_gpu", "seed=range(5000)", "duration_s=1"]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "benchflow", "plan", "-m", *o],
        cwd=ws.dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    took = time.perf_counter() - t0 if proc.returncode == 0 else None
    return [
        Row(
            S,
            "benchflow plan of a 10,000-trial sweep",
            took,
            "s",
            how="benchflow plan -m " + " ".join(o),
        )
    ]


def _queue(ws: Workspace, env: dict, n: int) -> list[Row]:
    """From `python -m benchflow -m ...` starting to all ``n`` jobs queued; then the time
    `benchflow status` takes on that sweep; then the sweep is stopped."""
    scenario = f"mnqueue{n}"
    o = [
        *SITE,
        f"scenario={scenario}",
        "service=noop_small,sleep_gpu",
        f"seed=range({n // 2})",
        "duration_s=1",
        "warmup_s=0",
        "hydra.launcher.array_parallelism=8",
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchflow", "-m", *o],
        cwd=ws.dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    queued, sweep = None, None
    while proc.poll() is None and time.perf_counter() - t0 < 900:
        sweep = _sweep(ws, scenario)
        if sweep and _all_queued(sweep, n):
            queued = time.perf_counter() - t0
            break
        time.sleep(0.1)
    status_s = None
    if sweep is not None:
        t1 = time.perf_counter()
        st = subprocess.run(
            [sys.executable, "-m", "benchflow", "status", sweep.name],
            cwd=ws.dir,
            env=env,
            capture_output=True,
            timeout=300,
        )
        status_s = time.perf_counter() - t1 if st.returncode == 0 else None
        subprocess.run(
            [sys.executable, "-m", "benchflow", "stop", sweep.name],
            cwd=ws.dir,
            env=env,
            capture_output=True,
            timeout=300,
        )
    try:
        proc.wait(300)
    except subprocess.TimeoutExpired:
        proc.kill()
    how = "python -m benchflow -m " + " ".join(o) + " (2 job arrays, %8 throttle)"
    return [
        Row(S, f"sweep start -> all {n:,} jobs queued", queued, "s", how=how),
        Row(S, f"benchflow status on the {n:,}-job sweep", status_s, "s", how=how),
    ]


def _sweep(ws: Workspace, scenario: str) -> Path | None:
    root = ws.dir / "results" / scenario / "_sweeps"
    dirs = sorted(root.iterdir()) if root.exists() else []
    return dirs[-1] if dirs else None


def _all_queued(sweep: Path, n: int) -> bool:
    try:
        jobs = json.loads((sweep / "slurm.json").read_text())["jobs"]
    except (OSError, ValueError):
        return False
    return len(jobs) == n and all(j["attempts"] for j in jobs)
