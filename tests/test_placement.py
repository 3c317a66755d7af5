"""CPU placement: the trial's load generator on some CPUs, the server it launches on
others (a real embedded PostgreSQL), and CPU lists read as ``taskset -c`` reads them."""

from __future__ import annotations

import os
import re

import pytest
from conftest import FAST, require

from benchflow.sut.placement import format_cpus, parse_cpus


@pytest.mark.parametrize(
    ("value", "cpus"),
    [("0-2,5", [0, 1, 2, 5]), ("3", [3]), (3, [3]), ([2, 0, 2], [0, 2]), (" 1 , 4-5", [1, 4, 5])],
)
def test_cpu_lists_read_like_taskset(value, cpus):
    assert parse_cpus(value) == cpus
    assert parse_cpus(format_cpus(cpus)) == cpus


@pytest.mark.parametrize("value", ["", "a", "1-", "-1", "2-1", [], [-1], [True], 1.5, "0,,1"])
def test_anything_else_is_not_a_cpu_list(value):
    with pytest.raises(ValueError, match="not a CPU list"):
        parse_cpus(value)


def _two_cpus() -> tuple[int, int]:
    cpus = sorted(os.sched_getaffinity(0))
    require(len(cpus) >= 2, "a machine with 2 CPUs")
    return cpus[0], cpus[-1]


def test_client_and_launched_server_run_on_their_own_cpus(workdir):
    server, client = _two_cpus()
    proc = workdir.run(
        "service=postgres",  # mode=embedded: the trial launches the server itself
        "service.rows=2000",
        "concurrency=2",
        "clients=2",  # client processes inherit the worker's CPUs
        f"placement.client_cpus={client}",
        f"placement.server_cpus={server}",
        *FAST,
    )
    assert proc.returncode == 0, workdir.explain(proc)
    (trial,) = workdir.trial_dirs()
    meta = workdir.meta(trial)
    # What the kernel reported after pinning, not what was asked for.
    assert meta["worker"]["placement"] == {"client_cpus": [client], "server_cpus": [server]}
    log = (trial / "logs" / "trial.log").read_text()
    assert re.search(rf"postgres ready \(pid \d+, CPUs {server}\)", log), log[-2000:]
    assert workdir.metrics(trial)["throughput"]["value"] > 0
    # A measurement condition: in the run's params, to compare pinned with unpinned.
    (run,) = workdir.runs().to_dict("records")
    assert run["params.placement.client_cpus"] == str(client)
    assert run["params.placement.server_cpus"] == str(server)


def test_a_cpu_this_node_lacks_fails_that_trial_and_the_sweep_goes_on(workdir):
    _, client = _two_cpus()
    missing = max(os.sched_getaffinity(0)) + 1
    proc = workdir.run("-m", "service=sleep", f"placement.client_cpus={client},{missing}", *FAST)
    assert proc.returncode == 1, workdir.explain(proc)
    by_cpu = {}
    for d in workdir.trial_dirs():
        meta = workdir.meta(d)
        (pin,) = [o for o in meta["overrides"] if o.startswith("placement.client_cpus=")]
        by_cpu[pin] = meta
    ok = by_cpu[f"placement.client_cpus={client}"]
    bad = by_cpu[f"placement.client_cpus={missing}"]
    assert ok["status"] == "finished" and ok["worker"]["placement"]["client_cpus"] == [client]
    assert bad["status"] == "failed" and bad["error"]["class"] == "invalid_config"
    assert f"CPU(s) {missing} are not available on this node" in bad["error"]["message"]
