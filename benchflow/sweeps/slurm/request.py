"""What one job of a sweep asks Slurm for, derived from its trial's config.

A job runs one configuration's repetitions, so it requests what its service
states in ``service.resources`` (GPUs, CPUs, memory, nodes, time per trial)
times its repetitions for the time limit, plus one Slurm task per client when
the clients are spread over tasks (``client_launch``). Site-wide values set in
``hydra.launcher`` (non-null) win over the service's own.

A trial that targets a server started as a job (``service.server=ID``) keeps its
load generator off that server's node (``--exclude``) when the partition has
another node (``hydra.launcher.server_node=avoid``, the default; ``share`` lets
them meet): clients beside the server take its CPUs and share its network
stack, and the figures then describe neither alone.
"""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from benchflow.config import TrialSpec

# The ``hydra.launcher`` keys a job's request reads (the rest go to sbatch as they are).
SITE_KEYS = (
    "nodes",
    "tasks_per_node",
    "cpus_per_task",
    "mem_gb",
    "gpus_per_node",
    "timeout_min",
    "partition",
    "server_node",
)


@dataclass(frozen=True, order=True)
class SlurmRequest:
    """The resources of one Slurm job (hashable: jobs with equal requests share an array)."""

    nodes: int = 1
    ntasks: int = 1
    cpus_per_task: int = 1
    mem_gb: float = 4
    gpus_per_node: int = 0
    time_min: int = 30
    exclude: str | None = None  # node the job must not land on (a targeted server's)

    @property
    def cpus(self) -> int:
        return self.ntasks * self.cpus_per_task

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def gpu_hours(self) -> float:
        return self.gpus * self.time_min / 60

    @property
    def cpu_hours(self) -> float:
        return self.cpus * self.time_min / 60

    def describe(self) -> str:
        parts = [f"{self.nodes} node(s)", f"{self.ntasks} task(s) x {self.cpus_per_task} CPU"]
        if self.gpus_per_node:
            parts.append(f"{self.gpus_per_node} GPU/node")
        parts += [f"{self.mem_gb:g} GB", f"{self.time_min} min"]
        if self.exclude:
            parts.append(f"not on {self.exclude} (its server's node)")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def clients_over_tasks(spec: TrialSpec) -> bool:
    """Whether the trial's clients run as Slurm tasks (srun) rather than local processes."""
    c = spec.cfg
    if c.clients <= 1:
        return False
    if c.client_launch == "auto":
        return spec.service.resources.nodes > 1
    return c.client_launch == "srun"


def request_for(spec: TrialSpec, site: dict[str, Any] | None = None) -> SlurmRequest:
    """The request of the job running ``spec`` (site-wide non-null values win)."""
    site = site or {}
    r = spec.service.resources
    ntasks = spec.cfg.clients if clients_over_tasks(spec) else 1
    nodes = site.get("nodes") or r.nodes
    if site.get("tasks_per_node"):
        ntasks = max(ntasks, site["tasks_per_node"] * nodes)
    return SlurmRequest(
        nodes=nodes,
        ntasks=max(ntasks, nodes),
        cpus_per_task=site.get("cpus_per_task") or r.cpus,
        mem_gb=site.get("mem_gb") or r.mem_gb,
        gpus_per_node=r.gpus if site.get("gpus_per_node") is None else site["gpus_per_node"],
        # a job runs spec.repetitions_run: all repetitions, or one in an interleaved sweep
        time_min=site.get("timeout_min") or r.time_min * len(spec.repetitions_run),
        exclude=_server_node(spec, site),
    )


def _server_node(spec: TrialSpec, site: dict[str, Any]) -> str | None:
    """The node of the server this trial targets, when its clients should keep off it."""
    server = getattr(spec.service, "server", None)
    if not server or (site.get("server_node") or "avoid") == "share":
        return None
    from benchflow.sut.endpoints import read_instance

    inst = read_instance(str(server))
    if inst is None or not inst.node:
        return None
    return inst.node if _has_other_nodes(inst.node, site.get("partition")) else None


def _has_other_nodes(node: str, partition: str | None) -> bool:
    """Whether the partition (default: the default one) has a node besides ``node``."""
    nodes = cluster_nodes(partition)
    # cannot tell: never exclude the only node a job could run on
    return nodes is not None and any(n.name != node for n in nodes)


@dataclass(frozen=True)
class NodeInfo:
    name: str
    cpus: int
    mem_mb: int
    gpus: int


@lru_cache(maxsize=16)
def cluster_nodes(partition: str | None) -> list[NodeInfo] | None:
    """The partition's nodes (default: the default partition) as ``sinfo`` sees them."""
    cmd = ["sinfo", "-h", "-N", "-o", "%N|%c|%m|%G"] + (["-p", partition] if partition else [])
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    nodes = {}
    for line in out.splitlines():
        name, cpus, mem, gres = line.split("|")
        gpus = sum(int(n) for n in re.findall(r"gpu(?::[^:,()]+)?:(\d+)", gres))
        nodes[name] = NodeInfo(name, int(cpus), int(mem.rstrip("+")), gpus)
    return list(nodes.values())


def submitit_parameters(req: SlurmRequest, gpu_gres: str) -> dict[str, Any]:
    """submitit ``update_parameters`` for a request.

    submitit counts one result per task (nodes x tasks per node); benchflow runs
    one coordinator task per job whatever the allocation, so nodes and tasks go
    to sbatch directly and the job's own step is pinned to one task.
    """
    params: dict[str, Any] = {
        "nodes": 1,
        "tasks_per_node": 1,
        "cpus_per_task": req.cpus_per_task,
        "timeout_min": req.time_min,
    }
    extra: dict[str, Any] = {"mem": _mem(req.mem_gb)}
    if req.gpus_per_node:
        extra["gres"] = gpu_gres.format(n=req.gpus_per_node)
    if req.exclude:
        extra["exclude"] = req.exclude
    srun_args: list[str] = []
    if req.nodes > 1 or req.ntasks > 1:
        extra.update(
            nodes=req.nodes, ntasks=req.ntasks, ntasks_per_node=math.ceil(req.ntasks / req.nodes)
        )
        srun_args = ["--nodes=1", "--ntasks=1"]
    return {"params": params, "sbatch": extra, "srun_args": srun_args}


def _mem(gb: float) -> str:
    return f"{int(gb)}G" if gb == int(gb) else f"{math.ceil(gb * 1024)}M"
