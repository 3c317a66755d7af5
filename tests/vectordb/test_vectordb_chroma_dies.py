"""A Chroma server that dies (or freezes) in the middle of a trial: the failed
requests are counted, the trial is finished but marked invalid, and nothing hangs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from vectordb_support import DATA, NO_MLFLOW, SMALL


def wait_for_ingest(client, name: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.get_collection(name).count() == DATA["n"]:
                return
        except Exception:  # not created yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"the trial never filled collection {name}")


@pytest.mark.parametrize("how", ["killed", "frozen"])
def test_chroma_server_dying_mid_trial_gives_counted_errors_and_an_invalid_trial(
    workdir, chroma_server_private, how
):
    server = chroma_server_private
    name = f"dies_{how}"
    cmd = [
        sys.executable, "-m", "benchflow", *server.overrides(), *SMALL,
        # A frozen server: the stall watchdog (2 s) ends the phase before any request's
        # own timeout (5 s), which then bounds the recall pass and the teardown.
        f"service.collection={name}", "service.request_timeout_s=5",
        "duration_s=3", "warmup_s=0", "concurrency=2", "stall_timeout_s=2", "progress=off",
    ]  # fmt: skip
    if how == "frozen":
        cmd.append(NO_MLFLOW)  # the MLflow side is checked once, with the killed server
    trial = subprocess.Popen(
        cmd, cwd=workdir.path, env=workdir.env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    pid = server.process.pid
    try:
        wait_for_ingest(server.client(), name)
        time.sleep(1.0)  # the measured phase is running
        os.kill(pid, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
        t0 = time.monotonic()
        _, err = trial.communicate(timeout=180)
        after_death_s = time.monotonic() - t0
    finally:
        if how == "frozen":
            os.kill(pid, signal.SIGCONT)
        if trial.poll() is None:
            trial.kill()
    assert trial.returncode == 0, err[-3000:]
    assert after_death_s < 60, "the trial must end, not hang on a dead server"
    (tdir,) = workdir.trial_dirs()
    meta, m = workdir.meta(tdir), workdir.metrics(tdir)
    assert meta["status"] == "finished"
    errors, reasons = m["errors"], " ".join(m["validity"]["reasons"])
    assert m["validity"]["valid"] is False
    if how == "killed":
        assert errors["count"] > 0 and "error rate" in reasons
        assert set(errors["by_class"]) & {"connection_refused", "connection_lost"}, errors
    else:  # the requests in flight when it froze are counted as timeouts
        assert errors["timeouts"] > 0 and "timeout" in errors["by_class"], errors
        assert "stopped answering" in reasons
    assert m["load"]["completed"] > errors["count"], "requests before the death succeeded"
    assert "recall not measured" in m["notes"]
    assert "recall_at_10" not in m["quality"]
    if how == "killed":
        run = workdir.runs().iloc[0]
        assert run["tags.benchflow.valid"] == "false" and run["metrics.errors.count"] > 0
