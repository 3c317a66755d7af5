"""A lab shared by the registry, compare, promote and report tests: three versions
of a target registered in a fresh MLflow store, and one real sweep over them.

``sleepy`` runs the in-process sleep driver: version 1 sleeps 2 ms (@champion),
version 2 sleeps 1 ms (faster: promotable), version 3 sleeps 3 ms (slower).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from conftest import Workdir

SPEC = """description: in-process sleep of {ms} ms
service: sleep
config:
  service:
    service_ms: {ms}
    transport: inprocess
tags:
  model: sleep-{ms}ms
"""
TRIAL = ["duration_s=1.5", "warmup_s=0.1", "monitor.interval_s=0.2", "progress=off"]


@pytest.fixture(scope="session")
def lab(tmp_path_factory, data_dir) -> Workdir:
    wd = Workdir.at(tmp_path_factory.mktemp("lab"), data_dir)
    for ms in (2, 1, 3):
        (wd.path / f"sleep{ms}.yaml").write_text(SPEC.format(ms=ms))
    # The first through the CLI (as a user does), the others in process (faster).
    wd.run(
        "targets", "register", "sleepy", "--from", "sleep2.yaml", "--alias", "champion", check=True
    )
    from benchflow import registry

    c = client(wd)
    for ms in (1, 3):
        registry.register("sleepy", (wd.path / f"sleep{ms}.yaml").read_text(), client=c)
    wd.run(
        "-m",
        "scenario=targets",
        "target=sleepy@champion,sleepy/2,sleepy/3",
        "repetitions=3",
        *TRIAL,
        check=True,
        timeout=600,
    )
    return wd


def client(wd: Workdir):
    from benchflow import tracking

    return tracking.client(wd.tracking_uri)


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def cli(wd: Workdir, *args: str) -> CliResult:
    """``benchflow ARGS`` in this process (click's runner): the same code as the
    console script without paying for a new interpreter and MLflow import each time."""
    from click.testing import CliRunner

    from benchflow.cli import app

    runner = CliRunner()
    old = os.getcwd()
    os.chdir(wd.path)
    try:
        res = runner.invoke(app, list(args), env={"MLFLOW_TRACKING_URI": wd.tracking_uri})
    finally:
        os.chdir(old)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return CliResult(res.exit_code, res.stdout, res.stderr)
