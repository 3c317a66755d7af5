"""Plan and budget: what a sweep would request from Slurm, and whether it may.

``benchflow plan OVERRIDES…`` expands a sweep into its jobs — in the order the
sweep runs them (``order``: with ``interleaved`` or ``random`` a configuration's
repetitions are separate jobs, :func:`benchflow.config.compose.order_jobs`) — and
prints each one's request and the totals in GPU-hours and CPU-hours (requested
time limits, an upper bound of what the sweep can burn). At submission, a Slurm sweep over
``budget.gpu_hours`` or ``budget.cpu_hours`` is refused (exit 2) unless
``approve=true`` or an administrator recorded an approval for this exact sweep
(``benchflow plan --approve-as NAME OVERRIDES…`` writes it into
``budget.approvals_dir``, a directory only administrators can write). On Slurm it
also names the nodes of the partition each job can land on (:meth:`Plan.placement`).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from benchflow.config import PREVALIDATED, ConfigError, TrialSpec, composing, sweep_jobs, validate
from benchflow.config.compose import order_jobs, sweep_order
from benchflow.sweeps.slurm.request import (
    SITE_KEYS,
    NodeInfo,
    SlurmRequest,
    cluster_nodes,
    request_for,
)

SLURM_LAUNCHER = "hydra_plugins.benchflow_plugins.slurm_launcher.BenchflowSlurmLauncher"


@dataclass(frozen=True)
class PlannedJob:
    num: int
    overrides: tuple[str, ...]
    spec: TrialSpec
    request: SlurmRequest

    @property
    def repetitions(self) -> list[int]:
        """The repetitions this job runs (one, in an interleaved or random sweep)."""
        return self.spec.repetitions_run


@dataclass(frozen=True)
class Plan:
    jobs: list[PlannedJob]  # in launch order
    launcher: str
    site: dict[str, Any]
    order: str = "blocked"
    configs: list[PlannedJob] | None = None  # one per configuration (Hydra's expansion)

    @property
    def on_slurm(self) -> bool:
        return self.launcher == SLURM_LAUNCHER

    def placement(self) -> dict[tuple[str, SlurmRequest], list[str]] | None:
        """The nodes each distinct (service, request) can land on, from ``sinfo`` of the
        sweep's partition (None: not on Slurm, or the cluster cannot be asked)."""
        if not self.on_slurm:
            return None
        nodes = cluster_nodes(self.site.get("partition"))
        if nodes is None:
            return None
        return {
            (j.spec.service.name, j.request): eligible_nodes(j.request, nodes) for j in self.jobs
        }

    @property
    def gpu_hours(self) -> float:
        return sum(j.request.gpu_hours for j in self.jobs)

    @property
    def cpu_hours(self) -> float:
        return sum(j.request.cpu_hours for j in self.jobs)

    @property
    def trials(self) -> int:
        return sum(len(j.repetitions) for j in self.jobs)

    @property
    def trial_order(self) -> list[tuple[int, int]]:
        """(job, repetition) of every trial, in the order the sweep starts them."""
        return [(j.num, k) for j in self.jobs for k in j.repetitions]

    @property
    def budget(self):
        return self.jobs[0].spec.cfg.budget

    @property
    def fingerprint(self) -> str:
        """Identity of what the sweep requests: the same sweep, in any order, any day."""
        from benchflow.run.trial import trial_config_hash

        # per configuration, whatever the order (an approval holds for any order)
        items = sorted(
            f"{trial_config_hash(j.spec)}x{j.spec.cfg.repetitions}:{j.request}"
            for j in self.configs or self.jobs
        )
        return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]

    def over_budget(self) -> list[str]:
        b, out = self.budget, []
        if self.gpu_hours > b.gpu_hours:
            out.append(f"{self.gpu_hours:.4g} GPU-hours > budget.gpu_hours={b.gpu_hours:g}")
        if self.cpu_hours > b.cpu_hours:
            out.append(f"{self.cpu_hours:.4g} CPU-hours > budget.cpu_hours={b.cpu_hours:g}")
        return out


def eligible_nodes(req: SlurmRequest, nodes: list[NodeInfo]) -> list[str]:
    """The nodes that offer what one node of ``req`` asks (CPUs, memory, GPUs), less the
    node it must keep off."""
    per_node_cpus = math.ceil(req.ntasks / req.nodes) * req.cpus_per_task
    return [
        n.name
        for n in nodes
        if n.cpus >= per_node_cpus
        and n.mem_mb >= req.mem_gb * 1024
        and n.gpus >= req.gpus_per_node
        and n.name != req.exclude
    ]


def make_plan(overrides: list[str], multirun: bool = True, config_dir: str | None = None) -> Plan:
    """Expand ``overrides`` into jobs with their requests (raises ConfigError)."""
    jobs = sweep_jobs(overrides, multirun)
    with composing(config_dir) as composer:
        hydra = composer.compose(jobs[0], with_hydra=True).hydra
        launcher = str(OmegaConf.select(hydra, "launcher._target_") or "")
        site = {k: OmegaConf.select(hydra, f"launcher.{k}") for k in SITE_KEYS}
        specs = [
            PREVALIDATED.get(tuple(job)) or validate(composer.compose(job), tuple(job))
            for job in jobs
        ]
    configs = [
        PlannedJob(i, tuple(job), spec, request_for(spec, site))
        for i, (job, spec) in enumerate(zip(jobs, specs, strict=True))
    ]
    ordered = order_jobs(jobs, specs) if multirun else list(zip(jobs, specs, strict=True))
    planned = []
    with composing(config_dir) as composer:
        for job, spec in ordered:
            planned += _jobs_of(len(planned), job, spec, site, composer)
    return Plan(planned, launcher, site, sweep_order(specs), configs)


def _jobs_of(num: int, job: list[str], spec: TrialSpec, site, composer) -> list[PlannedJob]:
    """One job, or a search's probes: a search runs up to ``search.probe_count`` probe trials,
    each a job of the probe's own request (search=none), one after another."""
    if spec.cfg.search.kind == "none":
        return [PlannedJob(num, tuple(job), spec, job_request(spec, site))]
    base = [o for o in job if not o.split("=", 1)[0].lstrip("+~").startswith("search")]
    probe = validate(composer.compose([*base, "search=none"]), tuple(base))
    n = spec.cfg.search.probe_count
    request = job_request(probe, site)
    label = f"{spec.cfg.search.kind} probe"
    return [
        PlannedJob(num + k, (*job, f"({label} {k + 1} of at most {n})"), probe, request)
        for k in range(n)
    ]


def job_request(spec: TrialSpec, site: dict[str, Any]) -> SlurmRequest:
    """The request of a job running ``spec.repetitions_run`` (its time limit counts the
    trials it runs: one, for a job of an interleaved sweep)."""
    return request_for(spec, site)


ORDER_TEXT = {
    "interleaved": "interleaved: repetition 0 of every configuration, then repetition 1, ...",
    "random": "random: a permutation of all trials drawn from the sweep's seed",
    "blocked": "blocked: each configuration's repetitions one after the other",
}


# -- approvals ---------------------------------------------------------------------
def approval_path(plan: Plan) -> Path | None:
    d = plan.budget.approvals_dir
    return None if not d else Path(d).expanduser() / f"{plan.fingerprint}.json"


def approval(plan: Plan) -> dict | None:
    """The administrator's approval recorded for this sweep, if any."""
    path = approval_path(plan)
    if path is None or not path.exists():
        return None
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("fingerprint") != plan.fingerprint:
        return None
    return rec


def record_approval(plan: Plan, by: str, overrides: list[str]) -> Path:
    """Write an approval for this exact sweep (an administrator's act)."""
    path = approval_path(plan)
    if path is None:
        raise ConfigError(
            "budget.approvals_dir", None, "set it to the directory where approvals are kept"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = {
        "fingerprint": plan.fingerprint,
        "approved_by": by,
        "recorded_by_user": getpass.getuser(),
        "approved_at": time.time(),
        "gpu_hours": plan.gpu_hours,
        "cpu_hours": plan.cpu_hours,
        "trials": plan.trials,
        "overrides": overrides,
    }
    path.write_text(json.dumps(rec, indent=2))
    return path


def check_budget(plan: Plan) -> None:
    """Refuse (ConfigError, exit 2) a Slurm sweep over budget that nobody approved."""
    if not plan.on_slurm:
        return
    over = plan.over_budget()
    if not over or plan.jobs[0].spec.cfg.approve or approval(plan) is not None:
        return
    raise ConfigError(
        "budget",
        "; ".join(over),
        f"sweep refused ({len(plan.jobs)} jobs, {plan.trials} trials; `benchflow plan` shows "
        "them): submit with approve=true, or have an administrator record an approval with "
        f"`benchflow plan --approve-as NAME ...` (sweep fingerprint {plan.fingerprint})",
    )
