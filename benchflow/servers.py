"""SUT lifecycle: launch a server process, wait until it is ready, always tear it down.

Every launched server runs in its own process group (so teardown reaches its
children), writes stdout/stderr to the trial's ``logs/``, and is stopped at
interpreter exit too, so a Ctrl-C or a failed trial leaves nothing running.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

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
    ) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.stop_signal = stop_signal
        logs_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = logs_dir / f"{name}.out"
        self.stderr_path = logs_dir / f"{name}.err"
        self._out = open(self.stdout_path, "ab")  # noqa: SIM115 - closed in stop()
        self._err = open(self.stderr_path, "ab")  # noqa: SIM115
        full_env = {**os.environ, **(env or {})}
        log.info("starting %s: %s", name, " ".join(self.cmd))
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=self._out,
            stderr=self._err,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            start_new_session=True,  # own process group: teardown reaches children
        )
        _RUNNING.add(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

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
                log.info("%s ready (pid %d)", self.name, self.pid)
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
        self._out.close()
        self._err.close()

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
