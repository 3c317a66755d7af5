"""Isolated execution: experiments whose dependencies clash run in one sweep, each
in its own cached venv (created once, reused by the next run); the container
variant's command line (Apptainer cannot run here: its command line is tested,
and its absence is a handled error)."""

from __future__ import annotations

import importlib.util
import json
from importlib import metadata
from pathlib import Path

from fixtures.benchmark_packages import EXAMPLE_CONF, offline_build

from benchflow.run.isolation import container_argv, env_key, install_args
from drivers.base import Isolation

CD = ["-cd", str(EXAMPLE_CONF)]
QUICK = ["warmup_s=0", "monitor.interval_s=0.2", "tracking.upload=false"]


def _meta(tdir: Path) -> dict:
    return json.loads((tdir / "meta.json").read_text())


def _build_offline() -> list[str]:
    """pip options that build benchflow and the example in the venv without the network,
    when their build requirements are here for the venv to see (the dev extra installs
    them: hatchling, and hatchling's ``editables`` for an editable benchflow, which is
    installed there editable too); otherwise pip fetches them as usual."""
    dist = metadata.distribution("benchflow")
    editable = '"editable": true' in (dist.read_text("direct_url.json") or "")
    if editable and importlib.util.find_spec("editables") is None:
        return []
    return offline_build()


def _venv_args(wheels: Path) -> list[str]:
    # The packages of the interpreter running the tests are visible (fast): with
    # system_site_packages, those of the venv it runs in (not only its base
    # interpreter's). --no-deps: benchflow's dependencies are those packages; clashlib
    # comes from a local find-links.
    pip_args = ["--no-deps", *_build_offline(), "--find-links", str(wheels)]
    return [
        "service.isolation.mode=venv",
        "++service.isolation.system_site_packages=true",
        "++service.isolation.pip_args=[" + ",".join(f'"{a}"' for a in pip_args) + "]",
    ]


def test_clashing_dependencies_run_in_one_sweep_each_in_its_cached_venv(
    bench, clash_wheels, envs_dir
):
    venv = _venv_args(clash_wheels)
    proc = bench.run(
        *CD,
        "-m",
        "service=intent",
        "scenario=iso-sweep",
        *venv,
        'service.isolation.requirements=["clashlib==1.0"],["clashlib==2.0"]',
        *QUICK,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a, b = (_meta(d) for d in bench.trials("iso-sweep"))
    assert a["status"] == b["status"] == "finished"
    # What ran inside each venv: its own clashlib, the experiment installed there.
    assert {a["worker"]["versions"]["clashlib"], b["worker"]["versions"]["clashlib"]} == {
        "1.0",
        "2.0",
    }
    for m in (a, b):
        iso = m["isolation"]
        assert iso["mode"] == "venv" and iso["created"] is True
        assert m["worker"]["python"] == iso["python"] == str(envs_dir / iso["key"] / "bin/python")
        site = next((envs_dir / iso["key"] / "lib").glob("python*/site-packages"))
        assert (site / "benchflow_intent" / "experiment.py").is_file()
        assert m["driver_version_in_worker"] == "0.1.0"
    assert a["isolation"]["key"] != b["isolation"]["key"]
    assert a["config_hash"] != b["config_hash"]  # the requirements are part of the identity
    tdir = bench.trials("iso-sweep")[0]
    freeze = (tdir / "logs" / "env-freeze.txt").read_text()
    assert f"clashlib=={a['worker']['versions']['clashlib']}" in freeze

    # The same requirements again: the cached venv is reused, not rebuilt.
    bench.run(
        *CD,
        "service=intent",
        "scenario=iso-again",
        *venv,
        'service.isolation.requirements=["clashlib==1.0"]',
        *QUICK,
        check=True,
    )
    (again,) = bench.trials("iso-again")
    m = _meta(again)
    first = a if a["worker"]["versions"]["clashlib"] == "1.0" else b
    assert m["isolation"]["key"] == first["isolation"]["key"]
    assert m["isolation"]["created"] is False
    assert m["worker"]["versions"] == {"clashlib": "1.0"}
    assert json.loads((again / "metrics.json").read_text())["quality"]["items"] == 104


def test_a_requirement_pip_cannot_install_is_a_handled_error(bench, clash_wheels):
    proc = bench.run(
        *CD,
        "service=intent",
        "scenario=iso-bad",
        *_venv_args(clash_wheels),
        'service.isolation.requirements=["clashlib==9.9"]',
        *QUICK,
    )
    assert proc.returncode == 1
    assert "FAILED [isolation_failed] could not create the isolated environment" in proc.stdout
    (tdir,) = bench.trials("iso-bad")
    assert "clashlib==9.9" in (tdir / "logs" / "env-create.log").read_text()


def test_the_container_command_line():
    """Apptainer cannot run here: the command line it would get is checked instead."""
    iso = Isolation(
        mode="container",
        image="/work/containers/intent.sif",
        binds=["/scratch/models:/models:ro"],
    )
    inner = ["python", "-m", "benchflow.run.worker", "/r/t1"]
    argv = container_argv(iso, inner, ["/r/t1", "/data", "/r/t1"], gpus=True, cwd="/home/u")
    assert argv == [
        "apptainer",
        "exec",
        "--cleanenv",
        "--nv",
        "--bind",
        "/r/t1",
        "--bind",
        "/data",
        "--bind",
        "/scratch/models:/models:ro",
        "--pwd",
        "/home/u",
        "/work/containers/intent.sif",
        "python",
        "-m",
        "benchflow.run.worker",
        "/r/t1",
    ]
    assert "--nv" not in container_argv(iso, inner, [], gpus=False, cwd="/")


def test_a_missing_container_runtime_is_a_handled_error_naming_the_command(bench):
    proc = bench.run(
        "service=noop",
        "scenario=iso-container",
        "++service.isolation.mode=container",
        "++service.isolation.image=docker://ghcr.io/example/bench@sha256:" + "a" * 64,
        "++service.isolation.runtime=no-such-apptainer",
        *QUICK,
    )
    assert proc.returncode == 1
    assert "FAILED [isolation_unavailable] no-such-apptainer is not on PATH" in proc.stdout
    (tdir,) = bench.trials("iso-container")
    argv = _meta(tdir)["isolation"]["argv"]
    assert argv[:3] == ["no-such-apptainer", "exec", "--cleanenv"]
    assert argv[-4:] == ["python", "-m", "benchflow.run.worker", str(tdir.resolve())]


def test_the_cache_key_is_the_requirements_hash():
    from importlib import metadata

    base = Isolation(mode="venv")
    reqs = ["pkg==1", "other==2"]
    assert env_key(reqs, base) == env_key(list(reqs), Isolation(mode="venv"))
    assert env_key(reqs, base) != env_key(["pkg==1", "other==3"], base)
    assert env_key(reqs, base) != env_key(reqs, Isolation(mode="venv", system_site_packages=True))
    # benchflow itself is installed into a venv the way it is installed here.
    args = install_args(metadata.distribution("benchflow"))
    assert args == ["benchflow==0.1.0"] or Path(args[-1]).joinpath("pyproject.toml").is_file()
