"""One Hydra job: validate its config, run its repetitions as trials, report.

In a multirun each job is one configuration of the sweep (run by the basic
launcher in this process, or by submitit on a Slurm node), or — when the sweep
interleaves or shuffles its trials (``order``) — one repetition of one
configuration (``repetition_index``); the repetitions of a configuration are
separate trials sharing one config hash. The sweeper writes the sweep's planned
order (``order.json``, :func:`write_order`); each trial records its position in
it (:func:`position_of`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from benchflow.config import EXIT_CONFIG, ConfigError, validate
from benchflow.run.trial import SweepInfo, TrialOutcome, run_trial
from benchflow.sweeps import callback as sweeps
from benchflow.sweeps.manifest import RETRIED_FILE, TRIALS_FILE, read_manifest, sweep_id_of
from benchflow.tracking.client import ui_hint

log = logging.getLogger("benchflow.jobs")


class JobTerminated(BaseException):
    """The job got SIGTERM (scancel, time limit, preemption): the trial stops, recorded."""

    error_class = "terminated"


def _on_sigterm(signum, frame) -> None:
    raise JobTerminated("SIGTERM: the Slurm job is being cancelled, timed out or preempted")


def run_job(cfg: DictConfig) -> list[TrialOutcome]:
    if os.environ.get("SLURM_JOB_ID"):
        # submitit ignores SIGTERM, so a cancelled job would measure on while Slurm
        # kills its SUT and record a bogus result; stop the trial instead.
        signal.signal(signal.SIGTERM, _on_sigterm)
    hc = HydraConfig.get()
    overrides = tuple(OmegaConf.to_container(hc.overrides.task))
    try:
        spec = validate(cfg, overrides)
    except ConfigError as exc:
        print(f"benchflow: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    if spec.cfg.tracking.upload:
        # Importing MLflow takes ~1 s: pay it once per job, not inside the first trial's clock.
        from benchflow.tracking import resolved_uri

        resolved_uri(spec.cfg.tracking.uri)
    multirun = hc.mode == RunMode.MULTIRUN
    if multirun:
        sweeps.scrub_multirun_yaml(Path(hc.sweep.dir))
    sweep = _sweep_info(hc) if multirun else None
    job_dir = Path(hc.runtime.output_dir)
    listing = job_dir / TRIALS_FILE
    outcomes = []
    planned = read_order(Path(hc.sweep.dir)) if multirun else None
    for rep in spec.repetitions_run:
        # Checked before each repetition: a requeued job finds what it already did.
        if multirun and spec.cfg.resume and _resumed(spec, rep, job_dir):
            continue
        if sweep is not None:
            sweep = dataclasses.replace(sweep, position=position_of(planned, sweep.job_num, rep))
        outcome = run_with_retries(spec, rep, sweep, job_dir)
        outcomes.append(outcome)
        with open(listing, "a") as f:
            f.write(f"{outcome.trial_dir}\n")
    if not multirun:
        _report(spec, outcomes)
        if any(o.status != "finished" for o in outcomes):
            raise SystemExit(1)
    return outcomes


# -- the planned order of a sweep's trials ----------------------------------------
ORDER_FILE = "order.json"


def write_order(sweep_dir: Path, ordered: list[tuple[list[str], object]]) -> Path:
    """Write the sweep's planned order: one entry per trial, in launch order, with
    the job that runs it and its repetition (the job numbers Hydra gives them)."""
    from benchflow.results import write_json

    trials = []
    for num, (_, spec) in enumerate(ordered):
        trials += [{"job": num, "repetition": k} for k in spec.repetitions_run]
    first = ordered[0][1].cfg if ordered else None
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = Path(sweep_dir) / ORDER_FILE
    write_json(path, {"order": first.order if first else None, "trials": trials})
    return path


def read_order(sweep_dir: Path) -> dict | None:
    from benchflow.results import read_json

    try:
        return read_json(Path(sweep_dir) / ORDER_FILE)
    except (OSError, ValueError):
        return None  # a sweep not planned by benchflow's sweeper


def position_of(planned: dict | None, job_num: int, repetition: int) -> int | None:
    """The 0-based position of a job's repetition in the sweep's planned order."""
    for i, t in enumerate((planned or {}).get("trials", [])):
        if t.get("job") == job_num and t.get("repetition") == repetition:
            return i
    return None


def _resumed(spec, rep: int, job_dir: Path) -> bool:
    """True when this repetition already has a FINISHED run (it is then listed, not rerun)."""
    from benchflow import tracking
    from benchflow.sweeps import resume

    c = spec.cfg
    if not c.tracking.upload:
        return False
    try:
        client = tracking.client(c.tracking.uri, c.tracking.http_timeout_s, c.tracking.http_retries)
        done = resume.finished_for(client, spec).get(rep)
    except Exception as exc:  # MLflow unreachable: run it rather than guess
        log.warning("resume check failed (%s); running repetition %d", exc, rep)
        return False
    if done is None:
        return False
    resume.list_resumed(job_dir, [done], c.results_dir, c.scenario)
    log.info(
        "repetition %d already FINISHED (run %s): skipped (resume=false reruns)", rep, done.run_id
    )
    return True


def _transient(error_class: str | None, retry_on: list[str]) -> bool:
    return error_class is not None and ("*" in retry_on or error_class in retry_on)


def run_with_retries(spec, rep: int, sweep: SweepInfo | None, job_dir: Path) -> TrialOutcome:
    """Run a repetition; retry it (a new trial each time) while it fails transiently.

    Waits ``retry_backoff_s`` before the first retry and twice as long before each
    next one. Every attempt keeps its own trial directory and MLflow run; the
    superseded ones are listed in ``retried.txt`` beside the job's ``trials.txt``.
    """
    c = spec.cfg
    for attempt in range(c.max_retries + 1):
        outcome = run_trial(spec, rep, sweep, attempt=attempt)
        if outcome.status == "finished" or attempt == c.max_retries:
            return outcome
        if not _transient(outcome.error_class, c.retry_on):
            return outcome
        delay = c.retry_backoff_s * 2**attempt
        log.warning(
            "repetition %d failed (%s); retry %d/%d in %.3g s",
            rep,
            outcome.error_class,
            attempt + 1,
            c.max_retries,
            delay,
        )
        with open(job_dir / RETRIED_FILE, "a") as f:
            f.write(f"{outcome.trial_dir}\n")
        time.sleep(delay)
    return outcome


def _sweep_info(hc) -> SweepInfo:
    manifest = read_manifest(hc.sweep.dir) or {}
    return SweepInfo(
        sweep_id=manifest.get("sweep_id", sweep_id_of(hc.sweep.dir)),
        sweep_dir=str(hc.sweep.dir),
        parent_run_id=manifest.get("parent_run_id"),
        tracking_uri=manifest.get("tracking_uri"),
        job_num=int(hc.job.num),
        started_at=manifest.get("started_at"),
    )


def _report(spec, outcomes: list[TrialOutcome]) -> None:
    for o in outcomes:
        if o.status == "finished":
            p99 = "n/a" if o.p99_ms is None else f"{o.p99_ms:.3f} ms"
            print(
                f"{spec.service.name}: {o.throughput:.6g} {o.throughput_unit}, p99 {p99}"
                f"{'' if o.valid else '  (INVALID: see metrics.json validity)'}"
            )
            if o.quality:  # the first figures of merit (all of them are in metrics.json)
                shown = list(o.quality.items())[:6]
                print("  quality: " + ", ".join(f"{k} {v:.4g}" for k, v in shown))
        elif o.error_kind == "unexpected":
            print(
                f"{spec.service.name}: FAILED, unexpected {o.error_class}: {o.error_message}\n"
                f"  traceback: {o.trial_dir}/logs/traceback.txt"
            )
        else:
            print(
                f"{spec.service.name}: FAILED [{o.error_class}] {o.error_message}; "
                f"see {o.trial_dir}/logs/"
            )
        print(f"  results: {o.trial_dir}")
    if not spec.cfg.tracking.upload:
        return
    if any(o.run_id is None for o in outcomes):
        print("  not in MLflow yet (tracking unreachable): run `benchflow sync` when it is back")
    else:
        print(ui_hint(spec.cfg.tracking.uri))
