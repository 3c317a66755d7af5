"""A team's MLflow tracking server on PostgreSQL (``benchflow server start|stop|status|run``).

One *supervisor* process (``benchflow server run``, which ``start`` launches in
the background) owns everything the server needs and tears it down again:

- the database: a PostgreSQL given by URI, or a throwaway one (``--embedded-db``,
  :class:`benchflow.sut.embedded.EmbeddedPostgres`) for a laptop or CI;
- ``mlflow server`` with the settings that keep it fast and small (RECIPES.md):
  one worker (more only with uvloop), job execution and telemetry off,
  ``postgresql+psycopg2://`` URIs, artifacts proxied to a local directory or
  ``s3://BUCKET`` (``MLFLOW_S3_ENDPOINT_URL`` and AWS keys from the environment);
- optionally MLflow's basic-auth app with users from the environment
  (:mod:`benchflow.tracking.auth`).

Everything it writes lives under one directory (``--dir``): ``server.json`` (the
state ``stop`` and ``status`` read), ``logs/`` (the supervisor's JSON lines,
MLflow's and PostgreSQL's output, masked) and, by default, ``artifacts/``.

Passwords never reach a command line or a file: a database password travels to
the server in ``PGPASSWORD`` (libpq reads it), the URI recorded and shown is
masked, and the auth app's admin password stays in the environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import psutil

from benchflow.results import read_json, write_json
from benchflow.secrets import mask

log = logging.getLogger("benchflow.tracking_server")

STATE_FILE = "server.json"
DIR_ENV = "BENCHFLOW_SERVER_DIR"
BACKEND_ENV = "BENCHFLOW_SERVER_BACKEND_URI"  # may hold a password: never passed on argv
DEFAULT_DIR = Path("~/.benchflow/tracking-server")
EXIT_NOT_RUNNING = 3  # `status`, as LSB init scripts say "not running"


class ServerError(RuntimeError):
    """The tracking server could not be started, found or stopped."""


@dataclass
class ServerConfig:
    """How to run the tracking server; every field is a ``benchflow server start`` option."""

    dir: Path = field(default_factory=lambda: default_dir())
    host: str = "127.0.0.1"
    port: int = 5000  # 0: a free port (tests)
    backend_store_uri: str | None = None  # postgresql://user@host:port/db (password: PGPASSWORD)
    embedded_db: bool = False
    artifacts_destination: str | None = None  # a directory or s3://BUCKET[/prefix]
    workers: int = 0  # 0: up to 4 (one per core) with uvloop installed, else 1 (RECIPES.md)
    auth: bool = False
    allowed_hosts: str | None = None  # --allowed-hosts for a server reached by name
    ready_timeout_s: float = 180.0

    def __post_init__(self) -> None:
        self.dir = Path(self.dir).expanduser().resolve()
        if self.embedded_db and self.backend_store_uri:
            raise ServerError("give either --embedded-db or --backend-store-uri, not both")
        if not self.embedded_db and not self.backend_store_uri:
            raise ServerError(
                "no database: pass --backend-store-uri postgresql://USER@HOST:PORT/DB "
                f"(or ${BACKEND_ENV}; the password in PGPASSWORD), or --embedded-db"
            )
        if self.workers < 0:
            raise ServerError(f"--workers {self.workers}: 0 (automatic) or more")
        if self.workers == 0:
            self.workers = min(4, os.cpu_count() or 1) if _has_uvloop() else 1

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def artifacts(self) -> str:
        """Where artifacts go: the given destination, else ``DIR/artifacts``."""
        dest = self.artifacts_destination
        if not dest:
            return str(self.dir / "artifacts")
        if "://" in dest:
            return dest
        return str(Path(dest).expanduser().resolve())


def default_dir() -> Path:
    return Path(os.environ.get(DIR_ENV) or DEFAULT_DIR).expanduser()


# -- the database URI ----------------------------------------------------------------
def split_password(uri: str) -> tuple[str, str | None]:
    """``(uri without its password, password)``; postgresql URIs get the psycopg2 driver.

    SQLAlchemy 2.1 looks for psycopg 3 under a bare ``postgresql://`` (RECIPES.md),
    so the driver is named. The password is taken out so that it can travel in
    ``PGPASSWORD`` instead of the server's command line.
    """
    if uri.startswith(("postgresql://", "postgres://")):
        uri = "postgresql+psycopg2://" + uri.split("://", 1)[1]
    parts = urlsplit(uri)
    if parts.password is None:
        return uri, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = (parts.username or "") + "@" + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc)), unquote(parts.password)


# -- state -----------------------------------------------------------------------------
@dataclass
class ServerState:
    """What ``server.json`` holds; ``stop`` and ``status`` read it."""

    status: str  # starting | ready | stopping | stopped | failed
    url: str | None = None
    host: str | None = None
    port: int | None = None
    pid: int | None = None  # the supervisor
    create_time: float | None = None  # the supervisor's, so a reused pid is not mistaken
    mlflow_pid: int | None = None
    backend: str | None = None  # masked
    embedded_db: bool = False
    artifacts: str | None = None
    auth: bool = False
    users: dict[str, str] = field(default_factory=dict)  # name -> role
    logs_dir: str | None = None
    started_at: float | None = None
    ready_at: float | None = None
    stopped_at: float | None = None
    error: str | None = None

    @classmethod
    def load(cls, state_dir: Path) -> ServerState | None:
        path = Path(state_dir) / STATE_FILE
        if not path.exists():
            return None
        try:
            data = read_json(path)
        except (OSError, ValueError):
            return None
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def save(self, state_dir: Path) -> None:
        write_json(Path(state_dir) / STATE_FILE, asdict(self))

    def supervisor_alive(self) -> bool:
        if not self.pid:
            return False
        try:
            p = psutil.Process(self.pid)
            return self.create_time is None or abs(p.create_time() - self.create_time) < 1.0
        except psutil.Error:
            return False


def healthy(url: str, timeout_s: float = 2.0) -> bool:
    """True when the server's ``/health`` answers 200 (it needs no login)."""
    parts = urlsplit(url)
    from benchflow.sut.servers import http_ready

    return http_ready(parts.hostname or "127.0.0.1", parts.port or 80, "/health", timeout_s)


# -- the supervisor --------------------------------------------------------------------
class _Stop(Exception):
    pass


def _on_signal(signum, frame) -> None:
    raise _Stop(signal.Signals(signum).name)


def run(cfg: ServerConfig) -> int:
    """Run the server in this process until SIGTERM/SIGINT (``benchflow server run``).

    Returns the exit code: 0 after a requested stop, 1 when something failed.
    """
    from benchflow.sut.embedded import EmbeddedPostgres
    from benchflow.sut.servers import ServerProcess, free_port

    cfg.dir.mkdir(parents=True, exist_ok=True)
    cfg.logs_dir.mkdir(parents=True, exist_ok=True)
    old = ServerState.load(cfg.dir)
    if old is not None and old.supervisor_alive() and old.pid != os.getpid():
        raise ServerError(f"a tracking server already runs from {cfg.dir} (pid {old.pid})")
    me = psutil.Process()
    state = ServerState(
        status="starting",
        pid=me.pid,
        create_time=me.create_time(),
        embedded_db=cfg.embedded_db,
        artifacts=mask(cfg.artifacts, set()),
        auth=cfg.auth,
        logs_dir=str(cfg.logs_dir),
        started_at=time.time(),
    )
    state.save(cfg.dir)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    pg = None
    server = None
    code = 0
    try:
        env = {
            # RECIPES.md: the job runner costs ~2 GB; telemetry phones home.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
        }
        if cfg.embedded_db:
            pg = EmbeddedPostgres(
                logs_dir=cfg.logs_dir,
                password=secrets.token_urlsafe(24),
                database="mlflow",
                name="postgres",
                # A throwaway store: losing the last commits in a crash is acceptable,
                # and it makes every MLflow write ~10x cheaper (RECIPES.md).
                settings={"synchronous_commit": "off"},
            ).start()
            uri, password = split_password(pg.sqlalchemy_url)
        else:
            uri, password = split_password(cfg.backend_store_uri or "")
        if password:
            env["PGPASSWORD"] = password
        state.backend = mask(uri, set())
        artifacts = cfg.artifacts
        if "://" not in artifacts:
            Path(artifacts).mkdir(parents=True, exist_ok=True)
        elif artifacts.startswith("s3://") and not (
            os.environ.get("MLFLOW_S3_ENDPOINT_URL") or os.environ.get("AWS_ACCESS_KEY_ID")
        ):
            log.warning(
                "artifacts go to %s but neither MLFLOW_S3_ENDPOINT_URL nor AWS_ACCESS_KEY_ID "
                "is set: boto3 falls back to its own configuration",
                artifacts,
            )
        port = cfg.port or free_port(cfg.host if cfg.host != "0.0.0.0" else "127.0.0.1")
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            uri,
            "--artifacts-destination",
            artifacts,
            "--host",
            cfg.host,
            "--port",
            str(port),
            "--workers",
            str(cfg.workers),
        ]
        if cfg.workers > 1 and not _has_uvloop():
            log.warning(
                "--workers %d without uvloop costs ~45 ms per request (RECIPES.md); "
                "pip install uvloop, or use --workers 1",
                cfg.workers,
            )
        if cfg.allowed_hosts:
            cmd += ["--allowed-hosts", cfg.allowed_hosts]
        if cfg.auth:
            from benchflow.tracking import auth as tracking_auth

            env.update(tracking_auth.server_env(cfg.dir, uri))
            cmd += tracking_auth.SERVER_ARGS
        probe_host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
        url = f"http://{probe_host}:{port}"
        state.host, state.port = cfg.host, port
        state.url = f"http://{socket.getfqdn()}:{port}" if cfg.host in ("0.0.0.0", "::") else url
        log.info("starting MLflow on %s (backend %s, artifacts %s)", url, state.backend, artifacts)
        server = ServerProcess("mlflow", cmd, cfg.logs_dir, env=env, cwd=cfg.dir)
        state.mlflow_pid = server.pid
        state.save(cfg.dir)
        server.wait_ready(lambda: healthy(url, 1.0), cfg.ready_timeout_s, poll_s=0.2)
        if cfg.auth:
            from benchflow.tracking import auth as tracking_auth

            state.users = tracking_auth.provision(url)
        state.status, state.ready_at = "ready", time.time()
        state.save(cfg.dir)
        log.info(
            "MLflow tracking server ready: %s (%.1f s)", url, state.ready_at - state.started_at
        )
        while server.alive():
            time.sleep(0.5)
        raise ServerError(
            f"mlflow server exited with code {server.proc.returncode}; "
            f"see {server.stderr_path}: {server._tail()}"
        )
    except _Stop as why:
        log.info("stopping (%s)", why)
        state.status = "stopping"
        state.save(cfg.dir)
    except Exception as exc:
        code = 1
        state.error = mask(f"{type(exc).__name__}: {exc}", set())
        log.error("tracking server failed: %s", state.error)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # teardown is not interrupted
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if server is not None:
            server.stop(grace_s=20)
        if pg is not None:
            pg.stop()
        state.status = "failed" if code else "stopped"
        state.stopped_at = time.time()
        state.save(cfg.dir)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    return code


def _has_uvloop() -> bool:
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


# -- start / stop / status ------------------------------------------------------------
def start(cfg: ServerConfig, args: list[str]) -> ServerState:
    """Launch the supervisor in the background (``benchflow server run ARGS``) and wait
    until the server answers; raises :class:`ServerError` if it does not."""
    cfg.dir.mkdir(parents=True, exist_ok=True)
    cfg.logs_dir.mkdir(parents=True, exist_ok=True)
    old = ServerState.load(cfg.dir)
    if old is not None and old.supervisor_alive():
        raise ServerError(
            f"a tracking server already runs from {cfg.dir}: {old.url} (pid {old.pid}); "
            "`benchflow server stop` first"
        )
    env = dict(os.environ)
    if cfg.backend_store_uri:
        env[BACKEND_ENV] = cfg.backend_store_uri  # never on the command line
    cmd = [sys.executable, "-m", "benchflow", "server", "run", *args]
    out = open(cfg.logs_dir / "supervisor.out", "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # outlives this command and its terminal
        )
    finally:
        out.close()
    deadline = time.monotonic() + cfg.ready_timeout_s + 60
    while time.monotonic() < deadline:
        state = ServerState.load(cfg.dir)
        if state is not None and state.pid == proc.pid:
            if state.status == "ready":
                return state
            if state.status in ("failed", "stopped"):
                raise ServerError(f"the tracking server failed to start: {state.error}")
        if proc.poll() is not None:
            state = ServerState.load(cfg.dir)
            why = state.error if state is not None and state.pid == proc.pid else None
            raise ServerError(
                f"the tracking server exited with code {proc.returncode}: "
                f"{why or _tail(cfg.logs_dir / 'supervisor.out')}"
            )
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    raise ServerError(f"the tracking server was not ready in time; see {cfg.logs_dir}")


def stop(state_dir: Path, timeout_s: float = 60.0) -> ServerState | None:
    """Stop the server started from ``state_dir``; None when none was running."""
    state = ServerState.load(state_dir)
    if state is None or not state.supervisor_alive():
        return None
    assert state.pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.pid, signal.SIGTERM)
    try:
        psutil.Process(state.pid).wait(timeout_s)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        log.warning("supervisor %d did not stop in %.0f s; killing it", state.pid, timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, signal.SIGKILL)
        if state.mlflow_pid:  # its own process group (benchflow.sut.servers)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(state.mlflow_pid, signal.SIGKILL)
        final = ServerState.load(state_dir) or state
        final.status, final.stopped_at = "stopped", time.time()
        final.save(state_dir)
    return ServerState.load(state_dir)


def status(state_dir: Path) -> tuple[ServerState | None, bool]:
    """The recorded state and whether the server answers right now."""
    state = ServerState.load(state_dir)
    if state is None:
        return None, False
    alive = state.supervisor_alive()
    if not alive and state.status in ("starting", "ready", "stopping"):
        state.status = "dead"  # killed without a chance to say so
    return state, bool(alive and state.url and healthy(_probe_url(state)))


def _probe_url(state: ServerState) -> str:
    host = state.host or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{state.port}"


def _tail(path: Path, n: int = 600) -> str:
    try:
        return mask(path.read_text(errors="replace")[-n:].strip(), set()) or "(no output)"
    except OSError:
        return "(no output)"
