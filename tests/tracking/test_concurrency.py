"""Parallel writers on the PostgreSQL-backed server: 32 trial processes uploading at the
same instant into an experiment none of them created — zero lost, zero duplicated,
one experiment, one sweep parent run."""

from __future__ import annotations

import multiprocessing as mp
import uuid

from benchflow import tracking
from benchflow.analysis.synthetic import SynthTrial, write_trial

WRITERS = 32


def _upload(url: str, tdir: str, barrier, results) -> None:
    c = tracking.client(url, http_timeout_s=120)  # 2 shared cores: the server queues
    barrier.wait(60)  # everyone hits the server at once
    try:
        results.put((tdir, tracking.upload_trial(tdir, c), None))
    except Exception as exc:
        results.put((tdir, None, f"{type(exc).__name__}: {exc}"))


def _race(url: str, dirs: list, n: int) -> list[tuple]:
    ctx = mp.get_context("fork")  # children share the parent's imports: they start at once
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_upload, args=(url, str(dirs[i]), barrier, results)) for i in range(n)
    ]
    for p in procs:
        p.start()
    out = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    return out


def test_32_processes_log_at_once_none_lost_none_duplicated(tracking_server, tmp_path, workdir):
    experiment = f"par-{uuid.uuid4().hex[:8]}"
    sweep_dir = tmp_path / "results" / experiment / "_sweeps" / "s1"
    sweep_dir.mkdir(parents=True)
    # MLflow was down when this sweep started: no experiment, no parent run yet, so every
    # trial must find or create both while 31 others do the same
    sweep = {
        "sweep_id": f"sweep-{experiment}",
        "sweep_dir": str(sweep_dir),
        "parent_run_id": None,
        "tracking_uri": tracking_server.url,
        "job_num": 0,
    }
    dirs = [
        write_trial(
            tmp_path / "results",
            SynthTrial(
                experiment,
                experiment,
                seed=i,
                sweep={**sweep, "job_num": i},
                tracking_uri=tracking_server.url,
                seconds=30,
            ),
        )
        for i in range(WRITERS)
    ]
    out = _race(tracking_server.url, dirs, WRITERS)
    errors = [e for _, _, e in out if e]
    assert not errors, errors[:3]

    c = tracking_server.client()
    exps = [e for e in c.search_experiments(filter_string=f"name = '{experiment}'")]
    assert len(exps) == 1, "experiment creation raced"
    runs = c.search_runs([exps[0].experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("benchflow.role") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("benchflow.role") != "sweep"]
    assert len(parents) == 1, "the late sweep parent run was created more than once"
    ids = sorted(r.data.tags["benchflow.trial_id"] for r in trials)
    assert ids == sorted(d.name for d in dirs), "lost or duplicated runs"
    assert {r.info.run_id for r in trials} == {run for _, run, _ in out}
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parents[0].info.run_id}
    assert all(r.info.status == "FINISHED" for r in trials)
    # each run has its whole series, once: 30 s x 5 series
    hist = c.get_metric_history(trials[0].info.run_id, "timeseries/throughput")
    assert [m.step for m in hist] == list(range(30))

    # and a sync afterwards finds nothing to do
    workdir.env["MLFLOW_TRACKING_URI"] = tracking_server.url
    sync = workdir.run("sync", "--results-dir", str(tmp_path / "results"), check=True)
    assert f"uploaded 0, already in MLflow {WRITERS}," in sync.stdout


def test_one_trial_uploaded_by_eight_processes_at_once_is_one_run(tracking_server, tmp_path):
    """The trial's own upload and a `benchflow sync` (or two syncs) may overlap: the
    trial's upload lock lets one create the run; the others find it complete."""
    experiment = f"same-{uuid.uuid4().hex[:8]}"
    tdir = write_trial(
        tmp_path, SynthTrial(experiment, experiment, tracking_uri=tracking_server.url)
    )
    out = _race(tracking_server.url, [tdir] * 8, 8)
    assert not [e for _, _, e in out if e]
    assert len({run for _, run, _ in out}) == 1
    c = tracking_server.client()
    exp = c.get_experiment_by_name(experiment)
    assert len(c.search_runs([exp.experiment_id])) == 1
