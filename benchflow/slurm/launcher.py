"""benchflow's Slurm launcher: one job array per distinct resource request.

Hydra's submitit launcher sends every job of a sweep with the same sbatch
parameters. A benchflow sweep mixes services (a vLLM trial needs a GPU, a FAISS
trial does not), so this launcher, built on the same submitit machinery:

1. takes each job's validated config (already composed by ``python -m
   benchflow``; composed here otherwise) and derives its request from
   ``service.resources`` (:mod:`benchflow.slurm.request`);
2. skips jobs whose repetitions all have a FINISHED run already (resume);
3. submits one job array per distinct request, every job writing its
   stdout/stderr as ``logs/%x_%j.{out,err}``;
4. waits: a job that died (scancel, time limit, node failure, preemption not
   requeued) has its unfinished trials recorded as failed (error class
   ``slurm_<STATE>``) and is resubmitted after an exponential backoff up to
   ``max_retries`` times, unless ``benchflow stop`` stopped the sweep; a job
   that hit its time limit or was preempted is first requeued by submitit
   (``max_num_timeout``) and resumes where it stopped;
5. attaches each job's Slurm log files to the MLflow runs of its trials.

A dead job never takes the sweep down: it is reported in the sweep's summary
and its trials are FAILED runs in MLflow.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

from benchflow.config import PREVALIDATED, TrialSpec
from benchflow.slurm.record import Attempt, JobRecord, SweepRecord, raw_job_id
from benchflow.slurm.request import SlurmRequest, request_for, submitit_parameters

log = logging.getLogger("benchflow.slurm")

# Keys of hydra.launcher that are this launcher's own, not sbatch parameters.
_OWN = {
    "submitit_folder",
    "logs_dir",
    "gpu_gres",
    "poll_s",
    "state_poll_s",
    "max_num_timeout",
    "python",
    "name",
    "nodes",
    "tasks_per_node",
    "cpus_per_task",
    "mem_gb",
    "gpus_per_node",
    "timeout_min",
}


@dataclass
class _Job:
    num: int
    overrides: list[str]
    spec: TrialSpec
    request: SlurmRequest
    record: JobRecord
    sjob: Any = None  # the submitit Job of the current attempt
    resubmit_at: float | None = None
    result: JobReturn | None = None
    logs_attached: set[str] = field(default_factory=set)


class _Remote:
    """What each Slurm job runs: the launcher and Hydra's state, pickled once per sweep.

    submitit pickles the callable with every job; the launcher carries the whole
    Hydra context (~tens of ms to pickle), so jobs get this small handle to one
    shared pickle instead, and load it on the node.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def write(cls, launcher, sweep_dir: Path) -> _Remote:
        import cloudpickle

        path = sweep_dir / ".submitit" / "launcher.pkl"
        path.parent.mkdir(parents=True, exist_ok=True)
        remote, launcher.remote = getattr(launcher, "remote", None), None
        try:
            path.write_bytes(cloudpickle.dumps((launcher, Singleton.get_state())))
        finally:
            launcher.remote = remote
        return cls(str(path))

    def __call__(self, overrides, job_dir_key: str, num: int, job_id: str) -> JobReturn:
        import pickle

        launcher, state = pickle.loads(Path(self.path).read_bytes())
        return launcher(overrides, job_dir_key, num, job_id, state)

    def checkpoint(self, *args):
        """Requeued after a time limit or preemption: rerun the job (resume skips what is done)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args)


class SlurmSweepLauncher(BaseSubmititLauncher):
    _EXECUTOR = "slurm"

    # -- submission -----------------------------------------------------------
    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        import submitit

        assert self.config is not None
        p = self.params
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir = Path(p.get("logs_dir") or sweep_dir / "logs")
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.record = SweepRecord.load(sweep_dir) or SweepRecord(sweep_dir)
        site = {
            k: p.get(k)
            for k in (
                "nodes",
                "tasks_per_node",
                "cpus_per_task",
                "mem_gb",
                "gpus_per_node",
                "timeout_min",
            )
        }
        specs = self._specs([list(o) for o in job_overrides])
        jobs = []
        for i, (overrides, spec) in enumerate(zip(job_overrides, specs, strict=True)):
            num = initial_job_idx + i
            req = request_for(spec, site)
            rec = JobRecord(num, list(overrides), req.as_dict(), spec.cfg.repetitions)
            self.record.jobs[num] = rec
            jobs.append(_Job(num, list(overrides), spec, req, rec))
        self._skip_finished(jobs, sweep_dir)

        groups: dict[SlurmRequest, list[_Job]] = defaultdict(list)
        for j in jobs:
            if j.record.status != "skipped":
                groups[j.request].append(j)
        self.remote = _Remote.write(self, sweep_dir) if groups else None
        for req, group in sorted(groups.items()):
            ex = self._executor(submitit, req)
            log.info("submitting %d job(s) as one array: %s", len(group), req.describe())
            for j in group:
                log.info("\t#%d : %s", j.num, " ".join(filter_overrides(j.overrides)))
            sjobs = ex.map_array(self.remote, *zip(*[self._args(j) for j in group], strict=True))
            now = time.time()
            for j, sj in zip(group, sjobs, strict=True):
                j.sjob = sj
                j.record.attempts.append(Attempt(sj.job_id, now))
        self.record.save()
        log.info("%d job(s) queued in %d array(s)", sum(map(len, groups.values())), len(groups))
        self._wait([j for j in jobs if j.sjob is not None])
        self.record.save()
        return [self._return(j) for j in jobs]

    def _specs(self, job_overrides: list[list[str]]) -> list[TrialSpec]:
        """Validated specs: from the pre-validation when it saw the job, else composed."""
        from benchflow.config import Composer, validate

        out: list[TrialSpec | None] = [PREVALIDATED.get(tuple(o)) for o in job_overrides]
        if any(s is None for s in out):
            composer = Composer()
            for i, o in enumerate(job_overrides):
                if out[i] is None:
                    out[i] = validate(composer.compose(o), tuple(o))
        return out  # type: ignore[return-value]

    def _executor(self, submitit, req: SlurmRequest):
        p = self.params
        ex = submitit.SlurmExecutor(
            folder=p["submitit_folder"],
            max_num_timeout=int(p.get("max_num_timeout") or 0),
            python=p.get("python"),
        )
        derived = submitit_parameters(req, p.get("gpu_gres") or "gpu:{n}")
        sbatch = {k: v for k, v in p.items() if k not in _OWN and v not in (None, [], {})}
        extra = dict(sbatch.pop("additional_parameters", None) or {})
        extra.update(derived["sbatch"])
        if sbatch.get("gres") and "gres" in extra:
            extra.pop("gres")  # a site-wide gres wins
        out, err = str(self.logs_dir / "%x_%j.out"), str(self.logs_dir / "%x_%j.err")
        extra.update(output=out, error=err)
        srun_args = [*derived["srun_args"], "--output", out, "--error", err]
        params = derived["params"]
        ex.update_parameters(
            job_name=p.get("name") or "benchflow",
            time=params["timeout_min"],
            nodes=params["nodes"],
            ntasks_per_node=params["tasks_per_node"],
            cpus_per_task=params["cpus_per_task"],
            additional_parameters=extra,
            srun_args=srun_args,
            **sbatch,
        )
        return ex

    def _args(self, j: _Job) -> tuple:
        return (j.overrides, "hydra.sweep.dir", j.num, f"job_id_for_{j.num}")

    def _skip_finished(self, jobs: list[_Job], sweep_dir: Path) -> None:
        """Resume: a job whose repetitions all have a FINISHED run is not submitted."""
        from benchflow import resume, tracking
        from benchflow.trial import trial_config_hash

        todo = [j for j in jobs if j.spec.cfg.resume and j.spec.cfg.tracking.upload]
        if not todo:
            return
        tr = todo[0].spec.cfg.tracking
        try:
            c = tracking.client(tr.uri, tr.http_timeout_s, tr.http_retries)
            if not resume.has_trials(c, tr.experiment):
                return
            for j in todo:
                cfg = j.spec.cfg
                done = resume.finished(c, cfg.tracking.experiment, trial_config_hash(j.spec))
                if len(done) >= cfg.repetitions and all(r in done for r in range(cfg.repetitions)):
                    j.record.status = "skipped"
                    j.record.note = "all repetitions FINISHED already (resume)"
                    job_dir = sweep_dir / str(j.num)
                    resume.list_resumed(job_dir, list(done.values()), cfg.results_dir, cfg.scenario)
        except Exception as exc:  # MLflow unreachable: submit everything
            log.warning("resume check failed (%s); submitting every job", exc)
            return
        skipped = sum(j.record.status == "skipped" for j in jobs)
        if skipped:
            log.info("resume: %d job(s) already FINISHED, not submitted", skipped)

    # -- waiting, failures, retries -------------------------------------------
    def _wait(self, jobs: list[_Job]) -> None:
        from submitit.slurm.slurm import SlurmJob

        poll_s = float(self.params.get("poll_s") or 1.0)
        state_poll_s = float(self.params.get("state_poll_s") or 5.0)
        pending = {j.num: j for j in jobs}
        last_state = time.monotonic()
        while pending:
            time.sleep(poll_s)
            if time.monotonic() - last_state >= state_poll_s:
                # one sacct call for every job this process watches
                try:
                    SlurmJob.watcher.update()
                except Exception as exc:
                    log.warning("sacct failed: %s", exc)
                last_state = time.monotonic()
            for j in list(pending.values()):
                if j.resubmit_at is not None:
                    if time.monotonic() >= j.resubmit_at:
                        self._resubmit(j)
                    continue
                try:
                    if not j.sjob.done():
                        continue
                except Exception as exc:
                    log.warning("cannot read the state of job %s: %s", j.sjob.job_id, exc)
                    continue
                if self._finished(j):
                    del pending[j.num]

    def _finished(self, j: _Job) -> bool:
        """Handle a job that ended; False when it will be resubmitted."""
        from submitit.core.utils import FailedJobError, UncompletedJobError

        attempt = j.record.attempts[-1]
        # submitit waits up to 15 s for a result file a slow shared filesystem has not
        # shown yet: worth it after COMPLETED, pointless after CANCELLED or TIMEOUT.
        completed = (j.sjob.state or "").startswith("COMPLETED")
        j.sjob._results_timeout_s = 15 if completed else 2
        try:
            j.result = j.sjob.result()
            attempt.state = "COMPLETED"
            j.record.status = "finished"
            self._attach_logs(j)
            self.record.save()
            return True
        except UncompletedJobError:
            state = (j.sjob.state or "UNKNOWN").split()[0]
        except FailedJobError as exc:  # the job's Python raised: a bug, not retried
            state = "FAILED"
            j.record.note = str(exc).strip().splitlines()[-1][:500] if str(exc) else None
            attempt.state = state
            return self._give_up(j, state, retry=False)
        attempt.state = state
        log.warning("job #%d (%s) ended %s without finishing", j.num, j.sjob.job_id, state)
        return self._give_up(j, state, retry=True)

    def _give_up(self, j: _Job, state: str, retry: bool) -> bool:
        from benchflow import sweep as sweeps

        cfg = j.spec.cfg
        n_attempts = len(j.record.attempts)
        will_retry = retry and n_attempts <= cfg.max_retries and not self.record.stopped()
        orphans, finished = self._close_orphans(j, state, final=not will_retry)
        listing = sweeps.RETRIED_FILE if will_retry else sweeps.TRIALS_FILE
        job_dir = Path(str(self.config.hydra.sweep.dir)) / str(j.num)
        job_dir.mkdir(parents=True, exist_ok=True)
        with open(job_dir / listing, "a") as f:
            f.writelines(f"{o}\n" for o in orphans)
        with open(job_dir / sweeps.TRIALS_FILE, "a") as f:
            f.writelines(f"{o}\n" for o in finished)
        self._attach_logs(j, extra=orphans + finished)
        if will_retry:
            delay = cfg.retry_backoff_s * 2 ** (n_attempts - 1)
            log.warning(
                "job #%d: resubmitting in %.3g s (retry %d/%d)",
                j.num,
                delay,
                n_attempts,
                cfg.max_retries,
            )
            j.resubmit_at = time.monotonic() + delay
            self.record.save()
            return False
        j.record.status = "failed"
        j.record.note = j.record.note or f"Slurm job ended {state}" + (
            f" after {n_attempts} attempt(s)" if n_attempts > 1 else ""
        )
        self._record_unrun(j, state)
        self.record.save()
        return True

    def _resubmit(self, j: _Job) -> None:
        import submitit

        j.resubmit_at = None
        if self.record.stopped():
            j.record.status = "failed"
            j.record.note = "stopped (benchflow stop) before its retry"
            self._record_unrun(j, "STOPPED")
            j.result = None
            return
        ex = self._executor(submitit, j.request)
        j.sjob = ex.submit(self.remote, *self._args(j))
        j.record.attempts.append(Attempt(j.sjob.job_id, time.time()))
        log.info("job #%d resubmitted as %s", j.num, j.sjob.job_id)
        self.record.save()

    def _job_trials(self, j: _Job) -> list[dict]:
        """meta.json of every trial this sweep job started (from the trials' own files)."""
        from benchflow.result import read_json

        cfg = j.spec.cfg
        root = Path(cfg.results_dir) / cfg.scenario
        since = j.record.attempts[0].submitted_at - 60
        sweep_id = Path(str(self.config.hydra.sweep.dir)).name
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

    def _close_orphans(self, j: _Job, state: str, final: bool) -> tuple[list[str], list[str]]:
        """What a dead job left behind.

        Trials left 'running' are recorded as failed (``slurm_<STATE>``) and uploaded
        as FAILED runs; trials that finished but were not listed yet (the job died
        while uploading) are complete results: uploaded and listed, so a retry
        resumes past them. Returns (orphans, finished).
        """
        from benchflow import sweep as sweeps
        from benchflow import tracking
        from benchflow.result import write_json

        job_dir = Path(str(self.config.hydra.sweep.dir)) / str(j.num)
        listed: set[str] = set()
        for name in (sweeps.TRIALS_FILE, sweeps.RETRIED_FILE):
            if (job_dir / name).exists():
                listed |= set((job_dir / name).read_text().split())
        orphans, finished = [], []
        for meta in self._job_trials(j):
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

    def _record_unrun(self, j: _Job, state: str) -> None:
        """Repetitions the job never reached are failed trials too (the summary counts them)."""
        from benchflow import sweep as sweeps
        from benchflow.result import read_json
        from benchflow.trial import SweepInfo, record_unrun_trial

        cfg = j.spec.cfg
        job_dir = Path(str(self.config.hydra.sweep.dir)) / str(j.num)
        listed = job_dir / sweeps.TRIALS_FILE
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
            for rep in range(cfg.repetitions):
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
    def _attach_logs(self, j: _Job, extra: list[str] = ()) -> None:
        """Copy the job's logs/%x_%j.{out,err} into its trials' logs/ and their MLflow runs."""
        from benchflow import tracking
        from benchflow.result import read_json

        attempt = j.record.attempts[-1]
        raw = raw_job_id(attempt.job_id)
        name = self.params.get("name") or "benchflow"
        files = [self.logs_dir / f"{name}_{raw}.{ext}" for ext in ("out", "err")]
        files = [f for f in files if f.exists()]
        if not files:
            return
        dirs = [
            m["_dir"]
            for m in self._job_trials(j)
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

    def _return(self, j: _Job) -> JobReturn:
        if j.result is not None:
            return j.result
        ret = JobReturn()
        ret.overrides = j.overrides
        ret.status = JobStatus.COMPLETED  # reported in the summary; never aborts the sweep
        ret.return_value = {"status": j.record.status, "note": j.record.note}
        ret.cfg = OmegaConf.create({})
        return ret
