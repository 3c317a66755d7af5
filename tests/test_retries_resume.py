"""Retries of transient failures in the job, and resume of sweeps (basic launcher)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from conftest import FAST


def test_a_sut_failing_to_start_is_retried_with_backoff(workdir):
    """The SUT answers only once the first attempt has failed (connection_refused): the
    trial is retried after a backoff and finishes; each attempt is its own run."""
    from benchflow.sut.servers import free_port

    port = free_port()
    procs = []

    def late_server():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the first attempt has failed
            root = workdir.results / "adhoc"
            metas = list(root.glob("*/meta.json")) if root.exists() else []
            if any('"status": "failed"' in m.read_text() for m in metas):
                break
            time.sleep(0.1)
        procs.append(
            subprocess.Popen(
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
        )

    t = threading.Thread(target=late_server)
    t.start()
    try:
        proc = workdir.run(
            "service=sleep",
            "service.mode=server",
            f"service.endpoint=http://127.0.0.1:{port}",
            "max_retries=4",
            "retry_backoff_s=0.5",
            *FAST,
        )
    finally:
        t.join()
        for p in procs:
            p.terminate()
            p.wait(5)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metas = sorted((workdir.meta(d) for d in workdir.trial_dirs()), key=lambda m: m["attempt"])
    assert len(metas) >= 2
    assert [m["status"] for m in metas] == ["failed"] * (len(metas) - 1) + ["finished"]
    assert {m["error"]["class"] for m in metas[:-1]} == {"connection_refused"}
    assert [m["attempt"] for m in metas] == list(range(len(metas)))
    runs = workdir.runs()
    assert sorted(runs["status"]) == ["FAILED"] * (len(metas) - 1) + ["FINISHED"]


def test_non_transient_failures_are_not_retried(workdir):
    proc = workdir.run(
        "service=sleep",
        "service.mode=server",
        "service.endpoint=http://127.0.0.1:9",
        "max_retries=3",
        "retry_backoff_s=0.1",
        "retry_on=[server_not_ready]",
        *FAST,
    )
    assert proc.returncode == 1
    assert len(workdir.trial_dirs()) == 1


def test_a_rerun_sweep_runs_only_what_is_missing_and_resume_false_reruns(workdir):
    workdir.run("-m", "service=noop", "seed=1", *FAST, check=True)
    again = workdir.run("-m", "service=noop", "seed=1,2", *FAST, check=True)
    assert "2 finished, 0 failed" in again.stdout  # seed 1 listed from the first sweep
    runs = workdir.runs()
    trials = runs[runs["tags.benchflow.trial_id"].notna()]
    assert sorted(trials["tags.benchflow.seed"]) == ["1", "2"], "seed 1 ran once"
    workdir.run("-m", "service=noop", "seed=1", "resume=false", *FAST, check=True)
    runs = workdir.runs()
    trials = runs[runs["tags.benchflow.trial_id"].notna()]
    assert sorted(trials["tags.benchflow.seed"]) == ["1", "1", "2"]
