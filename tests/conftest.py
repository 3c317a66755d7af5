"""Shared fixtures: an isolated working directory with its own MLflow store, and
a helper that runs benchflow through its real entry points in a subprocess.

Tests that need a real server start it with a fixture. A missing server fails
the test in CI; only on a laptop (``BENCHFLOW_ALLOW_SKIP=1``) does it skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Fixtures that start real servers, shared between test areas (tests/fixtures/<server>.py).
pytest_plugins: list[str] = [
    "fixtures.quiet",
    "fixtures.slurm",
    "fixtures.benchmark_packages",
    "fixtures.chroma",
    "fixtures.milvus",
    "fixtures.postgres",
    "fixtures.s3",
    "fixtures.llamacpp",
    "fixtures.pytriton",
    "fixtures.tracking_server",
    "fixtures.browser",
]


# Under pytest-xdist (`make test` runs `-n 2 --dist loadgroup`) the tests of one area share
# a worker, so each session-scoped server (the Slurm cluster, llama.cpp, PostgreSQL, ...)
# and each module's fixture start once, and two Slurm clusters never contend for one
# machine. Two conditions, checked by test_groups_reach_xdist below: this hook runs before
# xdist's (which reads the groups off the items as it collects them), and pytest < 9
# (xdist 3.8 names a group's items through Item._nodeid, which pytest 9 no longer reads).
_AREA_GROUP = {
    "slurm": "slurm",
    "multinode": "multinode",
    "inference": "llm",
    "quality": "llm",
    "storage": "storage",
    "benchmarks": "benchmarks",
    "vectordb": "vectordb",
    "registry": "registry",
    "tracking": "tracking",
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups off the items
def pytest_collection_modifyitems(config, items):
    tests = Path(__file__).resolve().parent
    for item in items:
        parts = Path(item.fspath).resolve().relative_to(tests).parts
        if len(parts) > 1 and parts[0] in _AREA_GROUP:
            item.add_marker(pytest.mark.xdist_group(_AREA_GROUP[parts[0]]))


def require(condition: bool, what: str) -> None:
    """Fail (CI) or skip (a laptop with BENCHFLOW_ALLOW_SKIP=1) when a server is missing."""
    if condition:
        return
    if os.environ.get("BENCHFLOW_ALLOW_SKIP") == "1":
        pytest.skip(f"{what} is not available here")
    pytest.fail(f"{what} is not available; `make test` installs it (see .ci/run)")


@dataclass
class Workdir:
    path: Path
    env: dict[str, str]

    @classmethod
    def at(cls, path: Path, data_dir: Path) -> Workdir:
        """A working directory at ``path`` with its own MLflow store (sqlite in it)."""
        env = dict(os.environ)
        env.update(
            MLFLOW_TRACKING_URI=f"sqlite:///{path}/mlflow.db",
            BENCHFLOW_DATA_DIR=str(data_dir),
            MLFLOW_DISABLE_TELEMETRY="true",
            PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        )
        env.pop("HYDRA_FULL_ERROR", None)
        return cls(path, env)

    @property
    def tracking_uri(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]

    @property
    def results(self) -> Path:
        return self.path / "results"

    def run(self, *args: str, timeout: float = 300, check: bool = False, module: bool = True):
        """``python -m benchflow ARGS`` (or the ``benchflow`` CLI verbs) in this directory."""
        cmd = [sys.executable, "-m", "benchflow", *args]
        proc = subprocess.run(
            cmd, cwd=self.path, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)}: {self.explain(proc)}")
        return proc

    def explain(self, proc: subprocess.CompletedProcess, scenario: str = "adhoc") -> str:
        """Why a run ended non-zero: its output's tails, and every trial that did not
        finish with its error and the end of its log (a sweep's summary gives only the
        error class, and the trial logs stay on the machine that ran the test)."""
        parts = [f"exit {proc.returncode}", f"stdout:\n{proc.stdout[-3000:]}"]
        parts.append(f"stderr:\n{proc.stderr[-3000:]}")
        root = self.results / scenario
        for d in self.trial_dirs(scenario) if root.is_dir() else []:
            try:
                meta = self.meta(d)
            except (OSError, ValueError) as exc:
                parts.append(f"trial {d.name}: meta.json unreadable ({exc})")
                continue
            if meta.get("status") == "finished":
                continue
            log = d / "logs" / "trial.log"
            tail = "".join(log.read_text().splitlines(True)[-30:]) if log.exists() else ""
            parts.append(
                f"trial {d.name} {meta.get('status')} {meta.get('overrides')}: "
                f"{json.dumps(meta.get('error'))}\n{tail}"
            )
        return "\n".join(parts)

    def trial_dirs(self, scenario: str = "adhoc") -> list[Path]:
        root = self.results / scenario
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))

    def metrics(self, trial_dir: Path) -> dict:
        return json.loads((trial_dir / "metrics.json").read_text())

    def meta(self, trial_dir: Path) -> dict:
        return json.loads((trial_dir / "meta.json").read_text())

    def runs(self, experiment: str = "adhoc"):
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        return mlflow.search_runs(experiment_names=[experiment])


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """Generated datasets, shared by all tests of a session (they are cached by content)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def workdir(tmp_path, data_dir) -> Workdir:
    return Workdir.at(tmp_path, data_dir)


# Small, fast defaults for trials in tests.
FAST = ["duration_s=1", "warmup_s=0.2", "monitor.interval_s=0.2"]
