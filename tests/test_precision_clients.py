"""``duration_s=auto`` with ``clients>1``: the shards send snapshots of their latency
histograms while the measured phase runs, the coordinator judges their sum and sends
every shard one common instant to end its window at (benchflow/load/clients.py,
docs/metrics.md#precision-duration_sauto).

The sum is checked exactly first (no server); then real trials run through
``python -m benchflow`` against the ``sleep`` calibration server, with local client
processes, with srun tasks (a stand-in ``srun`` on PATH runs the tasks here, so the
shards connect back over a socket as on a cluster), and with a shard killed mid-phase.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil
import pytest

from benchflow.load.histogram import LogHistogram
from benchflow.load.precision import SnapshotSum

# percentiles and stop instants of real trials are timing: each test runs alone on the
# machine (tests/fixtures/quiet.py)
pytestmark = pytest.mark.usefixtures("quiet_machine")

QUIET = ["progress=off", "monitor.interval_s=0.5"]
# Service times uniform in [25, 75] ms, 32 in flight over 2 clients: ~600 requests/s, a
# p50 within ±3 % in about 2 s (the latency distribution is the server's, not the
# machine's: see test_precision_saturation.test_auto_duration_agrees_...)
SHORT = [
    "service=sleep",
    "service.service_ms=50",
    "service.service_dist=uniform",
    "concurrency=32",
    "clients=2",
    "precision.rel=0.03",
    "precision.percentiles=[p50,p99]",
    "warmup_s=0.5",
    *QUIET,
]


def _only_trial(workdir, scenario: str = "adhoc") -> tuple[dict, dict]:
    (tdir,) = workdir.trial_dirs(scenario)
    return workdir.metrics(tdir), workdir.meta(tdir)


def _windows_end_together(m: dict, meta: dict, ms: float = 5.0) -> None:
    """Both shards' windows end at one instant (on the coordinator's clock, from the
    phase's shared start), the merged window's end, within ``ms``."""
    x = m["extra"]
    ends = [x["clients.0.window_end_ms"], x["clients.1.window_end_ms"]]
    assert abs(ends[0] - ends[1]) <= ms and x["clients.window_end_spread_ms"] <= ms, x
    measured_ms = m["load"]["precision"]["measured_s"] * 1000
    assert all(abs(e - measured_ms) <= ms for e in ends), (ends, measured_ms)
    rows = meta["lineage"]["shards"]
    assert [r["window_end_ms"] for r in rows] == ends


# -- the coordinator's sum, exactly ------------------------------------------------------
def test_the_sum_of_snapshots_is_the_merged_histogram():
    """Each shard's snapshot is cumulative and replaces its previous one; a failed shard
    is dropped; the sum equals the merge of the shards' latest histograms, bucket for
    bucket, and survives a round trip through to_dict."""
    rng = np.random.default_rng(7)
    shards = [LogHistogram() for _ in range(3)]
    total = SnapshotSum()
    for _ in range(4):
        for i, h in enumerate(shards):
            h.record_many(rng.lognormal(15 + i, 0.3, 500))
            total.put(i, h.to_dict())
    want = LogHistogram()
    for h in shards:
        want.merge(h)
    got = total.hist
    assert np.array_equal(got.counts, want.counts) and got.count == want.count == 6000
    assert (got.vmin, got.vmax) == (want.vmin, want.vmax)
    assert got.total == pytest.approx(want.total)
    total.drop(2)
    rest = LogHistogram().merge(shards[0]).merge(shards[1])
    assert np.array_equal(total.hist.counts, rest.counts) and total.hist.count == 4000
    assert total.hist.vmax == rest.vmax and 2 not in total and 1 in total


# -- clients=2, local processes ----------------------------------------------------------
def test_auto_with_two_clients_stops_together_and_agrees_with_a_fixed_trial(workdir):
    """One sweep: ``duration_s=auto`` and a fixed 8 s trial of the same configuration,
    both over 2 client processes (closed loop, 64 in flight, service times uniform in
    [50, 150] ms). The auto trial ends by precision well before max_s; its samples are
    the two shards' together; both shards' windows end at the same instant; p50 and p99
    agree with the fixed trial's.

    Tolerance as in test_precision_saturation: each estimate lies within its own 95 %
    interval, ±2 % for the auto trial and ±h for the fixed one, so 1.5 x (2 % + h)."""
    proc = workdir.run(
        "-m",
        "service=sleep",
        "service.service_ms=100",
        "service.service_dist=uniform",
        "concurrency=64",
        "clients=2",
        "duration_s=auto,8",
        "precision.rel=0.02",
        "precision.min_s=2",
        "precision.max_s=20",
        "precision.percentiles=[p50,p99]",
        "warmup_s=1",
        *QUIET,
        timeout=600,
    )
    assert proc.returncode == 0, workdir.explain(proc)
    trials = [(workdir.meta(d), workdir.metrics(d)) for d in workdir.trial_dirs()]
    assert len(trials) == 2
    ((meta, auto),) = [(t, m) for t, m in trials if m["load"]["precision"]["auto"]]
    (fixed,) = [m for _, m in trials if not m["load"]["precision"]["auto"]]
    pa, pf = auto["load"]["precision"], fixed["load"]["precision"]
    assert auto["load"]["clients"] == 2 and auto["extra"]["clients.failed"] == 0
    assert pa["stopped_by"] == "precision" and pa["reached"] is True, pa
    assert pa["measured_s"] < 20 and auto["load"]["duration_s"] == pa["measured_s"]
    assert auto["load"]["elapsed_s"] < 20
    for name in ("p50", "p99"):
        assert pa["percentiles"][name]["rel_half_width_at_stop"] <= 0.02
    # the merged histogram is both shards' (their own request counts, from their rows)
    x = auto["extra"]
    assert pa["samples"] == x["clients.0.requests"] + x["clients.1.requests"]
    assert pa["samples"] == auto["latency_ms"]["count"]
    assert min(x["clients.0.requests"], x["clients.1.requests"]) > 0.4 * pa["samples"]
    # the judge saw both shards' samples (snapshots), fewer than the final histogram
    assert 0.5 * pa["samples"] < pa["samples_at_stop"] <= pa["samples"]
    rows = meta["lineage"]["shards"]
    assert [r["stop_by"] for r in rows] == ["precision", "precision"], rows
    assert all(r["stop_late_ms"] == 0 for r in rows), rows  # each acted before the instant
    _windows_end_together(auto, meta)
    assert auto["validity"]["valid"], auto["validity"]
    for name in ("p50", "p99"):
        a, ref = auto["latency_ms"][name], fixed["latency_ms"][name]
        h = pf["percentiles"][name]["rel_half_width"]
        tol = 1.5 * (0.02 + h)
        assert abs(a / ref - 1) <= tol, (
            f"{name}: auto {a:.3f} ms vs 8 s {ref:.3f} ms (tolerance ±{tol:.1%}); "
            f"the fixed trial's validity: {fixed['validity']}"
        )


def test_unreachable_precision_with_two_clients_runs_to_max_s_and_says_so(workdir):
    """At 5 requests/s over two clients a p99 cannot get a finite interval within 3 s:
    the phase runs to max_s on both shards, which end there together, and the trial is
    invalid, saying why."""
    workdir.run(
        "service=sleep",
        "service.service_ms=1",
        "rate=5",
        "concurrency=4",
        "clients=2",
        "duration_s=auto",
        "precision.min_s=1",
        "precision.max_s=3",
        "warmup_s=0",
        *QUIET,
        check=True,
    )
    m, meta = _only_trial(workdir)
    p = m["load"]["precision"]
    assert p["stopped_by"] == "max_s" and p["reached"] is False and p["measured_s"] == 3
    assert p["percentiles"]["p99"]["rel_half_width"] is None
    assert m["load"]["duration_s"] == 3 and m["load"]["elapsed_s"] >= 3
    assert [r["stop_by"] for r in meta["lineage"]["shards"]] == ["max_s", "max_s"]
    _windows_end_together(m, meta)
    assert not m["validity"]["valid"]
    (why,) = [r for r in m["validity"]["reasons"] if r.startswith("precision not reached")]
    assert "by max_s" in why and "p99 has no finite interval yet" in why, why


# -- clients as srun tasks ---------------------------------------------------------------
FAKE_SRUN = """#!/bin/sh
# a stand-in for srun: runs the command once per task, here, with SLURM_PROCID set
n=1
while [ $# -gt 0 ]; do
  case "$1" in
    --ntasks=*) n="${1#--ntasks=}"; shift ;;
    --*) shift ;;
    *) break ;;
  esac
done
k=0
while [ "$k" -lt "$n" ]; do
  SLURM_PROCID=$k "$@" &
  k=$((k + 1))
done
wait
"""


def test_auto_with_srun_shards_stops_together(workdir, tmp_path):
    """``client_launch=srun``: the shards are ``python -m benchflow.load.shard`` processes
    connecting back over a socket (started here by a stand-in srun); the same judge ends
    both windows at one instant."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "srun").chmod(0o755)
    env = workdir.env
    for k in [k for k in env if k.startswith("SLURM_")]:
        del env[k]
    env.update(PATH=f"{bin_dir}:{env['PATH']}", SLURM_JOB_ID="0", SLURM_JOB_NUM_NODES="1")
    proc = workdir.run(
        *SHORT,
        "client_launch=srun",
        "duration_s=auto",
        "precision.min_s=2",
        "precision.max_s=15",
        timeout=300,
    )
    assert proc.returncode == 0, workdir.explain(proc)
    m, meta = _only_trial(workdir)
    p = m["load"]["precision"]
    assert p["stopped_by"] == "precision" and p["reached"] is True and p["measured_s"] < 15, p
    rows = meta["lineage"]["shards"]
    # srun tasks (not local children), in the order they connected back
    assert sorted(r["procid"] for r in rows) == ["0", "1"], rows
    assert [r["stop_by"] for r in rows] == ["precision", "precision"], rows
    assert p["samples"] == m["extra"]["clients.0.requests"] + m["extra"]["clients.1.requests"]
    _windows_end_together(m, meta)


# -- a shard that dies -------------------------------------------------------------------
def _clients_of_trials_in(cwd) -> list[psutil.Process]:
    """The spawned client processes of the benchflow process running in ``cwd``."""
    out = []
    for p in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if p.info["cwd"] != str(cwd) or "benchflow" not in (p.info["cmdline"] or []):
                continue
            for kid in p.children():
                if "multiprocessing.spawn" in " ".join(kid.cmdline()):
                    out.append(kid)
        except psutil.Error:
            continue
    return out


def test_a_shard_killed_mid_phase_does_not_hang_the_other(workdir):
    """One of two client processes is SIGKILLed once it has run ~3.5 s (in the measured
    phase, before min_s, on this machine). The coordinator leaves its snapshots out and
    judges the survivor's alone: the phase still ends by precision well before max_s,
    and the lost client is counted."""
    killed: list[int] = []

    def kill_one():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            kids = _clients_of_trials_in(workdir.path)
            if len(kids) == 2 and time.time() - min(k.create_time() for k in kids) > 3.5:
                kids[1].kill()
                killed.append(kids[1].pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one, daemon=True)
    killer.start()
    t = time.monotonic()
    workdir.run(
        *SHORT,
        "duration_s=auto",
        "precision.min_s=4",
        "precision.max_s=30",
        timeout=300,
    )
    took = time.monotonic() - t
    killer.join(5)
    assert killed, "no client process was seen"
    m, meta = _only_trial(workdir)
    p = m["load"]["precision"]
    assert m["extra"]["clients.failed"] == 1
    assert any("1 client shard(s) failed" in r for r in m["validity"]["reasons"])
    assert p["stopped_by"] == "precision" and p["measured_s"] < 30, p
    assert took < 60, took  # neither hung on the dead shard nor ran to max_s
    states = sorted(r["state"] for r in meta["lineage"]["shards"])
    assert states == ["failed", "ok"]
    (ok,) = [r for r in meta["lineage"]["shards"] if r["state"] == "ok"]
    assert ok["stop_by"] == "precision" and p["samples"] == ok["requests"]
