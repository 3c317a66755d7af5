"""The newcomer path: what ``python -m benchflow`` and ``benchflow report`` print.

The main job's console carries benchflow's own records and no third-party INFO
noise (faiss's loader, MLflow's database creation) unless verbose; a core install
(no ``slurm`` extra) starts without Hydra's plugin error; ``benchflow report``
with no argument reports the latest sweep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import FAST, REPO

# A core install: the modules of the `slurm` extra cannot be imported.
_SLURM_EXTRA = (
    "submitit",
    "hydra_plugins.hydra_submitit_launcher",
    "hydra_plugins.hydra_submitit_launcher.config",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
)
_WITHOUT_SLURM_EXTRA = f"import sys\nfor _m in {_SLURM_EXTRA!r}:\n    sys.modules[_m] = None\n"

NOISE = ("faiss.loader", "Error importing", "INFO mlflow", "Plugin is incompatible")


def _output(proc) -> str:
    return proc.stdout + proc.stderr


def _core(wd, *args: str, timeout: float = 300):
    """``python -m benchflow ARGS`` as a core install (no submitit) runs it."""
    run = "import runpy\nrunpy.run_module('benchflow', run_name='__main__')\n"
    code = _WITHOUT_SLURM_EXTRA + run
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=wd.path,
        env=wd.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- the main job's console ---------------------------------------------------------------
def test_main_job_console_has_no_third_party_noise(workdir):
    # job 0 runs in process, job 1 in a worker process (a hard limit): both import faiss
    sweep = ["-m", "limits.trial.time_s=null,120", "resume=false", *FAST, "progress=off"]
    proc = workdir.run(*sweep, timeout=600)
    assert proc.returncode == 0, workdir.explain(proc)
    out = _output(proc)
    for noise in NOISE:
        assert noise not in out, f"{noise!r} on the console:\n{out}"
    assert out.count("[benchflow.trial][INFO] - trial ") == 2  # benchflow's own INFO stays
    assert "trial runs in a worker" in out
    for tdir in workdir.trial_dirs():
        log = (tdir / "logs" / "trial.log").read_text()
        events = (tdir / "logs" / "events.jsonl").read_text()
        assert "faiss.loader" not in log and "faiss.loader" not in events
        assert "[benchflow.trial] trial " in log
        assert '"component": "benchflow.trial"' in events


@pytest.mark.parametrize(
    "verbose, where",
    [("-v", "limits.trial.time_s=120"), ("hydra.verbose=true", "limits.trial.time_s=null")],
    ids=["-v in a worker", "hydra.verbose in process"],
)
def test_verbose_brings_third_party_records_back(workdir, verbose, where):
    proc = workdir.run(verbose, where, *FAST, "progress=off", "tracking.upload=false")
    assert proc.returncode == 0, workdir.explain(proc)
    assert "[faiss.loader][INFO] - Loading faiss" in _output(proc)
    (tdir,) = workdir.trial_dirs()
    assert "[faiss.loader] Loading faiss" in (tdir / "logs" / "trial.log").read_text()


def test_verbose_loggers_reads_hydra_verbose():
    from benchflow.results.logs import verbose_loggers

    assert verbose_loggers(False) == verbose_loggers(None) == verbose_loggers("") == set()
    assert verbose_loggers(True) is None and verbose_loggers("all") is None
    assert verbose_loggers(["__root__"]) is None
    assert verbose_loggers("faiss") == {"faiss"}
    assert verbose_loggers(["faiss", "x"]) == {"faiss", "x"}


# -- a core install: no slurm extra --------------------------------------------------------
def test_hydra_plugins_import_without_the_slurm_extra():
    """Hydra's plugin scan with submitit and hydra-submitit-launcher not importable."""
    code = _WITHOUT_SLURM_EXTRA + textwrap.dedent(
        """
        import json, warnings
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            from hydra.core.plugins import Plugins
            from hydra.plugins.launcher import Launcher
            from hydra.plugins.sweeper import Sweeper

            plugins = Plugins.instance()
            names = [c.__name__ for c in plugins.discover(Launcher) + plugins.discover(Sweeper)]
        from hydra_plugins.benchflow_plugins import slurm_launcher

        try:
            slurm_launcher.BenchflowSlurmLauncher(partition=None)
            selected = None
        except ImportError as exc:
            selected = str(exc)
        print(json.dumps({
            "warnings": [str(w.message) for w in caught],
            "plugins": names,
            "missing": slurm_launcher.MISSING_EXTRA,
            "selected": selected,
        }))
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "Error importing" not in proc.stderr, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not [w for w in got["warnings"] if "Error importing" in w], got["warnings"]
    assert {"BenchflowSlurmLauncher", "BenchflowSweeper"} <= set(got["plugins"])
    for said in (got["missing"], got["selected"]):
        assert said and "hydra/launcher=slurm" in said and "pip install 'benchflow[slurm]'" in said


def test_core_install_runs_a_trial_without_plugin_error_and_refuses_slurm(workdir):
    proc = _core(workdir, *FAST, "progress=off", "tracking.upload=false")
    assert proc.returncode == 0, workdir.explain(proc)
    for noise in NOISE:
        assert noise not in _output(proc), _output(proc)
    proc = _core(workdir, "-m", "hydra/launcher=slurm", *FAST)
    assert proc.returncode == 2, _output(proc)
    assert "benchflow: hydra/launcher=slurm needs submitit" in proc.stderr
    assert "pip install 'benchflow[slurm]'" in proc.stderr
    assert "Traceback" not in _output(proc)


# -- benchflow report with no argument -----------------------------------------------------
SWEEP = ["service=sleep", "service.transport=inprocess", "concurrency=1,2", *FAST, "progress=off"]


def test_report_without_argument_reports_the_latest_sweep(workdir):
    # The older sweep's scenario sorts last and its directory is touched last:
    # only the manifests' start times tell which sweep is the latest.
    for scenario in ("zz_older", "aa_newer"):
        proc = workdir.run("-m", f"scenario={scenario}", *SWEEP, timeout=600)
        assert proc.returncode == 0, workdir.explain(proc, scenario)
    (older,) = (workdir.results / "zz_older" / "_sweeps").iterdir()
    (newer,) = (workdir.results / "aa_newer" / "_sweeps").iterdir()
    os.utime(older)
    proc = workdir.run("report", "--no-log")
    assert proc.returncode == 0, _output(proc)
    assert f"the latest sweep: {newer.relative_to(workdir.path)}" in proc.stdout
    assert "report of 2 trials" in proc.stdout
    md = (workdir.path / "reports" / "aa_newer" / "report.md").read_text()
    assert newer.name in md
    assert not (workdir.path / "reports" / "zz_older").exists()


def test_report_errors_say_what_was_given(workdir):
    proc = workdir.run("report")
    assert proc.returncode == 2
    assert "benchflow: no sweep found under results/; give SWEEP or --experiment NAME" in (
        proc.stderr
    )
    proc = workdir.run("report", "20250101-000000-000000", "--experiment", "adhoc")
    assert proc.returncode == 2
    assert (
        "give SWEEP or --experiment, not both "
        "(given: SWEEP=20250101-000000-000000, --experiment=adhoc)"
    ) in proc.stderr


def test_latest_sweep_orders_by_manifest_then_mtime(tmp_path):
    from benchflow.analysis.report.latest import latest_sweep

    assert latest_sweep(tmp_path) is None
    a = tmp_path / "s1" / "_sweeps" / "b-later-name"
    b = tmp_path / "s2" / "_sweeps" / "a-earlier-name"
    for d, started in ((a, 100.0), (b, 200.0)):
        d.mkdir(parents=True)
        (d / "sweep.json").write_text(json.dumps({"sweep_id": d.name, "started_at": started}))
    found = latest_sweep(tmp_path)
    assert found.path == b and found.ref == str(b)
    c = tmp_path / "s3" / "_sweeps" / "no-manifest"  # mtime now: the newest
    c.mkdir(parents=True)
    found = latest_sweep(tmp_path)
    assert found.path == c and found.ref == "no-manifest"
