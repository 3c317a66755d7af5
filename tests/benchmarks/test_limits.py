"""Resource needs and hard limits: a trial over its memory or time limit is ended
and recorded as ``limit_exceeded``; a sweep's budget and size are enforced;
needs above the limits are refused before anything runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import psutil
import pytest
from fixtures.benchmark_packages import EXAMPLE_CONF

from benchflow.config.limits import LimitExceeded, LimitsConfig, enforced, scheduler_request
from drivers.base import Resources

CD = ["-cd", str(EXAMPLE_CONF)]
QUICK = ["warmup_s=0", "monitor.interval_s=0.2"]


def _meta(tdir):
    return json.loads((tdir / "meta.json").read_text())


def test_a_trial_over_its_memory_limit_is_ended_and_recorded(bench):
    # A model that leaks 1 MiB per prediction, over 100,000 items: far above 0.25 GB.
    proc = bench.run(
        *CD,
        "service=intent",
        "scenario=lim-mem",
        "service.target=benchflow_intent.targets:leaky",
        "++service.target_args.leak_kb=1024",
        "service.dataset=generated",
        "service.n_items=100000",
        "++service.resources.mem_gb=0.2",
        "limits.trial.mem_gb=0.25",
        *QUICK,
    )
    assert proc.returncode == 1
    assert "FAILED [limit_exceeded] memory limit exceeded" in proc.stdout
    (tdir,) = bench.trials("lim-mem")
    meta = _meta(tdir)
    assert meta["error"]["class"] == "limit_exceeded" and meta["error"]["kind"] == "handled"
    lim = meta["limit"]
    assert lim["resource"] == "memory" and lim["key"] == "limits.trial.mem_gb"
    assert lim["observed_mb"] > lim["limit_mb"] == 256.0
    assert not psutil.pid_exists(meta["supervision"]["worker_pid"])
    assert "metrics.json" not in {p.name for p in tdir.iterdir()}
    run = bench.runs("lim-mem").iloc[0]
    assert run["status"] == "FAILED"
    assert run["tags.benchflow.error_class"] == "limit_exceeded"
    assert run["tags.benchflow.limit_exceeded"] == "memory"


def test_a_trial_over_its_time_limit_is_ended_with_its_sut(bench):
    # The sleep driver launches a server (the SUT); 30 s of load against a 3 s limit.
    proc = bench.run(
        "service=sleep",
        "scenario=lim-time",
        "duration_s=30",
        "limits.trial.time_s=3",
        "limits.trial.cpus=1",
        "limits.grace_s=10",
        *QUICK,
    )
    assert proc.returncode == 1
    assert "FAILED [limit_exceeded] time limit exceeded" in proc.stdout
    (tdir,) = bench.trials("lim-time")
    meta = _meta(tdir)
    assert meta["limit"]["resource"] == "time" and meta["limit"]["key"] == "limits.trial.time_s"
    assert 3 <= meta["limit"]["observed_s"] < 10
    assert len(meta["worker"]["applied_limits"]["cpus"]) == 1
    # The worker tore the SUT down on SIGTERM; nothing of the trial is left running.
    log = (tdir / "logs" / "trial.log").read_text()
    sut_pid = int(re.search(r"sleep_server ready \(pid (\d+),", log).group(1))
    assert not psutil.pid_exists(sut_pid) or psutil.Process(sut_pid).status() == "zombie"
    assert not psutil.pid_exists(meta["supervision"]["worker_pid"])
    assert "teardown" in meta["timings_s"]


def test_a_sweep_time_budget_ends_the_running_trial_and_refuses_the_next(bench):
    proc = bench.run(
        "-m",
        "service=noop",
        "scenario=lim-sweep",
        "seed=1,2",
        "duration_s=20",
        "limits.sweep.time_s=4",
        "tracking.upload=false",
        *QUICK,
    )
    assert proc.returncode == 1
    first, second = (_meta(d) for d in bench.trials("lim-sweep"))
    assert first["limit"]["key"] == "limits.sweep.time_s"
    assert first["error"]["class"] == second["error"]["class"] == "limit_exceeded"
    assert "spent before this trial started" in second["error"]["message"]
    assert "supervision" not in second  # never started


def test_limits_refuse_what_cannot_fit_before_anything_runs(bench):
    proc = bench.run(
        "-m",
        "service=noop",
        "scenario=lim-refuse",
        "seed=1,2,3",
        "repetitions=2",
        "limits.sweep.max_trials=4",
    )
    assert proc.returncode == 2
    assert "limits.sweep.max_trials = 4: this sweep has 6 trials" in proc.stderr
    # The intent experiment declares 0.5 GB: a 0.25 GB limit cannot hold it.
    proc = bench.run(*CD, "service=intent", "scenario=lim-refuse", "limits.trial.mem_gb=0.25")
    assert proc.returncode == 2
    assert "service.resources.mem_gb = 0.5" in proc.stderr
    assert "limits.trial.mem_gb = 0.25" in proc.stderr
    assert not bench.trials("lim-refuse")


def test_sweep_budget_arithmetic():
    lim = LimitsConfig.model_validate({"trial": {"time_s": 60}, "sweep": {"time_s": 100}})
    assert enforced(lim, 1000.0, 1010.0).time_s == 60  # the trial's own limit is smaller
    e = enforced(lim, 1000.0, 1070.0)
    assert e.time_s == 30 and e.time_key == "limits.sweep.time_s"  # what is left of the sweep
    with pytest.raises(LimitExceeded, match="spent before this trial started"):
        enforced(lim, 1000.0, 1100.5)
    mem = LimitsConfig.model_validate({"trial": {"mem_gb": 8}, "sweep": {"mem_gb": 2}})
    e = enforced(mem, None, 0.0)
    assert e.mem_bytes == 2 * 1024**3 and e.mem_key == "limits.sweep.mem_gb"
    assert not enforced(LimitsConfig(), None, 0.0).active


def test_slurm_request_maps_needs_and_limits():
    needs = Resources(cpus=8, mem_gb=32, gpus=2, time_min=90)
    free = scheduler_request(needs, LimitsConfig())
    assert (free.cpus_per_task, free.mem_gb, free.gpus_per_node) == (8, 32.5, 2)
    assert free.timeout_min == 92  # 90 min + the harness's 120 s
    assert free.array_parallelism is None
    capped = scheduler_request(
        needs,
        LimitsConfig.model_validate(
            {
                "trial": {"time_s": 1800, "mem_gb": 16, "cpus": 4, "gpus": 1},
                "sweep": {"mem_gb": 40},
            }
        ),
    )
    assert (capped.cpus_per_task, capped.mem_gb, capped.gpus_per_node) == (4, 16.5, 1)
    assert capped.timeout_min == 32
    assert capped.array_parallelism == 2  # 40 GB over trials of 16 GB
    assert capped.sbatch() == [
        "--cpus-per-task=4",
        "--mem=16896M",
        "--time=32",
        "--gpus-per-node=1",
    ]


def test_an_interrupted_trial_resumes_from_its_checkpoint(bench, data_dir):
    """The per-item checkpoint (state_dir + ItemLog): a trial killed half-way is
    resumed by the same command; the scores equal an uninterrupted run's."""
    common = [*CD, "service=intent", "tracking.upload=false", *QUICK]
    slow = ["service.target=benchflow_intent.targets:slow", "++service.target_args.delay_s=0.05"]
    cmd = [sys.executable, "-m", "benchflow", *common, *slow, "scenario=lim-resume"]
    proc = subprocess.Popen(
        cmd, cwd=bench.path, env=bench.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        state = _wait_for_items(bench, "lim-resume", data_dir, 20, proc)
    finally:
        proc.kill()  # SIGKILL, like a node lost: nothing gets to clean up
        proc.wait()
    scored = [json.loads(line)["id"] for line in state.read_text().splitlines()]
    assert 20 <= len(scored) < 104 and len(set(scored)) == len(scored)

    bench.run(*common, *slow, "scenario=lim-resume", check=True)  # the same command again
    first, second = bench.trials("lim-resume")
    assert _meta(first)["status"] == "running"  # killed: never reported as finished
    m, meta = json.loads((second / "metrics.json").read_text()), _meta(second)
    assert meta["config_hash"] == _meta(first)["config_hash"]
    assert json.loads((second / "custom.json").read_text())["resumed_items"] == len(scored)
    assert m["load"]["completed"] == 104 - len(scored)  # no item scored twice
    assert not state.parent.exists()  # a finished trial leaves no state behind

    bench.run(*common, "scenario=lim-whole", check=True)  # the same model, uninterrupted
    (whole,) = bench.trials("lim-whole")
    assert m["quality"] == json.loads((whole / "metrics.json").read_text())["quality"]


def _wait_for_items(bench, scenario, data_dir, n, proc, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the trial ended before it could be interrupted"
        trials = bench.trials(scenario)
        if trials and (trials[0] / "meta.json").exists():
            state = data_dir / "state" / _meta(trials[0])["config_hash"] / "rep0"
            log = state / "predictions.jsonl"
            if log.exists() and len(log.read_text().splitlines()) >= n:
                return log
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} items scored in {timeout_s} s")
