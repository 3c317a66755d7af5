"""Client processes (clients > 1) that die: one lost client is counted and marks the
trial invalid; the others finish and the trial keeps its files. (The same over srun
tasks on the Slurm test cluster is in tests/slurm/test_slurm_clients.py.)"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
from conftest import FAST


def _clients_of_trials_in(cwd: Path) -> list[psutil.Process]:
    """The spawned client processes of the benchflow process running in ``cwd`` (not any
    other process a session fixture may have spawned)."""
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


def test_a_client_killed_while_starting_is_counted_and_the_trial_completes(workdir):
    """The first client process is SIGKILLed as soon as it exists — before it can say it
    is ready, on this machine where a spawned client takes a second to import. The trial
    must not crash: it completes with the other client's measurements, reports one failed
    client and is invalid for it."""
    killed: list[int] = []

    def kill_first_client():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            kids = _clients_of_trials_in(workdir.path)
            if kids:
                kids[0].kill()
                killed.append(kids[0].pid)
            time.sleep(0.01)

    killer = threading.Thread(target=kill_first_client, daemon=True)
    killer.start()
    proc = workdir.run("service=noop", "clients=2", "concurrency=2", *FAST)
    killer.join(5)
    assert killed, "no client process was seen"
    (tdir,) = workdir.trial_dirs()
    m = workdir.metrics(tdir)
    assert m["rates"]["ok_requests_per_s"] > 0, proc.stderr[-2000:]
    assert m["extra"]["clients.failed"] == 1
    assert m["validity"]["valid"] is False
    assert any("1 client shard(s) failed" in r for r in m["validity"]["reasons"]), m["validity"]
