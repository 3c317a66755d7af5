"""One Hydra job: validate its config, run its repetitions as trials, report.

In a multirun each job is one configuration of the sweep (run by the basic
launcher in this process, or by submitit on a Slurm node); its repetitions are
separate trials sharing one config hash.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from benchflow import sweep as sweeps
from benchflow.config import EXIT_CONFIG, ConfigError, validate
from benchflow.trial import SweepInfo, TrialOutcome, run_trial

log = logging.getLogger("benchflow.jobs")


def run_job(cfg: DictConfig) -> list[TrialOutcome]:
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
    sweep = _sweep_info(hc) if multirun else None
    listing = Path(hc.runtime.output_dir) / sweeps.TRIALS_FILE
    outcomes = []
    for rep in range(spec.cfg.repetitions):
        outcome = run_trial(spec, rep, sweep)
        outcomes.append(outcome)
        with open(listing, "a") as f:
            f.write(f"{outcome.trial_dir}\n")
    if not multirun:
        _report(spec, outcomes)
        if any(o.status != "finished" for o in outcomes):
            raise SystemExit(1)
    return outcomes


def _sweep_info(hc) -> SweepInfo:
    manifest = sweeps.read_manifest(hc.sweep.dir) or {}
    return SweepInfo(
        sweep_id=manifest.get("sweep_id", sweeps.sweep_id_of(hc.sweep.dir)),
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


def ui_hint(uri: str | None) -> str:
    from benchflow.tracking import resolved_uri

    store = resolved_uri(uri)
    if store.startswith(("http://", "https://")):
        return f"  see them in MLflow: {store}"
    return f"  see them in MLflow: mlflow ui --backend-store-uri {store}"
