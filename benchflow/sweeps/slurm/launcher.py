"""benchflow's Slurm launcher: one job array per distinct resource request.

Hydra's submitit launcher sends every job of a sweep with the same sbatch
parameters. A benchflow sweep mixes services (a vLLM trial needs a GPU, a FAISS
trial does not), so this launcher, built on the same submitit machinery:

1. takes each job's validated config (already composed by ``python -m
   benchflow``; composed here otherwise) and derives its request from
   ``service.resources`` (:mod:`benchflow.sweeps.slurm.request`);
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

This module is the login node's side. What each job runs on its node is
:mod:`.remote`; the launcher follows each job as a :class:`.sweep_job.SweepJob`,
and what an ended job left on disk is settled by :mod:`.job_trials`.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from collections import defaultdict
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

from benchflow.config import PREVALIDATED, TrialSpec
from benchflow.sweeps.manifest import RETRIED_FILE, TRIALS_FILE
from benchflow.sweeps.slurm.job_trials import attach_logs, close_orphans, record_unrun
from benchflow.sweeps.slurm.record import Attempt, JobRecord, SweepRecord
from benchflow.sweeps.slurm.remote import _Remote  # old job pickles name it here
from benchflow.sweeps.slurm.request import (
    SITE_KEYS,
    SlurmRequest,
    request_for,
    submitit_parameters,
)
from benchflow.sweeps.slurm.sweep_job import SweepJob

log = logging.getLogger("benchflow.slurm")

# Keys of hydra.launcher that are this launcher's own, not sbatch parameters.
_OWN = {
    "server_node",
    "max_array_size",
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


def array_chunks(group: list, limit: int) -> list[list]:
    """``group`` in launch order, cut into arrays of at most ``limit`` tasks (sbatch
    refuses an array beyond the cluster's MaxArraySize)."""
    return [group[i : i + limit] for i in range(0, len(group), limit)] if group else []


def max_array_size(default: int = 1001) -> int:
    """The cluster's MaxArraySize (tasks per array: indices 0 .. MaxArraySize - 1)."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "config"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return default
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(m.group(1)) if m and int(m.group(1)) > 0 else default


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
        site = {k: p.get(k) for k in SITE_KEYS}
        specs = self._specs([list(o) for o in job_overrides])
        jobs = []
        for i, (overrides, spec) in enumerate(zip(job_overrides, specs, strict=True)):
            num = initial_job_idx + i
            req = request_for(spec, site)
            rec = JobRecord(num, list(overrides), req.as_dict(), spec.cfg.repetitions)
            self.record.jobs[num] = rec
            jobs.append(SweepJob(num, list(overrides), spec, req, rec))
        self._skip_finished(jobs, sweep_dir)

        groups: dict[SlurmRequest, list[SweepJob]] = defaultdict(list)
        for j in jobs:
            if j.record.status != "skipped":
                groups[j.request].append(j)
        self.remote = _Remote.write(self, sweep_dir) if groups else None
        limit = int(p.get("max_array_size") or 0) or max_array_size()
        arrays = 0
        for req, group in sorted(groups.items()):
            ex = self._executor(submitit, req)
            parts = array_chunks(group, limit)
            log.info(
                "submitting %d job(s) as %s: %s",
                len(group),
                "one array" if len(parts) == 1 else f"{len(parts)} arrays of <= {limit}",
                req.describe(),
            )
            for j in group:
                log.info("\t#%d : %s", j.num, " ".join(filter_overrides(j.overrides)))
            for part in parts:
                args = zip(*[self._args(j) for j in part], strict=True)
                sjobs = ex.map_array(self.remote, *args)
                now = time.time()
                for j, sj in zip(part, sjobs, strict=True):
                    j.sjob = sj
                    j.record.attempts.append(Attempt(sj.job_id, now))
            arrays += len(parts)
        self.record.save()
        log.info("%d job(s) queued in %d array(s)", sum(map(len, groups.values())), arrays)
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
        if sbatch.get("exclude") and "exclude" in extra:  # the site's and the server's node
            sbatch["exclude"] = f"{sbatch['exclude']},{extra.pop('exclude')}"
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

    def _args(self, j: SweepJob) -> tuple:
        return (j.overrides, "hydra.sweep.dir", j.num, f"job_id_for_{j.num}")

    def _skip_finished(self, jobs: list[SweepJob], sweep_dir: Path) -> None:
        """Resume: a job whose repetitions all have a FINISHED run is not submitted."""
        from benchflow import tracking
        from benchflow.sweeps import resume

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
                done = resume.finished_for(c, j.spec)
                if all(r in done for r in j.spec.repetitions_run):
                    j.record.status = "skipped"
                    j.record.note = "all repetitions FINISHED already (resume)"
                    job_dir = sweep_dir / str(j.num)
                    mine = [done[r] for r in j.spec.repetitions_run]
                    resume.list_resumed(job_dir, mine, cfg.results_dir, cfg.scenario)
        except Exception as exc:  # MLflow unreachable: submit everything
            log.warning("resume check failed (%s); submitting every job", exc)
            return
        skipped = sum(j.record.status == "skipped" for j in jobs)
        if skipped:
            log.info("resume: %d job(s) already FINISHED, not submitted", skipped)

    # -- waiting, failures, retries -------------------------------------------
    def _wait(self, jobs: list[SweepJob]) -> None:
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

    def _finished(self, j: SweepJob) -> bool:
        """Handle a job that ended; False when it will be resubmitted."""
        from submitit.core.utils import FailedJobError, UncompletedJobError

        attempt = j.record.attempts[-1]
        # submitit waits up to 15 s for a result file a slow shared filesystem has not
        # shown yet: worth it after COMPLETED, pointless after TIMEOUT, and never after
        # CANCELLED (a stopped 1,000-job sweep would wait 2 s per job: over half an hour).
        state = j.sjob.state or ""
        completed = state.startswith("COMPLETED")
        j.sjob._results_timeout_s = 15 if completed else 0 if state.startswith("CANCELLED") else 2
        try:
            j.result = j.sjob.result()
            attempt.state = "COMPLETED"
            j.record.status = "finished"
            attach_logs(
                j,
                self.logs_dir,
                self.params.get("name") or "benchflow",
                Path(str(self.config.hydra.sweep.dir)),
            )
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

    def _give_up(self, j: SweepJob, state: str, retry: bool) -> bool:

        cfg = j.spec.cfg
        n_attempts = len(j.record.attempts)
        will_retry = retry and n_attempts <= cfg.max_retries and not self.record.stopped()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        orphans, finished = close_orphans(j, state, final=not will_retry, sweep_dir=sweep_dir)
        listing = RETRIED_FILE if will_retry else TRIALS_FILE
        job_dir = sweep_dir / str(j.num)
        job_dir.mkdir(parents=True, exist_ok=True)
        with open(job_dir / listing, "a") as f:
            f.writelines(f"{o}\n" for o in orphans)
        with open(job_dir / TRIALS_FILE, "a") as f:
            f.writelines(f"{o}\n" for o in finished)
        attach_logs(
            j,
            self.logs_dir,
            self.params.get("name") or "benchflow",
            sweep_dir,
            extra=orphans + finished,
        )
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
        record_unrun(j, state, sweep_dir)
        self.record.save()
        return True

    def _resubmit(self, j: SweepJob) -> None:
        import submitit

        j.resubmit_at = None
        if self.record.stopped():
            j.record.status = "failed"
            j.record.note = "stopped (benchflow stop) before its retry"
            record_unrun(j, "STOPPED", Path(str(self.config.hydra.sweep.dir)))
            j.result = None
            return
        ex = self._executor(submitit, j.request)
        j.sjob = ex.submit(self.remote, *self._args(j))
        j.record.attempts.append(Attempt(j.sjob.job_id, time.time()))
        log.info("job #%d resubmitted as %s", j.num, j.sjob.job_id)
        self.record.save()

    def _return(self, j: SweepJob) -> JobReturn:
        if j.result is not None:
            return j.result
        ret = JobReturn()
        ret.overrides = j.overrides
        ret.status = JobStatus.COMPLETED  # reported in the summary; never aborts the sweep
        ret.return_value = {"status": j.record.status, "note": j.record.note}
        ret.cfg = OmegaConf.create({})
        return ret
