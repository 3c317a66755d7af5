"""`pip install .` (a real wheel, not the editable source tree) works like the editable install."""

import subprocess
import sys
import venv

from conftest import FAST, REPO


def test_wheel_install_runs_a_trial_outside_the_source_tree(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("benchflow-*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
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
            "import benchflow, benchflow.config as c; "
            "print(benchflow.__file__); print(c.conf_dir())",
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
