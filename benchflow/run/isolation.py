"""Isolated execution: a trial's code in its own virtual environment or container,
so experiments with clashing dependencies (CUDA, vLLM, ...) run in one sweep.

**venv** (``service.isolation.mode=venv``): a virtual environment holding
benchflow and the driver's own distribution, each installed *the way it is
installed here* (same version from an index, or the same local path / URL /
VCS commit, read from PEP 610's ``direct_url.json``), plus
``isolation.requirements``. It is created once, under
``envs_dir/<key>/``, where the key is the hash of everything that decides its
contents (interpreter, requirements, pip options, system-site flag); later
trials reuse it. Creation holds a file lock, so trials of a sweep running at
once (Slurm arrays on a shared filesystem) build it once; a half-built one (a
crash) is rebuilt. ``pip freeze`` of the environment is kept with it and copied
into every trial that ran there (``logs/env-freeze.txt``).

``isolation.system_site_packages`` lets the venv also see the packages of the
interpreter benchflow runs with, behind its own. When that interpreter is itself
in a virtual environment (the usual install), these are *that* environment's
packages (and the base interpreter's only if it sees them): ``python -m venv
--system-site-packages`` alone would expose the base interpreter's, which lack
benchflow's dependencies and build tools; the harness venv's site-packages are
layered on with a ``.pth`` file.

**container** (``mode=container``): the worker runs as ``apptainer exec
--cleanenv [--nv] --bind ... IMAGE python -m benchflow.run.worker TRIAL_DIR``; the
image must hold benchflow and the driver's package.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlsplit

from drivers.base import DriverError, Isolation

log = logging.getLogger("benchflow.isolation")

MARKER = "benchflow-env.json"  # written last: a directory without it is half-built
FREEZE = "freeze.txt"
KEY_FORMAT = 2
# In an isolated venv's site-packages: adds the harness venv's site-packages (and runs
# their .pth files) after the venv's own; named to be processed after the venv's own .pth.
LAYER_PTH = "zz-benchflow-harness-site.pth"
# Variables that would let the parent's packages leak into an isolated interpreter.
LEAKY_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONUSERBASE")


@dataclass(frozen=True)
class VenvInfo:
    key: str
    path: str
    python: str
    requirements: list[str]
    created: bool  # by this trial (False: reused from the cache)
    seconds: float  # spent creating or waiting for it


def install_args(dist: metadata.Distribution) -> list[str]:
    """pip arguments that install ``dist`` the way it is installed here (PEP 610)."""
    raw = dist.read_text("direct_url.json")
    name, version = dist.metadata["Name"], dist.version
    if not raw:
        return [f"{name}=={version}"]
    info = json.loads(raw)
    url = info.get("url", "")
    if "dir_info" in info:
        path = unquote(urlsplit(url).path) if url.startswith("file:") else url
        return ["-e", path] if info["dir_info"].get("editable") else [path]
    if "vcs_info" in info:
        vcs = info["vcs_info"]
        return [f"{name} @ {vcs['vcs']}+{url}@{vcs['commit_id']}"]
    return [f"{name} @ {url}"]  # archive_info: a wheel or sdist URL/path


def _benchflow_args() -> list[str]:
    try:
        return install_args(metadata.distribution("benchflow"))
    except metadata.PackageNotFoundError:
        # Run from a source tree on PYTHONPATH: install that tree.
        root = Path(__file__).resolve().parents[2]
        if (root / "pyproject.toml").is_file():
            return ["-e", str(root)]
        raise DriverError(
            "benchflow is not installed as a distribution: an isolated venv cannot install it",
            "isolation_failed",
        ) from None


def requirements(driver_dist: metadata.Distribution | None, iso: Isolation) -> list[str]:
    """Everything pip installs into the venv (as pip arguments, in order)."""
    args = _benchflow_args()
    if driver_dist is not None and driver_dist.metadata["Name"].lower() != "benchflow":
        args += install_args(driver_dist)
    return args + list(iso.requirements)


def harness_site() -> tuple[list[str], bool]:
    """What ``system_site_packages`` exposes of this interpreter: the site-packages of the
    virtual environment it runs in (none outside one) and whether that environment sees
    the base interpreter's packages too."""
    if sys.prefix == sys.base_prefix:
        return [], True
    paths = sysconfig.get_paths()
    dirs = [p for p in dict.fromkeys((paths["purelib"], paths["platlib"])) if os.path.isdir(p)]
    return dirs, _venv_includes_system_site(Path(sys.prefix) / "pyvenv.cfg")


def _venv_includes_system_site(cfg: Path) -> bool:
    try:
        lines = cfg.read_text().splitlines()
    except OSError:
        return True
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() == "include-system-site-packages":
            return value.strip().lower() == "true"
    return False


def env_key(reqs: list[str], iso: Isolation) -> str:
    """The cache key: a hash of what decides the environment's contents."""
    blob = json.dumps(
        {
            "format": KEY_FORMAT,
            "python": [
                sys.version,
                platform.machine(),
                os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
            ],
            "system_site_packages": iso.system_site_packages,
            # with it, the harness's venv is part of what the environment holds
            "harness_site": list(harness_site()) if iso.system_site_packages else None,
            "requirements": reqs,
            "pip_args": list(iso.pip_args),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without what would leak its packages."""
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV}
    env.update(extra or {})
    return env


def ensure_venv(
    envs_dir: Path,
    driver_dist: metadata.Distribution | None,
    iso: Isolation,
    logs_dir: Path,
) -> VenvInfo:
    """The venv for these requirements: reused from the cache, or created now."""
    reqs = requirements(driver_dist, iso)
    key = env_key(reqs, iso)
    envs_dir = Path(envs_dir).expanduser()
    envs_dir.mkdir(parents=True, exist_ok=True)
    path = envs_dir / key
    python = path / "bin" / "python"
    t0 = time.perf_counter()
    with open(envs_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another trial building it: wait for it
        created = not (path / MARKER).is_file()
        if created:
            log.info("creating isolated environment %s (first use): %s", key, " ".join(reqs))
            _create(path, reqs, iso, logs_dir)
            (path / MARKER).write_text(
                json.dumps({"key": key, "requirements": reqs, "created_at": time.time()}, indent=2)
            )
        else:
            log.info("reusing isolated environment %s", key)
    info = VenvInfo(key, str(path), str(python), reqs, created, time.perf_counter() - t0)
    if (path / FREEZE).is_file():
        shutil.copyfile(path / FREEZE, logs_dir / "env-freeze.txt")
    return info


def _create(path: Path, reqs: list[str], iso: Isolation, logs_dir: Path) -> None:
    if path.exists():
        shutil.rmtree(path)  # half-built by a crashed trial
    out_path = logs_dir / "env-create.log"
    env = clean_env()
    with open(out_path, "ab") as out:

        def step(cmd: list[str]) -> None:
            out.write(f"$ {' '.join(cmd)}\n".encode())
            out.flush()
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
            if rc != 0:
                tail = out_path.read_text(errors="replace").strip().splitlines()[-3:]
                with contextlib.suppress(OSError):
                    shutil.rmtree(path)
                raise DriverError(
                    f"could not create the isolated environment ({cmd[2]} exited {rc}); "
                    f"see logs/env-create.log: {' | '.join(tail)}",
                    "isolation_failed",
                )

        outer_pip = _has_pip()
        # `python -m venv` bases the new venv on the base interpreter, even from a venv:
        # the harness venv's own packages are layered on with a .pth file.
        layers, sees_base = harness_site() if iso.system_site_packages else ([], False)
        venv_cmd = [sys.executable, "-m", "venv"]
        if outer_pip:
            venv_cmd.append("--without-pip")  # ensurepip costs seconds; this pip serves it
        if sees_base:
            venv_cmd.append("--system-site-packages")
        step([*venv_cmd, str(path)])
        python = str(path / "bin" / "python")
        if layers:
            _layer(path, layers)
        pip = [python, "-m", "pip"]
        if outer_pip:
            pip = [sys.executable, "-m", "pip", "--python", python]
        step([*pip, "install", "--disable-pip-version-check", *iso.pip_args, *reqs])
        freeze = subprocess.run(
            [*pip, "freeze", "--disable-pip-version-check"], capture_output=True, text=True, env=env
        )
        (path / FREEZE).write_text(freeze.stdout)


def _layer(path: Path, dirs: list[str]) -> None:
    """Make ``dirs`` (and what their .pth files add) visible in the venv at ``path``,
    after its own packages."""
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    site_dir = path / "lib" / version / "site-packages"  # what `python -m venv` makes (POSIX)
    lines = [f"import site; site.addsitedir({d!r})" for d in dirs]
    (site_dir / LAYER_PTH).write_text("\n".join(lines) + "\n")


def _has_pip() -> bool:
    try:
        import pip  # noqa: F401
    except ImportError:
        return False
    return True


def installed_versions(reqs: list[str]) -> dict[str, str]:
    """Versions, as seen by this interpreter, of the named requirements (for the record)."""
    from packaging.requirements import InvalidRequirement, Requirement

    out = {}
    for r in reqs:
        try:
            name = Requirement(r).name
        except InvalidRequirement:
            continue  # a path or -e flag: named by its own distribution elsewhere
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


# -- containers ------------------------------------------------------------------
def container_argv(
    iso: Isolation,
    inner: list[str],
    binds: list[str],
    gpus: bool,
    cwd: str,
    env: dict[str, str] | None = None,
) -> list[str]:
    """The command line that runs ``inner`` inside ``iso.image`` with Apptainer.

    ``--cleanenv`` keeps the host's environment out (only ``env`` goes in, as
    ``APPTAINERENV_*``, set by :func:`container_env`); ``--nv`` exposes the
    GPUs; ``binds`` are mounted at the same paths so the trial directory and
    data are where the worker expects them.
    """
    if not iso.image:
        raise DriverError("isolation.mode=container needs isolation.image", "isolation_failed")
    argv = [iso.runtime, "exec", "--cleanenv"]
    if gpus:
        argv.append("--nv")
    seen = set()
    for b in [*binds, *iso.binds]:
        if b not in seen:
            seen.add(b)
            argv += ["--bind", b]
    argv += ["--pwd", cwd, iso.image, *inner]
    return argv


def container_env(env: dict[str, str]) -> dict[str, str]:
    """Variables passed into a ``--cleanenv`` container (Apptainer's APPTAINERENV_ prefix)."""
    return {f"APPTAINERENV_{k}": v for k, v in env.items()}


def image_digest(image: str) -> str | None:
    """The digest pinned in an image reference (``...@sha256:HEX``), if any."""
    return image.split("@", 1)[1] if "@sha256:" in image else None


def describe(info: VenvInfo) -> dict:
    return asdict(info)
