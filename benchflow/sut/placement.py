"""CPU placement on one node: the load generator on some CPUs, the servers a trial
launches on others.

On a node shared by client and server, every CPU second the client spends is one
the server does not get, so a heavier client (Python against pgbench's C) lowers
the server's figure. ``placement.client_cpus`` pins the trial's worker process, and
with it every thread and client process it starts; ``placement.server_cpus`` pins
the servers the trial launches itself (``mode=embedded``, through
:class:`benchflow.sut.servers.ServerProcess`). Both take a Linux CPU list (``"0-3,8"``,
as ``taskset -c`` does) or a list of CPU ids.

A trial with a placement runs in a worker process (:mod:`benchflow.run.supervisor`), so
the harness's own affinity never changes. The CPUs must exist where the trial runs
(a Slurm node may differ from the login node): checked there, a failed trial
(``invalid_config``) otherwise.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The worker hands the server CPUs to ServerProcess through its environment: servers
# are launched deep inside drivers, and the variable reaches them without a parameter
# threaded through every driver.
SERVER_CPUS_ENV = "BENCHFLOW_SERVER_CPUS"


def parse_cpus(value: Any) -> list[int]:
    """``"0-2,5"``, ``[0, 1]`` or ``3`` → sorted CPU ids; ``ValueError`` on anything else."""
    if isinstance(value, bool):
        raise ValueError(f"not a CPU list: {value!r}")
    if isinstance(value, int):
        items: list[Any] = [value]
    elif isinstance(value, str):
        items = []
        for part in value.replace(" ", "").split(","):
            lo, dash, hi = part.partition("-")
            if not lo.isdigit() or (dash and not hi.isdigit()):
                raise ValueError(f"not a CPU list: {value!r} (e.g. '0-3,8')")
            if dash and int(hi) < int(lo):
                raise ValueError(f"not a CPU list: {value!r} (range {part} runs backwards)")
            items += range(int(lo), int(hi) + 1) if dash else [int(lo)]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError(f"not a CPU list: {value!r}")
    if not items or not all(isinstance(c, int) and not isinstance(c, bool) for c in items):
        raise ValueError(f"not a CPU list: {value!r} (CPU ids, e.g. [0, 1] or '0-1')")
    if any(c < 0 for c in items):
        raise ValueError(f"not a CPU list: {value!r} (CPU ids are >= 0)")
    return sorted(set(items))


def format_cpus(cpus: list[int] | set[int]) -> str:
    """CPU ids as a Linux CPU list (``[0, 1, 2, 5]`` → ``"0-2,5"``)."""
    out, run = [], []
    for c in sorted(cpus):
        if run and c != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(c)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


class PlacementConfig(BaseModel):
    """``placement.*``: which CPUs the load generator and the launched servers use."""

    model_config = ConfigDict(extra="forbid")

    client_cpus: list[int] | None = Field(
        None, description="the worker and its client processes (e.g. '1-3')"
    )
    server_cpus: list[int] | None = Field(
        None, description="servers the trial launches (mode=embedded), e.g. '0'"
    )

    @field_validator("client_cpus", "server_cpus", mode="before")
    @classmethod
    def _cpu_list(cls, v: Any) -> list[int] | None:
        return None if v is None else parse_cpus(v)

    @model_validator(mode="after")
    def _disjoint(self) -> PlacementConfig:
        if self.client_cpus and self.server_cpus:
            shared = set(self.client_cpus) & set(self.server_cpus)
            if shared:
                raise ValueError(
                    f"client_cpus and server_cpus share CPU(s) {format_cpus(shared)}: "
                    "the point is to keep them apart"
                )
        return self

    @property
    def active(self) -> bool:
        return bool(self.client_cpus or self.server_cpus)


class PlacementError(Exception):
    """CPUs asked for that this node does not offer: the trial fails as ``invalid_config``
    (:func:`benchflow.run.failures.describe` reads ``error_class``)."""

    error_class = "invalid_config"


def apply(placement: PlacementConfig) -> dict[str, list[int]]:
    """In the trial's worker: pin this process to the client CPUs and hand the server
    CPUs to the servers it will launch. Returns the CPUs in force, as the kernel
    reports them."""
    allowed = os.sched_getaffinity(0)  # a Slurm job's or a cgroup's CPUs, not the host's
    for key in ("client_cpus", "server_cpus"):
        cpus = getattr(placement, key)
        if cpus and not set(cpus) <= allowed:
            raise PlacementError(
                f"placement.{key}={format_cpus(cpus)}: CPU(s) {format_cpus(set(cpus) - allowed)} "
                f"are not available on this node (allowed here: {format_cpus(allowed)})"
            )
    applied: dict[str, list[int]] = {}
    if placement.client_cpus:
        os.sched_setaffinity(0, placement.client_cpus)
        applied["client_cpus"] = sorted(os.sched_getaffinity(0))
    if placement.server_cpus:
        os.environ[SERVER_CPUS_ENV] = format_cpus(placement.server_cpus)
        applied["server_cpus"] = list(placement.server_cpus)
    return applied


def server_cpus() -> list[int] | None:
    """The CPUs a launched server is pinned to (set by :func:`apply`), or None."""
    value = os.environ.get(SERVER_CPUS_ENV)
    return parse_cpus(value) if value else None
