"""Servers started as jobs, by id: their instance records and endpoints.

``benchflow servers start`` writes ``<state dir>/<id>.json`` once its server is
ready (:mod:`benchflow.sweeps.slurm.servers`); a trial with ``service.server=ID``
reads the endpoint from it (:func:`endpoint_of`). The state directory must be
visible from the login node and the compute nodes (default
``~/.benchflow/servers``; ``BENCHFLOW_SERVERS_DIR`` or ``--state-dir``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


def state_dir(override: str | None = None) -> Path:
    d = override or os.environ.get("BENCHFLOW_SERVERS_DIR") or "~/.benchflow/servers"
    return Path(d).expanduser()


@dataclass
class Instance:
    id: str
    service: str
    job_id: str | None
    state: str  # starting | ready | failed
    endpoint: str | None = None
    node: str | None = None
    submitted_at: float = 0.0
    ready_at: float | None = None
    error: str | None = None

    @classmethod
    def load(cls, path: Path) -> Instance:
        return cls(**json.loads(path.read_text()))

    def save(self, d: Path) -> None:
        tmp = d / f".{self.id}.json.tmp"
        tmp.write_text(json.dumps(self.__dict__, indent=2))
        tmp.replace(d / f"{self.id}.json")


def read_instance(server_id: str, d: Path | None = None) -> Instance | None:
    path = (d or state_dir()) / f"{server_id}.json"
    return Instance.load(path) if path.exists() else None


def endpoint_of(server_id: str) -> str:
    """The endpoint of a ready server (``service.server=ID``); KeyError if none."""
    inst = read_instance(server_id)
    if inst is None or inst.state != "ready" or not inst.endpoint:
        raise KeyError(server_id)
    return inst.endpoint
