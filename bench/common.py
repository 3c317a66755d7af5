"""What every bench section shares: a row type and a way to run benchflow for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Row:
    section: str
    figure: str
    value: float | None
    unit: str
    target: str = ""  # e.g. ">= 100000"
    ok: bool | None = None  # None: no target (informational)
    how: str = ""  # what was run, so anyone can rerun it


def check(value: float | None, op: str, bound: float) -> bool | None:
    if value is None:
        return False
    return {">=": value >= bound, "<=": value <= bound, "<": value < bound}[op]


class Workspace:
    """A scratch directory with its own MLflow store, where trials run as a user runs them."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="benchflow-bench-"))
        self.env = dict(
            os.environ,
            MLFLOW_TRACKING_URI=f"sqlite:///{self.dir}/mlflow.db",
            MLFLOW_DISABLE_TELEMETRY="true",
        )

    def trial(self, *overrides: str, timeout: float = 600) -> tuple[dict, dict, Path]:
        """Run one trial through `python -m benchflow`; returns (metrics, meta, trial_dir)."""
        scenario = f"bench{len(list(self.dir.glob('results/*')))}"
        cmd = [
            sys.executable,
            "-m",
            "benchflow",
            f"scenario={scenario}",
            "progress=off",
            *overrides,
        ]
        proc = subprocess.run(
            cmd, cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd[2:])} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            )
        (tdir,) = [
            p
            for p in (self.dir / "results" / scenario).iterdir()
            if p.is_dir() and not p.name.startswith("_")
        ]
        return (
            json.loads((tdir / "metrics.json").read_text()),
            json.loads((tdir / "meta.json").read_text()),
            tdir,
        )

    @staticmethod
    def how(*overrides: str) -> str:
        return "python -m benchflow " + " ".join(overrides)


@contextmanager
def llamacpp_stand_in(prefix: str) -> Iterator[tuple[str, Path, Path]]:
    """The CPU stand-in LLM server (Gemma 3 270M on llama.cpp), launched by the harness's
    own launcher: yields (url, GGUF path, data dir) and stops the server afterwards."""
    from benchflow.sut.servers import free_port, http_ready
    from drivers.base import RunSettings, TrialContext
    from drivers.inference import launchers

    data = Path(tempfile.mkdtemp(prefix=prefix))
    gguf = launchers.gguf_model(data)
    port = free_port()
    trial = TrialContext("bench", RunSettings(1, 1, 1, 0, None), data, data)
    server = launchers.start(
        launchers.llamacpp(gguf, "gemma-3-270m", "127.0.0.1", port, {}),
        trial,
        lambda: http_ready("127.0.0.1", port, "/v1/models"),
        120,
    )
    try:
        yield f"http://127.0.0.1:{port}", gguf, data
    finally:
        server.stop()
