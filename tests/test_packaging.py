"""`pip install .` (a real wheel, not the editable source tree) works like the editable install."""

import site
import subprocess
import sys
import venv
from pathlib import Path

from conftest import FAST, REPO
from fixtures.benchmark_packages import offline_build


def _our_site_dirs() -> list[str]:
    """The site-packages this interpreter imports from (its venv's, when it runs in one)."""
    dirs = {*site.getsitepackages(), site.getusersitepackages()}
    return [p for p in sys.path if p in dirs]


def _venv_seeing_our_packages(env_dir: Path) -> Path:
    """A venv that also sees this interpreter's packages (benchflow's dependencies).

    ``system_site_packages=True`` is not that: from a venv (the usual way to run the tests)
    it exposes the *base* interpreter's packages, not the venv's. The directories go in as
    plain .pth lines, so their own .pth files are not run: the editable install's (the
    source tree on sys.path) stays out, and the wheel is what is imported.
    """
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "test-environment.pth").write_text("\n".join(_our_site_dirs()) + "\n")
    return py


def test_wheel_install_runs_a_trial_outside_the_source_tree(tmp_path):
    wheels = tmp_path / "wheels"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *offline_build()]
    subprocess.run(
        [*pip_wheel, "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("benchflow-*.whl")
    env_dir = tmp_path / "venv"
    py = _venv_seeing_our_packages(env_dir)
    # --force-reinstall: benchflow of the same version is visible (ours), the wheel goes in
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
        check=True,
        capture_output=True,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {
        "PATH": f"{env_dir}/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "BENCHFLOW_DATA_DIR": str(tmp_path / "data"),
    }
    where = subprocess.run(
        [
            str(py),
            "-c",
            "import sys, benchflow, benchflow.config as c; "
            "print(benchflow.__file__); print(c.conf_dir()); print(sys.path)",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(REPO) not in where, where  # the installed copy, configs inside the wheel
    proc = subprocess.run(
        [str(py), "-m", "benchflow", "-m", "service=noop", "concurrency=1,2", *FAST],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "2 finished, 0 failed" in proc.stdout
    drivers = subprocess.run(
        [str(env_dir / "bin" / "benchflow"), "drivers", "--json"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert '"noop"' in drivers
