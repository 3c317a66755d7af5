"""SUT lifecycle: launch a server process, wait until it is ready, always tear it down.

Every launched server runs in its own process group (so teardown reaches its
children), has its stdout/stderr captured line by line into the trial's
``logs/`` (``NAME.out``/``NAME.err`` as text and ``NAME.jsonl`` as structured
records, secrets masked: :class:`benchflow.results.logs.OutputCapture`), and is stopped
at interpreter exit too, so a Ctrl-C or a failed trial leaves nothing running.

A server may run in a container: give :class:`ServerProcess` a :class:`Container`
and its command becomes ``apptainer exec [--nv] -B BIND ... IMAGE CMD``; the
image's digest is exported as ``BENCHFLOW_CONTAINER_DIGEST`` while it runs, so
the trial's lineage records which image produced the result.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import http.client
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchflow.results.lineage import CONTAINER_DIGEST_ENV
from benchflow.sut import placement

log = logging.getLogger("benchflow.servers")


class ServerFailed(RuntimeError):
    """The server exited or never became ready."""

    error_class = "server_not_ready"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def tcp_ready(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def http_ready(host: str, port: int, path: str = "/health", timeout_s: float = 1.0) -> bool:
    """True when GET ``path`` answers 200."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


# -- containers ------------------------------------------------------------------
_DIGEST_RE = re.compile(r"@(sha256:[0-9a-f]{64})$")


@dataclass(frozen=True)
class Container:
    """How to wrap a server command in a container (Apptainer/Singularity)."""

    image: str  # a .sif path, or a URI such as docker://repo@sha256:...
    gpus: bool = False  # --nv: the host's NVIDIA driver and devices inside
    binds: tuple[str, ...] = ()  # -B SRC[:DST[:OPTS]], e.g. the data and results dirs
    env: Mapping[str, str] = field(default_factory=dict)  # --env K=V
    runtime: str = "apptainer"  # or singularity
    extra_args: tuple[str, ...] = ()  # anything else for `exec` (--cleanenv, --writable-tmpfs)

    def command(self, cmd: Sequence[str]) -> list[str]:
        """``apptainer exec [--nv] -B BIND... [--env K=V...] [EXTRA...] IMAGE CMD...``."""
        out = [self.runtime, "exec"]
        if self.gpus:
            out.append("--nv")
        for bind in self.binds:
            out += ["-B", bind]
        for key, value in self.env.items():
            out += ["--env", f"{key}={value}"]
        return [*out, *self.extra_args, self.image, *cmd]


def image_digest(image: str) -> str | None:
    """``sha256:...`` of a container image, or None when it is not pinned.

    A reference pinned by digest (``docker://repo@sha256:...``) names it; a local
    ``.sif`` file is hashed (the result is cached next to it in ``IMAGE.sha256``,
    which ``make containers`` writes when it builds the image).
    """
    m = _DIGEST_RE.search(image)
    if m:
        return m.group(1)
    path = Path(image.removeprefix("file://"))
    if not path.is_file():
        return None
    sidecar = path.with_name(path.name + ".sha256")
    try:
        if sidecar.stat().st_mtime >= path.stat().st_mtime:
            text = sidecar.read_text().split()
            if text and re.fullmatch(r"(sha256:)?[0-9a-f]{64}", text[0]):
                return text[0] if text[0].startswith("sha256:") else f"sha256:{text[0]}"
    except OSError:
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    digest = f"sha256:{h.hexdigest()}"
    with contextlib.suppress(OSError):
        sidecar.write_text(digest + "\n")
    return digest


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


_RUNNING: set[ServerProcess] = set()


class ServerProcess:
    """A launched SUT process; use as a context manager or call :meth:`stop`."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        logs_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        stop_signal: int = signal.SIGTERM,
        container: Container | None = None,
        cpus: Sequence[int] | None = None,
    ) -> None:
        """``cpus``: pin the server (and every process it forks) to these CPUs; by default
        the trial's ``placement.server_cpus`` (:mod:`benchflow.sut.placement`)."""
        self.name = name
        cpus = placement.server_cpus() if cpus is None else list(cpus)
        # taskset, not preexec_fn: the worker has threads, and preexec_fn may deadlock.
        taskset = shutil.which("taskset") if cpus else None
        if cpus and taskset is None:
            raise ServerFailed(f"{name}: placement.server_cpus needs `taskset` (util-linux)")
        self.container = container
        self.digest: str | None = None
        self._saved_digest_env: str | None = None
        self._digest_exported = False
        if container is not None:
            if shutil.which(container.runtime) is None:
                raise ServerFailed(
                    f"{name}: service names the image {container.image!r} but "
                    f"{container.runtime!r} is not on PATH (install Apptainer, or remove the "
                    "image to launch the server directly)"
                )
            cmd = container.command(cmd)
            self.digest = image_digest(container.image)
            if self.digest is None:
                log.warning("%s: image %s is not pinned by digest", name, container.image)
            # Lineage reads the digest from the environment; restored in stop().
            self._saved_digest_env = os.environ.get(CONTAINER_DIGEST_ENV)
            os.environ[CONTAINER_DIGEST_ENV] = self.digest or f"unpinned:{container.image}"
            self._digest_exported = True
        if cpus:
            cmd = [taskset, "--cpu-list", placement.format_cpus(cpus), *cmd]
        self.cmd = list(cmd)
        self.stop_signal = stop_signal
        logs_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = logs_dir / f"{name}.out"
        self.stderr_path = logs_dir / f"{name}.err"
        full_env = {**os.environ, **(env or {})}
        log.info("starting %s: %s", name, " ".join(self.cmd))
        try:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=cwd,
                start_new_session=True,  # own process group: teardown reaches children
            )
        except OSError as exc:  # e.g. the server's program is not installed
            self._restore_digest_env()
            raise ServerFailed(f"{name}: cannot start {self.cmd[0]!r}: {exc}") from None
        from benchflow.results.logs import OutputCapture

        self._capture = OutputCapture(
            name, logs_dir, self.proc.stdout, self.proc.stderr, environ=full_env
        )
        _RUNNING.add(self)
        log.info("started %s (pid %d, process group %d)", name, self.proc.pid, self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpus(self) -> str:
        """The CPUs the kernel lets the server's leader run on, as a CPU list."""
        try:
            return placement.format_cpus(os.sched_getaffinity(self.pid))
        except OSError:  # gone, or another user's
            return "?"

    def wait_ready(self, ready: Callable[[], bool], timeout_s: float, poll_s: float = 0.1):
        """Poll ``ready()`` until it is true; raise :class:`ServerFailed` on exit or timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServerFailed(
                    f"{self.name} exited with code {self.proc.returncode} before it was ready; "
                    f"see {self.stderr_path}: {self._tail()}"
                )
            if ready():
                log.info("%s ready (pid %d, CPUs %s)", self.name, self.pid, self.cpus())
                return self
            time.sleep(poll_s)
        raise ServerFailed(f"{self.name} not ready after {timeout_s:.0f} s; see {self.stderr_path}")

    def stop(self, grace_s: float = 10.0) -> None:
        """Signal the process group, wait ``grace_s``, then kill what is left."""
        _RUNNING.discard(self)
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, self.stop_signal)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored signal %d; killing it", self.name, self.stop_signal)
        # Children may outlive the leader; the group id is the leader's pid.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        # Orphaned members are reaped by init, not by us: give it a moment, so that
        # "stopped" means the whole group is gone when this returns.
        deadline = time.monotonic() + 5
        while _group_exists(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._capture.close()
        self._restore_digest_env()

    def _restore_digest_env(self) -> None:
        if self._digest_exported:
            self._digest_exported = False
            if self._saved_digest_env is None:
                os.environ.pop(CONTAINER_DIGEST_ENV, None)
            else:
                os.environ[CONTAINER_DIGEST_ENV] = self._saved_digest_env

    def _tail(self, n: int = 400) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-n:].strip() or "(empty)"
        except OSError:
            return "(unreadable)"

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop(grace_s=3)
