"""A sweep job's trials on disk, seen from the login node once the job has ended:
finding the trials it started (:func:`find_trials`), closing those a dead job left
running as failed and uploading those it finished (:func:`close_orphans`),
recording the repetitions it never reached as failed trials (:func:`record_unrun`),
and copying its Slurm log files into its trials and their MLflow runs
(:func:`attach_logs`).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from benchflow.sweeps.manifest import RETRIED_FILE, TRIALS_FILE
from benchflow.sweeps.slurm.record import raw_job_id
from benchflow.sweeps.slurm.sweep_job import SweepJob

log = logging.getLogger("benchflow.slurm")


def find_trials(j: SweepJob, sweep_dir: Path) -> list[dict]:
    """meta.json of every trial this sweep job started (from the trials' own files)."""
    from benchflow.results import read_json

    cfg = j.spec.cfg
    root = Path(cfg.results_dir) / cfg.scenario
    since = j.record.attempts[0].submitted_at - 60
    sweep_id = sweep_dir.name
    out = []
    if not root.is_dir():
        return out
    for meta_path in root.glob("*/meta.json"):
        try:
            if meta_path.stat().st_mtime < since:
                continue
            meta = read_json(meta_path)
        except (OSError, ValueError):
            continue
        sw = meta.get("sweep") or {}
        if sw.get("sweep_id") == sweep_id and sw.get("job_num") == j.num:
            meta["_dir"] = str(meta_path.parent)
            out.append(meta)
    return out


def close_orphans(
    j: SweepJob, state: str, final: bool, sweep_dir: Path
) -> tuple[list[str], list[str]]:
    """What a dead job left behind.

    Trials left 'running' are recorded as failed (``slurm_<STATE>``) and uploaded
    as FAILED runs; trials that finished but were not listed yet (the job died
    while uploading) are complete results: uploaded and listed, so a retry
    resumes past them. Returns (orphans, finished).
    """
    from benchflow import tracking
    from benchflow.results import write_json

    job_dir = sweep_dir / str(j.num)
    listed: set[str] = set()
    for name in (TRIALS_FILE, RETRIED_FILE):
        if (job_dir / name).exists():
            listed |= set((job_dir / name).read_text().split())
    orphans, finished = [], []
    for meta in find_trials(j, sweep_dir):
        tdir = Path(meta.pop("_dir"))
        if str(tdir) in listed:
            continue
        killed = meta["status"] == "running" or (
            (meta.get("error") or {}).get("class") == "terminated"
        )
        if not killed:  # finished or failed by itself: a complete record
            finished.append(str(tdir))
            if j.spec.cfg.tracking.upload:
                try:
                    tracking.upload_trial(tdir)
                except Exception as exc:
                    log.warning("could not upload %s: %s (benchflow sync will)", tdir, exc)
            continue
        meta["status"] = "failed"
        meta["error"] = {
            "class": f"slurm_{state}",
            "message": f"the Slurm job {j.record.job_id} ended {state} during the trial"
            + ("" if final else "; the job was resubmitted"),
        }
        meta["ended_at_epoch"] = time.time()
        write_json(tdir / "meta.json", meta)
        orphans.append(str(tdir))
        if j.spec.cfg.tracking.upload:
            try:
                tracking.upload_trial(tdir)
            except Exception as exc:
                log.warning("could not upload %s: %s (benchflow sync will)", tdir, exc)
    return orphans, finished


def record_unrun(j: SweepJob, state: str, sweep_dir: Path) -> None:
    """Repetitions the job never reached are failed trials too (the summary counts them)."""
    from benchflow.results import read_json
    from benchflow.run.trial import SweepInfo, record_unrun_trial

    job_dir = sweep_dir / str(j.num)
    listed = job_dir / TRIALS_FILE
    seen = set()  # repetitions with a final record (finished, failed, or closed orphan)
    for d in listed.read_text().split() if listed.exists() else []:
        try:
            seen.add(read_json(Path(d) / "meta.json")["repetition"])
        except (OSError, ValueError, KeyError):
            continue
    manifest_path = job_dir.parent / "sweep.json"
    manifest = read_json(manifest_path) if manifest_path.exists() else {}
    info = SweepInfo(
        sweep_id=job_dir.parent.name,
        sweep_dir=str(job_dir.parent),
        parent_run_id=manifest.get("parent_run_id"),
        tracking_uri=manifest.get("tracking_uri"),
        job_num=j.num,
    )
    with open(listed, "a") as f:
        for rep in j.spec.repetitions_run:
            if rep in seen:
                continue
            o = record_unrun_trial(
                j.spec,
                rep,
                info,
                f"slurm_{state}",
                f"never ran: its Slurm job {j.record.job_id} ended {state}",
                attempt=len(j.record.attempts) - 1,
            )
            f.write(f"{o.trial_dir}\n")


# -- logs -----------------------------------------------------------------
def attach_logs(
    j: SweepJob, logs_dir: Path, name: str, sweep_dir: Path, extra: list[str] = ()
) -> None:
    """Copy the job's logs/%x_%j.{out,err} into its trials' logs/ and their MLflow runs."""
    from benchflow import tracking
    from benchflow.results import read_json

    attempt = j.record.attempts[-1]
    raw = raw_job_id(attempt.job_id)
    files = [logs_dir / f"{name}_{raw}.{ext}" for ext in ("out", "err")]
    files = [f for f in files if f.exists()]
    if not files:
        return
    dirs = [
        m["_dir"]
        for m in find_trials(j, sweep_dir)
        if m.get("lineage", {}).get("slurm", {}).get("job_id") == raw
    ] + list(extra)
    for d in dict.fromkeys(dirs):
        if d in j.logs_attached:
            continue
        j.logs_attached.add(d)
        tdir = Path(d)
        for f in files:
            shutil.copy2(f, tdir / "logs" / f.name)
        if not j.spec.cfg.tracking.upload or not (tdir / "upload.json").exists():
            continue
        try:
            run_id = read_json(tdir / "upload.json")["run_id"]
            c = tracking.client(j.spec.cfg.tracking.uri)
            for f in files:
                c.log_artifact(run_id, str(tdir / "logs" / f.name), "logs")
        except Exception as exc:
            log.warning("could not attach %s to its run: %s", [f.name for f in files], exc)
