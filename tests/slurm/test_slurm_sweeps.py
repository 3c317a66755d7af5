"""Real sweeps through hydra/launcher=slurm on the single-node test cluster
(tests/fixtures/slurm.py), checked in Slurm (scontrol, sacct) and in MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAST

CD = str(Path(__file__).parent / "conf")
SITE = ["--config-dir", CD, "site=local"]


@pytest.fixture
def swd(workdir, slurm_cluster):
    """A workdir whose commands talk to the test cluster."""
    workdir.env["SLURM_CONF"] = slurm_cluster["SLURM_CONF"]
    return workdir


def _slurm(swd, *cmd: str) -> str:
    return subprocess.run(cmd, env=swd.env, capture_output=True, text=True, check=True).stdout


def _sweep_dir(swd, scenario: str = "adhoc") -> Path:
    dirs = sorted((swd.results / scenario / "_sweeps").iterdir())
    return dirs[-1]


def _record(sweep_dir: Path) -> dict[int, dict]:
    return {j["num"]: j for j in json.loads((sweep_dir / "slurm.json").read_text())["jobs"]}


def _show_job(swd, job_id: str) -> dict[str, str]:
    out = _slurm(swd, "scontrol", "show", "job", "-o", job_id)
    return dict(f.split("=", 1) for f in out.split() if "=" in f)


def _wait_for(cond, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_mixed_sweep_requests_each_trials_resources(swd):
    """A GPU service and a CPU service in one sweep: one array per request, each job
    asking for its own trial's resources (read back from scontrol and sacct)."""
    swd.run(
        "-m",
        *SITE,
        "service=noop_small,sleep_gpu",
        "concurrency=1,2",
        *FAST,
        check=True,
        timeout=400,
    )
    sweep = _sweep_dir(swd)
    jobs = _record(sweep)
    assert len(jobs) == 4 and all(j["status"] == "finished" for j in jobs.values())
    arrays = {j["attempts"][0]["job_id"].split("_")[0] for j in jobs.values()}
    assert len(arrays) == 2, "one job array per distinct request"
    for j in jobs.values():
        gpu = "service=sleep_gpu" in j["overrides"]
        show = _show_job(swd, j["attempts"][0]["job_id"])
        assert show["Partition"] == "debug" and show["Account"] == "benchtest"
        assert show["NumCPUs"] == ("2" if gpu else "1")
        assert show["MinMemoryNode"] == ("2G" if gpu else "1G")
        assert show["TimeLimit"] == ("00:05:00" if gpu else "00:03:00")
        assert (show.get("TresPerNode") == "gres:gpu:1") is gpu
        acct = _slurm(
            swd, "sacct", "-n", "-X", "-P", "-o", "ReqTRES", "-j", j["attempts"][0]["job_id"]
        ).strip()
        assert ("gres/gpu=1" in acct) is gpu, acct

    runs = swd.runs()
    trials = runs[runs["tags.benchflow.trial_id"].notna()]
    assert len(trials) == 4 and set(trials["status"]) == {"FINISHED"}
    for _, run in trials.iterrows():
        assert run["tags.slurm.partition"] == "debug"
        assert run["tags.slurm.account"] == "benchtest"
        assert run["tags.slurm.nodelist"] and run["tags.slurm.job_id"]
        assert run["tags.slurm.array_task_id"] in ("0", "1")
        import mlflow

        arts = [
            a.path
            for a in mlflow.MlflowClient(swd.tracking_uri).list_artifacts(run["run_id"], "logs")
        ]
        want = f"logs/benchflow_{run['tags.slurm.job_id']}"
        assert f"{want}.out" in arts and f"{want}.err" in arts, arts
    assert (sweep / "logs" / f"benchflow_{trials.iloc[0]['tags.slurm.job_id']}.out").exists()


def _running_trial(swd, num: int, job_id: str):
    """The meta.json of job ``num``'s trial running in Slurm job ``job_id``, once it runs."""
    for meta_path in swd.results.glob("adhoc/*/meta.json"):
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError:
            continue
        if (meta.get("sweep") or {}).get("job_num") == num and meta["status"] == "running":
            return meta
    return None


def _attempts(sweep: Path, num: int) -> list[dict]:
    try:
        return _record(sweep)[num]["attempts"]
    except (OSError, ValueError, KeyError):
        return []


def test_cancelled_job_is_retried_then_reported(swd):
    """scancel mid-trial: the job is resubmitted (max_retries=1); cancelled again it is
    reported: a failed trial (slurm_CANCELLED) in the summary and in MLflow."""
    args = [
        "-m",
        *SITE,
        "service=sleep",
        "seed=1,2",
        "duration_s=6",
        "warmup_s=0.2",
        "monitor.interval_s=0.5",
        "max_retries=1",
        "retry_backoff_s=1",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchflow", *args],
        cwd=swd.path,
        env=swd.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        sweep = _wait_for(
            lambda: (swd.results / "adhoc" / "_sweeps").exists() and _sweep_dir(swd),
            60,
            "the sweep dir",
        )
        cancels = {0: 1, 1: 2}  # job 0 cancelled once (its retry finishes), job 1 twice
        done: dict[int, int] = {0: 0, 1: 0}
        deadline = time.monotonic() + 240
        while any(done[n] < cancels[n] for n in cancels) and time.monotonic() < deadline:
            for num in cancels:
                att = _attempts(sweep, num)
                if done[num] >= cancels[num] or len(att) != done[num] + 1:
                    continue
                if _running_trial(swd, num, att[-1]["job_id"]):
                    time.sleep(1)
                    _slurm(swd, "scancel", att[-1]["job_id"])
                    done[num] += 1
            time.sleep(0.3)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert done == cancels, out[-3000:]
    assert proc.returncode == 1, out[-3000:]  # a trial failed: the sweep says so
    jobs = _record(sweep)
    assert jobs[0]["status"] == "finished" and len(jobs[0]["attempts"]) == 2
    assert jobs[0]["attempts"][0]["state"] == "CANCELLED"
    assert jobs[1]["status"] == "failed" and len(jobs[1]["attempts"]) == 2
    assert "CANCELLED" in jobs[1]["note"]
    assert "1 finished, 1 failed" in out and "2 attempt(s) retried" in out, out[-3000:]
    summary = (sweep / "summary.csv").read_text()
    assert "slurm_CANCELLED" in summary

    runs = swd.runs()
    trials = runs[runs["tags.benchflow.trial_id"].notna()]
    by_job = {n: trials[trials["tags.benchflow.sweep_job"] == str(n)] for n in (0, 1)}
    assert sorted(by_job[0]["status"]) == ["FAILED", "FINISHED"]
    assert list(by_job[1]["status"]) == ["FAILED", "FAILED"]
    failed = trials[trials["status"] == "FAILED"]
    assert set(failed["tags.benchflow.error_class"]) == {"slurm_CANCELLED"}
    st = swd.run("status", sweep.name, "--json", check=True)
    totals = json.loads(st.stdout)[0]["totals"]
    assert totals["done"] == 1 and totals["failed"] == 1, totals


def test_interrupted_sweep_resumes_and_runs_only_what_was_missing(swd):
    """A sweep stopped after its first job (benchflow stop) is run again: the finished
    trial is skipped (not even submitted), the two missing ones run."""
    args = [
        "-m",
        *SITE,
        "service=noop_small",
        "seed=1,2,3",
        *FAST,
        "hydra.launcher.array_parallelism=1",
        "max_retries=0",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchflow", *args],
        cwd=swd.path,
        env=swd.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        sweep = _wait_for(
            lambda: (swd.results / "adhoc" / "_sweeps").exists() and _sweep_dir(swd),
            60,
            "the sweep dir",
        )
        _wait_for(lambda: (sweep / "0" / "trials.txt").exists(), 120, "job 0's trial")
        stop = swd.run("stop", sweep.name, check=True)
        assert "stopped" in stop.stdout
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out[-3000:]
    first = swd.runs()
    first = first[first["tags.benchflow.trial_id"].notna()]
    assert list(first[first["status"] == "FINISHED"]["tags.benchflow.seed"]) == ["1"]

    again = swd.run(*args, check=True, timeout=300)
    sweep2 = _sweep_dir(swd)
    assert sweep2 != sweep
    jobs = _record(sweep2)
    assert jobs[0]["status"] == "skipped" and not jobs[0]["attempts"]
    assert [jobs[n]["status"] for n in (1, 2)] == ["finished", "finished"]
    runs = swd.runs()
    done = runs[(runs["status"] == "FINISHED") & runs["tags.benchflow.trial_id"].notna()]
    assert sorted(done["tags.benchflow.seed"]) == ["1", "2", "3"], "each trial once"
    assert "3 finished, 0 failed" in again.stdout, again.stdout[-2000:]


def test_over_budget_sweep_is_refused_unless_approved(swd, tmp_path):
    """Over budget: refused at submission (exit 2, nothing queued, nothing in MLflow);
    an administrator's recorded approval lets the same sweep through."""
    before = _slurm(swd, "sacct", "-n", "-X", "-P", "-o", "JobID", "-S", "now-1hour")
    args = [
        "-m",
        *SITE,
        "service=sleep_gpu",
        "repetitions=2",
        "budget.gpu_hours=0.1",
        f"budget.approvals_dir={tmp_path / 'approvals'}",
        *FAST,
    ]
    proc = swd.run(*args)
    assert proc.returncode == 2
    assert "sweep refused" in proc.stderr and "0.1667 GPU-hours > budget.gpu_hours=0.1" in (
        proc.stderr
    )
    after = _slurm(swd, "sacct", "-n", "-X", "-P", "-o", "JobID", "-S", "now-1hour")
    assert after == before, "nothing submitted"
    assert not (swd.results / "adhoc" / "_sweeps").exists()

    plan = swd.run("plan", "--approve-as", "admin", *args[1:], check=True)
    assert "OVER BUDGET" not in plan.stdout and "approved by admin" in plan.stdout
    swd.run(*args, check=True, timeout=300)
    assert len(swd.runs()) == 3  # the sweep's parent run and its 2 trials
