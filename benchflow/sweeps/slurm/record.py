"""A sweep's Slurm record (``<sweep dir>/slurm.json``) and the Slurm commands around it.

The launcher writes which Slurm job runs which job of the sweep, every attempt
(resubmissions included) and how each ended; ``benchflow status`` and
``benchflow stop`` read it. ``STOP`` beside it tells the launcher not to
resubmit anything any more.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchflow.results import read_json, write_json

RECORD = "slurm.json"
STOP = "STOP"


@dataclass
class Attempt:
    job_id: str  # as submitit names it: "123" or "123_4" for an array task
    submitted_at: float
    state: str | None = None  # the Slurm state it ended in (None: not ended yet)


@dataclass
class JobRecord:
    num: int
    overrides: list[str]
    request: dict[str, Any] | None
    repetitions: int = 1
    status: str = "submitted"  # submitted | skipped | finished | failed
    attempts: list[Attempt] = field(default_factory=list)
    note: str | None = None

    @property
    def job_id(self) -> str | None:
        return self.attempts[-1].job_id if self.attempts else None


@dataclass
class SweepRecord:
    sweep_dir: Path
    jobs: dict[int, JobRecord] = field(default_factory=dict)

    @classmethod
    def load(cls, sweep_dir: Path) -> SweepRecord | None:
        path = Path(sweep_dir) / RECORD
        if not path.exists():
            return None
        raw = read_json(path)
        rec = cls(Path(sweep_dir))
        for j in raw.get("jobs", []):
            attempts = [Attempt(**a) for a in j.pop("attempts", [])]
            rec.jobs[j["num"]] = JobRecord(**j, attempts=attempts)
        return rec

    def save(self) -> None:
        jobs = [asdict(j) for _, j in sorted(self.jobs.items())]
        write_json(self.sweep_dir / RECORD, {"updated_at": time.time(), "jobs": jobs})

    def stopped(self) -> bool:
        return (self.sweep_dir / STOP).exists()

    def job_ids(self) -> list[str]:
        return [a.job_id for j in self.jobs.values() for a in j.attempts]


# -- Slurm commands ---------------------------------------------------------------
def squeue_states(job_ids: list[str]) -> dict[str, str]:
    """Slurm state of each job still known to the controller ("123_4" -> RUNNING)."""
    if not job_ids:
        return {}
    out = _run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(_base_ids(job_ids))])
    return dict(line.split("|", 1) for line in out.splitlines() if "|" in line)


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    """Final (or current) state of each job from accounting ("123_4" -> CANCELLED)."""
    if not job_ids:
        return {}
    out = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)])
    states = {}
    for line in out.splitlines():
        if "|" in line:
            jid, state = line.split("|", 1)
            states[jid] = state.split()[0]
    return states


def raw_job_id(job_id: str) -> str | None:
    """The unique job id of an array task ("123_4" -> "127"), which ``%j`` expands to."""
    if "_" not in job_id:
        return job_id
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        out = _run(["sacct", "-n", "-X", "-P", "-o", "JobIDRaw", "-j", job_id])
        first = out.split()
        return first[0] if first else None
    return None


def scancel(job_ids: list[str]) -> None:
    if job_ids:
        _run(["scancel", *sorted(set(_base_ids(job_ids)))])


def _base_ids(job_ids: list[str]) -> list[str]:
    return sorted({j.split("_")[0] for j in job_ids})


def _run(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
