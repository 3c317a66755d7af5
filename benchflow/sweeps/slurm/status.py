"""Where a sweep stands, from Slurm and MLflow together (``benchflow status``/``stop``).

Each trial (a repetition of a job) is *done*, *invalid* (finished but its result
is marked invalid), *failed*, *incomplete* (its process was killed mid-trial:
``meta.json`` still says running and nobody runs it), *running* or *pending*.
MLflow says what finished and how; Slurm says what is still queued or running,
and which jobs died without leaving a run; the trials' own files say what
MLflow does not know yet (an upload that failed, a killed trial).
"""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from benchflow.results import read_json
from benchflow.sweeps.slurm.record import STOP, SweepRecord, sacct_states, scancel, squeue_states

STATES = ("pending", "running", "done", "invalid", "failed", "incomplete")
_LIVE = {"PENDING", "CONFIGURING", "REQUEUED", "RESIZING", "SUSPENDED"}
_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT"}


@dataclass
class JobStatus:
    num: int
    overrides: list[str]
    slurm_job: str | None
    slurm_state: str | None
    trials: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    note: str | None = None


@dataclass
class SweepStatus:
    sweep_dir: Path
    jobs: list[JobStatus]
    stopped: bool

    @property
    def totals(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for j in self.jobs:
            for k, v in j.trials.items():
                out[k] += v
        return out


def find_sweep(ref: str, results_dir: Path) -> Path:
    """A sweep by directory or by id (``results/<scenario>/_sweeps/<id>``)."""
    p = Path(ref)
    if (p / "sweep.json").exists():
        return p
    hits = sorted(Path(results_dir).glob(f"*/_sweeps/{ref}"))
    if not hits:
        raise FileNotFoundError(f"no sweep {ref!r} under {results_dir}/*/_sweeps/")
    return hits[-1]


def recent_sweeps(results_dir: Path, n: int = 10) -> list[Path]:
    found = [p.parent for p in Path(results_dir).glob("*/_sweeps/*/sweep.json")]
    return sorted(found, key=lambda p: p.name)[-n:]


def _runs(sweep_dir: Path) -> dict[str, list]:
    """MLflow runs of the sweep's trials, by job number."""
    from benchflow import tracking

    manifest = read_json(sweep_dir / "sweep.json")
    out: dict[str, list] = {}
    if not manifest.get("experiment"):
        return out
    with contextlib.suppress(Exception):
        c = tracking.client(manifest.get("tracking_uri"), 10, 0)
        exp = c.get_experiment_by_name(manifest["experiment"])
        if exp is None:
            return out
        runs = c.search_runs(
            [exp.experiment_id],
            f"tags.`benchflow.sweep_id` = '{manifest['sweep_id']}'",
            max_results=5000,
        )
        for r in runs:
            job = r.data.tags.get("benchflow.sweep_job")
            if job is not None:
                out.setdefault(job, []).append(r)
    return out


def _local_trials(sweep_dir: Path) -> dict[str, dict[int, str]]:
    """The state of the sweep's trial directories, by job number and repetition
    (``results/<scenario>/<trial>/`` beside ``_sweeps/``), the latest attempt winning."""
    from benchflow.tracking import inspect_trial

    sweep_id = sweep_dir.name
    best: dict[tuple[str, int], tuple[tuple, str]] = {}
    for meta_path in sweep_dir.parent.parent.glob("*/meta.json"):
        try:
            state = inspect_trial(meta_path.parent)
        except ValueError:
            continue
        meta = state.meta
        sweep = meta.get("sweep") or {}
        if sweep.get("sweep_id") != sweep_id:
            continue
        kind = state.status
        if kind == "finished":
            try:
                valid = read_json(meta_path.parent / "metrics.json")["validity"]["valid"]
            except (OSError, ValueError, KeyError, TypeError):
                valid = False
            kind = "done" if valid else "invalid"
        key = (str(sweep.get("job_num")), int(meta.get("repetition", 0)))
        # a finished attempt wins; otherwise the latest attempt
        rank = (kind in ("done", "invalid"), meta.get("attempt", 0), meta["started_at_epoch"])
        if key not in best or rank > best[key][0]:
            best[key] = (rank, kind)
    out: dict[str, dict[int, str]] = {}
    for (job, rep), (_, kind) in best.items():
        out.setdefault(job, {})[rep] = kind
    return out


def sweep_status(sweep_dir: Path) -> SweepStatus:
    record = SweepRecord.load(sweep_dir)
    runs = _runs(sweep_dir)
    local = _local_trials(sweep_dir)
    jobs: list[JobStatus] = []
    nums = (
        sorted(record.jobs)
        if record
        else sorted(int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    )
    nums = sorted(set(nums) | {int(j) for j in local if j.isdigit()})
    live: dict[str, str] = {}
    final: dict[str, str] = {}
    if record:
        ids = [j.job_id for j in record.jobs.values() if j.job_id]
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            live = squeue_states(ids)
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            final = sacct_states([i for i in ids if i not in live])
    for num in nums:
        jr = record.jobs.get(num) if record else None
        slurm_job = jr.job_id if jr else None
        state = live.get(slurm_job) or final.get(slurm_job) if slurm_job else None
        js = JobStatus(num, jr.overrides if jr else [], slurm_job, state, note=jr and jr.note)
        reps = _repetitions(sweep_dir, num, runs.get(str(num), []))
        files = local.get(str(num), {})
        n_reps = max(_n_reps(sweep_dir / str(num), jr, reps), max(files, default=-1) + 1)
        if jr and jr.status == "skipped":
            js.slurm_state = "not submitted (resumed)"
        for rep in range(n_reps):
            run = reps.get(rep)
            on_disk = files.get(rep)
            if on_disk == "incomplete" and state in _RUNNING | _LIVE:
                on_disk = "running"  # its process is on another node: Slurm knows better
            if run is not None and run.data.tags.get("benchflow.status") == "incomplete":
                js.trials["incomplete"] += 1  # uploaded by sync as a KILLED run
            elif run is None and on_disk in ("incomplete", "done", "invalid", "running"):
                js.trials[on_disk] += 1  # not in MLflow (yet): the files tell
            elif run is not None:
                status = run.info.status
                if status == "FINISHED":
                    valid = run.data.tags.get("benchflow.valid") == "true"
                    js.trials["done" if valid else "invalid"] += 1
                elif status == "RUNNING" or (status != "FINISHED" and state in _RUNNING | _LIVE):
                    js.trials["running" if state in _RUNNING else "pending"] += 1
                else:
                    js.trials["failed"] += 1
            elif state in _LIVE:
                js.trials["pending"] += 1
            elif state in _RUNNING:  # a job runs its repetitions one after the other
                js.trials["running" if js.trials["running"] == 0 else "pending"] += 1
            elif jr and jr.status == "submitted" and state is None:
                js.trials["pending"] += 1  # not yet known to sacct
            else:
                js.trials["failed"] += 1
        jobs.append(js)
    return SweepStatus(sweep_dir, jobs, (sweep_dir / STOP).exists())


def _repetitions(sweep_dir: Path, num: int, runs: list) -> dict[int, object]:
    """The latest attempt's run per repetition (a retry supersedes a failure)."""
    best: dict[int, object] = {}
    for r in runs:
        tags = r.data.tags
        rep = int(tags.get("benchflow.repetition", 0))
        key = (int(tags.get("benchflow.attempt", 0)), r.info.start_time or 0)
        cur = best.get(rep)
        if cur is None or key > (
            int(cur.data.tags.get("benchflow.attempt", 0)),
            cur.info.start_time or 0,
        ):
            best[rep] = r
    # a FINISHED run anywhere wins over a later failure (resume found it done)
    for r in runs:
        rep = int(r.data.tags.get("benchflow.repetition", 0))
        if r.info.status == "FINISHED":
            best[rep] = r
    return best


def _n_reps(sweep_dir: Path, jr, reps: dict) -> int:
    from benchflow.sweeps.manifest import TRIALS_FILE

    n = max(reps, default=-1) + 1
    if jr is not None:
        n = max(n, jr.repetitions)
    listing = sweep_dir / TRIALS_FILE
    if listing.exists():
        n = max(n, len(listing.read_text().split()))
    return max(n, 1)


def stop_sweep(sweep_dir: Path) -> list[str]:
    """Stop a sweep: no more retries, and every job of it cancelled. Returns the job ids."""
    (sweep_dir / STOP).write_text("stopped by benchflow stop\n")
    record = SweepRecord.load(sweep_dir)
    if record is None:
        return []
    ids = record.job_ids()
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        live = squeue_states(ids)
        ids = [i for i in ids if i in live or i.split("_")[0] in {k.split("_")[0] for k in live}]
        scancel(ids)
    return ids
