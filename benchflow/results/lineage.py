"""Where a result came from: code, host, scheduler, container, versions, GPU.

Everything here is read from the process's surroundings (git, the environment
Slurm and the container launcher set, installed packages, NVML), never from the
config, so a result cannot claim a lineage it does not have.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

# Set by benchflow's container launcher (servers.py) and recorded on every run.
CONTAINER_DIGEST_ENV = "BENCHFLOW_CONTAINER_DIGEST"

SLURM_VARS = {
    "job_id": "SLURM_JOB_ID",
    "array_job_id": "SLURM_ARRAY_JOB_ID",
    "array_task_id": "SLURM_ARRAY_TASK_ID",
    "nodelist": "SLURM_JOB_NODELIST",
    "partition": "SLURM_JOB_PARTITION",
    "account": "SLURM_JOB_ACCOUNT",
    "procid": "SLURM_PROCID",
}


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


@lru_cache(maxsize=8)
def git_info(path: str | None = None) -> dict[str, str | bool | None]:
    """Commit, branch and dirty flag of the repository holding ``path`` (default: cwd).

    Falls back to benchflow's own source tree (an editable install) when the
    working directory is not a repository.
    """
    for candidate in (Path(path or os.getcwd()), Path(__file__).resolve().parent):
        commit = _git(["rev-parse", "HEAD"], candidate)
        if commit:
            status = _git(["status", "--porcelain", "--untracked-files=no"], candidate)
            return {
                "commit": commit,
                "branch": _git(["rev-parse", "--abbrev-ref", "HEAD"], candidate),
                "dirty": bool(status),
                "repo": _git(["rev-parse", "--show-toplevel"], candidate),
            }
    return {"commit": None, "branch": None, "dirty": None, "repo": None}


def slurm_info(environ=os.environ) -> dict[str, str]:
    return {k: environ[v] for k, v in SLURM_VARS.items() if environ.get(v)}


def package_version(dist: str | None) -> str | None:
    if not dist:
        return None
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def gpu_info() -> dict[str, str | int] | None:
    """GPU model, count and driver version through NVML; None without a GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no library, no driver, no device: not an error
        return None
    try:
        n = pynvml.nvmlDeviceGetCount()
        if n == 0:
            return None
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
        driver = pynvml.nvmlSystemGetDriverVersion()
        return {
            "model": name.decode() if isinstance(name, bytes) else name,
            "count": n,
            "driver": driver.decode() if isinstance(driver, bytes) else driver,
        }
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def collect(client_library: str | None = None) -> dict:
    """The lineage block of meta.json."""
    return {
        "git": git_info(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "slurm": slurm_info(),
        "container_digest": os.environ.get(CONTAINER_DIGEST_ENV),
        "versions": {
            "benchflow": package_version("benchflow"),
            "python": sys.version.split()[0],
            "mlflow": package_version("mlflow"),
            **({client_library: package_version(client_library)} if client_library else {}),
        },
        "gpu": gpu_info(),
    }


def tags(lineage: dict | None = None) -> dict[str, str]:
    """Lineage as MLflow tags (strings only, empty values left out)."""
    lin = lineage or collect()
    git, gpu = lin["git"], lin.get("gpu") or {}
    out = {
        "mlflow.source.git.commit": git.get("commit"),
        "benchflow.git.branch": git.get("branch"),
        "benchflow.git.dirty": None if git.get("dirty") is None else str(git["dirty"]).lower(),
        "benchflow.host": lin.get("host"),
        "benchflow.container_digest": lin.get("container_digest"),
        "benchflow.version": lin["versions"].get("benchflow"),
        "benchflow.gpu.model": gpu.get("model"),
        "benchflow.gpu.count": gpu.get("count"),
        "benchflow.gpu.driver": gpu.get("driver"),
    }
    out.update({f"slurm.{k}": v for k, v in lin.get("slurm", {}).items()})
    if lin.get("shards"):  # client i ran on the i-th host listed
        out["benchflow.shard_hosts"] = ",".join(str(r.get("host")) for r in lin["shards"])
    return {k: str(v) for k, v in out.items() if v not in (None, "")}
