"""One job of a sweep as the launcher follows it on the login node
(:class:`SweepJob`): its overrides, validated spec and Slurm request, its record
in ``slurm.json``, and the submitit job of its current attempt, a pending retry
and its result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.utils import JobReturn

from benchflow.config import TrialSpec
from benchflow.sweeps.slurm.record import JobRecord
from benchflow.sweeps.slurm.request import SlurmRequest


@dataclass
class SweepJob:
    num: int
    overrides: list[str]
    spec: TrialSpec
    request: SlurmRequest
    record: JobRecord
    sjob: Any = None  # the submitit Job of the current attempt
    resubmit_at: float | None = None
    result: JobReturn | None = None
    logs_attached: set[str] = field(default_factory=set)
