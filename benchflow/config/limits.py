"""Resource needs and hard limits.

*Needs* are what a driver or experiment declares it requires
(``service.resources``: ``cpus``, ``mem_gb``, ``gpus``, ``time_min``); a
scheduler reserves them. *Limits* are what a run allows at most (``limits.*``,
set by whoever runs it, e.g. an administrator): a trial that goes over one is
ended and recorded as failed with error class ``limit_exceeded``.

Locally a limited trial runs in a worker process watched by the harness
(:mod:`benchflow.run.supervisor`): wall-clock time from the worker's start, and the
resident memory (RSS) of the worker and every process below it (client
processes, a SUT it launched) sampled every ``limits.poll_s``; CPUs and GPUs are
limited by affinity and ``CUDA_VISIBLE_DEVICES``; ``address_space_gb`` adds an
``RLIMIT_AS`` to every process of the trial. On Slurm the job's own limits
carry them (:func:`scheduler_request`; docs/benchmarks.md has the mapping).

A sweep's limits: ``time_s`` is a wall-clock budget from the sweep's start
(read from its manifest by every trial, on any node): each trial's time limit
is cut to what is left, and a trial starting after it is spent fails at once;
``mem_gb`` caps the memory of the trials running at one time (the basic
launcher runs one at a time, so it caps each trial; on Slurm it bounds the
array's parallelism); ``max_trials`` refuses a larger sweep before anything runs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from drivers.base import ConfigRefused, DriverError, Resources

GB = 1024**3
# On Slurm the job holds the harness too (Hydra, the MLflow client) besides the
# trial's processes, and needs time to start and to upload: its request adds these.
HARNESS_MEM_GB = 0.5
HARNESS_TIME_S = 120


LIMIT_EXCEEDED = "limit_exceeded"


class LimitExceeded(DriverError):
    """The trial went over a hard limit (time or memory) and was ended."""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message, LIMIT_EXCEEDED)
        self.details = details


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrialLimits(_Strict):
    time_s: float | None = Field(None, gt=0, description="wall clock of one trial")
    mem_gb: float | None = Field(None, gt=0, description="RSS of the trial's processes")
    cpus: int | None = Field(None, ge=1, description="CPU cores (affinity)")
    gpus: int | None = Field(None, ge=0, description="GPUs (CUDA_VISIBLE_DEVICES)")
    address_space_gb: float | None = Field(
        None, gt=0, description="RLIMIT_AS of each process (virtual memory; a backstop)"
    )


class SweepLimits(_Strict):
    time_s: float | None = Field(None, gt=0, description="wall-clock budget of the sweep")
    mem_gb: float | None = Field(None, gt=0, description="memory of the trials running at once")
    max_trials: int | None = Field(None, ge=1, description="refuse larger sweeps")


class LimitsConfig(_Strict):
    trial: TrialLimits = Field(default_factory=TrialLimits)
    sweep: SweepLimits = Field(default_factory=SweepLimits)
    poll_s: float = Field(0.1, ge=0.01, le=5, description="how often the watchdog samples")
    grace_s: float = Field(5, ge=0, description="after the time limit: SIGTERM, then SIGKILL")


@dataclass(frozen=True)
class Enforced:
    """The limits one trial runs under (None: no limit)."""

    time_s: float | None = None
    time_key: str | None = None
    mem_bytes: int | None = None
    mem_key: str | None = None
    cpus: int | None = None
    gpus: int | None = None
    address_space_bytes: int | None = None
    poll_s: float = 0.1
    grace_s: float = 5.0

    @property
    def active(self) -> bool:
        return any(
            v is not None
            for v in (self.time_s, self.mem_bytes, self.cpus, self.gpus, self.address_space_bytes)
        )

    def describe(self) -> dict[str, object]:
        return {
            "time_s": self.time_s,
            "time_key": self.time_key,
            "mem_gb": None if self.mem_bytes is None else self.mem_bytes / GB,
            "mem_key": self.mem_key,
            "cpus": self.cpus,
            "gpus": self.gpus,
            "address_space_gb": (
                None if self.address_space_bytes is None else self.address_space_bytes / GB
            ),
        }


def enforced(limits: LimitsConfig, sweep_started_at: float | None, now: float) -> Enforced:
    """The limits of a trial starting at ``now``; raises LimitExceeded when the
    sweep's time budget is already spent."""
    t, s = limits.trial, limits.sweep
    time_s, time_key = t.time_s, "limits.trial.time_s" if t.time_s else None
    if s.time_s is not None:
        left = s.time_s - (now - (sweep_started_at if sweep_started_at is not None else now))
        if left <= 0:
            raise LimitExceeded(
                f"time limit exceeded: the sweep's budget limits.sweep.time_s = {s.time_s:g} s "
                "was spent before this trial started",
                {"resource": "time", "key": "limits.sweep.time_s", "limit": s.time_s},
            )
        if time_s is None or left < time_s:
            time_s, time_key = left, "limits.sweep.time_s"
    mem_gb, mem_key = t.mem_gb, "limits.trial.mem_gb" if t.mem_gb else None
    if s.mem_gb is not None and (mem_gb is None or s.mem_gb < mem_gb):
        # The basic launcher runs one trial at a time: the sweep's cap is each trial's.
        mem_gb, mem_key = s.mem_gb, "limits.sweep.mem_gb"
    return Enforced(
        time_s=time_s,
        time_key=time_key,
        mem_bytes=None if mem_gb is None else int(mem_gb * GB),
        mem_key=mem_key,
        cpus=t.cpus,
        gpus=t.gpus,
        address_space_bytes=None if t.address_space_gb is None else int(t.address_space_gb * GB),
        poll_s=limits.poll_s,
        grace_s=limits.grace_s,
    )


def check_needs(resources: Resources, declared: bool, limits: LimitsConfig) -> None:
    """Refuse (exit 2) an experiment whose declared needs exceed the limits.

    Only needs a driver or its config declared count: benchflow's defaults
    (4 GB, 30 min) are a scheduler's placeholder, not a claim.
    """
    if not declared:
        return
    t = limits.trial
    pairs = (
        ("mem_gb", resources.mem_gb, t.mem_gb, "limits.trial.mem_gb"),
        ("mem_gb", resources.mem_gb, limits.sweep.mem_gb, "limits.sweep.mem_gb"),
        ("time_min", resources.time_min * 60, t.time_s, "limits.trial.time_s"),
        ("cpus", resources.cpus, t.cpus, "limits.trial.cpus"),
        ("gpus", resources.gpus, t.gpus, "limits.trial.gpus"),
    )
    for field, need, cap, key in pairs:
        if cap is not None and need > cap:
            shown = resources.time_min if field == "time_min" else need
            raise ConfigRefused(
                f"service.resources.{field}",
                shown,
                f"the experiment needs more than {key} = {cap:g} allows; "
                f"raise the limit or lower the need",
            )


def check_sweep(n_trials: int, limits: LimitsConfig) -> None:
    """Refuse a sweep with more trials than ``limits.sweep.max_trials`` (exit 2)."""
    cap = limits.sweep.max_trials
    if cap is not None and n_trials > cap:
        raise ConfigRefused(
            "limits.sweep.max_trials",
            cap,
            f"this sweep has {n_trials} trials (jobs × repetitions); split it or raise the limit",
        )


def host_shortfalls(resources: Resources) -> list[str]:
    """What this host lacks of the declared needs (warnings, not failures)."""
    import psutil

    out = []
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cpus is not None and resources.cpus > cpus:
        out.append(f"needs {resources.cpus} CPUs, {cpus} available here")
    total_gb = psutil.virtual_memory().total / GB
    if resources.mem_gb > total_gb:
        out.append(f"needs {resources.mem_gb:g} GB of memory, this host has {total_gb:.1f} GB")
    if resources.gpus:
        n = _gpu_count()
        if resources.gpus > n:
            out.append(f"needs {resources.gpus} GPUs, {n} visible here")
    return out


def _gpu_count() -> int:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no library: no GPUs
        return 0


# -- Slurm -------------------------------------------------------------------------
@dataclass(frozen=True)
class SchedulerRequest:
    """What one trial's Slurm job asks for (submitit / hydra-submitit-launcher names)."""

    cpus_per_task: int
    mem_gb: float
    gpus_per_node: int
    timeout_min: int
    array_parallelism: int | None  # from limits.sweep.mem_gb; None: no cap

    def sbatch(self) -> list[str]:
        """The same as sbatch options."""
        out = [
            f"--cpus-per-task={self.cpus_per_task}",
            f"--mem={math.ceil(self.mem_gb * 1024)}M",
            f"--time={self.timeout_min}",
        ]
        if self.gpus_per_node:
            out.append(f"--gpus-per-node={self.gpus_per_node}")
        return out


def scheduler_request(resources: Resources, limits: LimitsConfig) -> SchedulerRequest:
    """Map needs and limits to a Slurm job's own limits.

    The job asks for the experiment's needs, each capped by its limit, plus the
    harness's share (:data:`HARNESS_MEM_GB`, :data:`HARNESS_TIME_S`); Slurm
    ends a job that goes over its request (``TIMEOUT``, ``OUT_OF_MEMORY``),
    which the launcher records as ``limit_exceeded``. The trial inside the job
    also runs benchflow's own watchdog for ``limits.trial.*``.
    """
    t, s = limits.trial, limits.sweep

    def capped(need: float, cap: float | None) -> float:
        return need if cap is None else min(need, cap)

    trial_mem = capped(capped(resources.mem_gb, t.mem_gb), s.mem_gb)
    trial_time = capped(capped(resources.time_min * 60, t.time_s), s.time_s)
    mem = trial_mem + HARNESS_MEM_GB
    return SchedulerRequest(
        cpus_per_task=int(capped(resources.cpus, t.cpus)),
        mem_gb=round(mem, 3),
        gpus_per_node=int(capped(resources.gpus, t.gpus)),
        timeout_min=max(1, math.ceil((trial_time + HARNESS_TIME_S) / 60)),
        array_parallelism=None if s.mem_gb is None else max(1, int(s.mem_gb // trial_mem)),
    )
