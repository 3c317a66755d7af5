"""A throwaway PostgreSQL server: initdb in a temporary directory, a free loopback
port, torn down (and its directory removed) whatever happens.

``initdb`` and ``postgres`` refuse to run as root, so when benchflow runs as root
both run as the ``postgres`` user through ``runuser`` on a directory that user
owns (RECIPES.md). Clients connect over TCP on 127.0.0.1 (or the Unix socket in
:attr:`EmbeddedPostgres.socket_dir`); authentication is ``trust`` unless a
password is given, in which case TCP connections need it (scram-sha-256).

The server binaries are found in ``$BENCHFLOW_PG_BIN``, next to ``initdb`` on
``PATH``, or in the newest ``/usr/lib/postgresql/*/bin`` (Debian's layout).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from benchflow.sut.servers import ServerFailed, ServerProcess, free_port, tcp_ready

log = logging.getLogger("benchflow.embedded.postgres")

_RUN_AS = "postgres"  # the Debian package's system user
_STARTED: set[EmbeddedPostgres] = set()


class PostgresNotInstalled(ServerFailed):
    """No PostgreSQL server binaries (initdb, postgres, pg_ctl) were found."""

    error_class = "server_not_installed"


def find_bin_dir() -> Path:
    """The directory holding ``initdb``, ``postgres`` and ``pg_ctl``."""
    env = os.environ.get("BENCHFLOW_PG_BIN")
    candidates = [Path(env)] if env else []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += debian
    for d in candidates:
        if all((d / exe).is_file() for exe in ("initdb", "postgres", "pg_ctl")):
            return d
    raise PostgresNotInstalled(
        "PostgreSQL server binaries (initdb, postgres, pg_ctl) not found: install the Debian "
        "package `postgresql` (scripts/apt-packages.txt) or set BENCHFLOW_PG_BIN"
    )


class EmbeddedPostgres:
    """A PostgreSQL server that lives as long as this object (or ``with`` block).

    Args:
        logs_dir: where the server's stdout/stderr and initdb's output go; a
            ``logs`` folder inside the temporary directory when omitted (removed
            with it).
        settings: ``postgresql.conf`` settings passed as ``-c key=value``
            (e.g. ``{"synchronous_commit": "off", "shared_buffers": "256MB"}``).
        password: when given, TCP clients must authenticate with it
            (scram-sha-256); otherwise ``trust``. The Unix socket always trusts.
        user: the superuser's name (also the default database's owner).
        database: the database :attr:`dsn` names; created if it is not ``postgres``.
        port: a fixed port; by default a free one (retried if taken meanwhile).
        base_dir: where the temporary directory is made (default: the system's
            temp dir; it must be reachable by the ``postgres`` user when root).
        start_timeout_s: how long to wait for the server to accept connections.
        name: the name of its log files.
        cpus: pin the server to these CPUs (default: the trial's ``placement.server_cpus``).

    Use :meth:`crash` to kill it the hard way (``pg_ctl stop -m immediate``) in
    failure tests, and :meth:`start` again to restart it on the same data.
    """

    def __init__(
        self,
        *,
        logs_dir: str | Path | None = None,
        settings: Mapping[str, object] | None = None,
        password: str | None = None,
        user: str = "postgres",
        database: str = "postgres",
        port: int | None = None,
        base_dir: str | Path | None = None,
        start_timeout_s: float = 60.0,
        name: str = "postgres",
        cpus: list[int] | None = None,
    ) -> None:
        self.cpus = cpus  # None: the trial's placement.server_cpus, if any
        self.settings = {k: _conf_value(v) for k, v in (settings or {}).items()}
        self.password = password
        self.user = user
        self.database = database
        self.host = "127.0.0.1"
        self.name = name
        self.start_timeout_s = start_timeout_s
        self._fixed_port = port
        self.port = port or 0
        self._base_dir = Path(base_dir) if base_dir else Path(tempfile.gettempdir())
        self._logs_dir = Path(logs_dir) if logs_dir else None
        self.root: Path | None = None  # the temporary directory (data, socket, logs)
        self._proc: ServerProcess | None = None
        self._bin: Path | None = None

    # -- where things are --------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self._require_root() / "data"

    @property
    def socket_dir(self) -> Path:
        return self._require_root()

    @property
    def logs_dir(self) -> Path:
        return self._logs_dir or self._require_root() / "logs"

    @property
    def bin_dir(self) -> Path:
        if self._bin is None:
            self._bin = find_bin_dir()
        return self._bin

    @property
    def dsn(self) -> str:
        """A libpq key=value DSN over TCP (with the password when there is one)."""
        parts = [f"host={self.host}", f"port={self.port}", f"user={self.user}"]
        parts.append(f"dbname={self.database}")
        if self.password:
            parts.append(f"password={_quote(self.password)}")
        return " ".join(parts)

    @property
    def url(self) -> str:
        """``postgresql://user[:password]@127.0.0.1:PORT/database``."""
        auth = self.user + (f":{_urlquote(self.password)}" if self.password else "")
        return f"postgresql://{auth}@{self.host}:{self.port}/{self.database}"

    @property
    def sqlalchemy_url(self) -> str:
        """The URL SQLAlchemy (and MLflow's ``--backend-store-uri``) needs: psycopg2 named."""
        return self.url.replace("postgresql://", "postgresql+psycopg2://", 1)

    def environ(self) -> dict[str, str]:
        """``PGHOST``/``PGPORT``/``PGUSER``/``PGDATABASE`` (+ ``PGPASSWORD``) for client tools."""
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.database,
        }
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def __repr__(self) -> str:  # never shows the password
        state = "running" if self.running() else "stopped"
        return f"EmbeddedPostgres({self.host}:{self.port}, user={self.user}, {state})"

    # -- lifecycle ---------------------------------------------------------------
    def running(self) -> bool:
        return self._proc is not None and self._proc.alive()

    def start(self) -> EmbeddedPostgres:
        """initdb (first time only), start the server and wait until it accepts connections."""
        if self.running():
            return self
        try:
            if self.root is None:
                self.root = self._make_root()
                _STARTED.add(self)
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb()
            self._launch()
            if self.database != "postgres":
                self.create_database(self.database, exist_ok=True)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace_s: float = 30.0) -> None:
        """Fast shutdown (SIGINT: connections are ended, a clean checkpoint) and cleanup."""
        if self._proc is not None:
            self._proc.stop(grace_s=grace_s)
            self._proc = None
        self._wait_postmaster_gone(5)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        _STARTED.discard(self)

    def crash(self) -> None:
        """Stop the server the hard way (``pg_ctl stop -m immediate``), keeping its data.

        For failure tests: clients lose their connections at once, the next
        :meth:`start` runs crash recovery.
        """
        if not self.running():
            return
        self._run(
            [str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "immediate"]
        )
        if self._proc is not None:
            self._proc.stop(grace_s=10)
            self._proc = None

    def pids(self) -> list[int]:
        """The postmaster and its children (backends, checkpointer, ...), for monitoring."""
        pm = self._postmaster_pid()
        if pm is None:
            return []
        try:
            proc = psutil.Process(pm)
            return [pm, *(c.pid for c in proc.children(recursive=True))]
        except psutil.Error:
            return []

    def create_database(self, name: str, exist_ok: bool = False) -> None:
        """``createdb NAME`` over the Unix socket (as the superuser)."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$-]*", name):
            raise ValueError(f"database name {name!r}: letters, digits, _ $ - only")
        cmd = [
            str(self.bin_dir / "createdb"),
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            self.user,
            name,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0 and not (exist_ok and "already exists" in proc.stderr):
            raise ServerFailed(f"createdb {name} failed: {proc.stderr.strip()}")

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------
    def _require_root(self) -> Path:
        if self.root is None:
            raise RuntimeError("the embedded PostgreSQL has not been started")
        return self.root

    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def _prefix(self) -> list[str]:
        """Run as the postgres user when we are root (initdb/postgres refuse root)."""
        if not self._as_root():
            return []
        try:
            pwd.getpwnam(_RUN_AS)
        except KeyError:
            raise PostgresNotInstalled(
                f"running as root needs the `{_RUN_AS}` system user (created by the Debian "
                "package `postgresql`) to run the server as"
            ) from None
        return ["runuser", "-u", _RUN_AS, "--"]

    def _make_root(self) -> Path:
        self._base_dir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="benchflow-pg-", dir=self._base_dir))
        if self._as_root():
            pw = pwd.getpwnam(_RUN_AS)
            os.chown(root, pw.pw_uid, pw.pw_gid)
        root.chmod(0o700)
        return root

    def _run(self, cmd: list[str], timeout: float = 120) -> str:
        proc = subprocess.run(
            [*self._prefix(), *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,  # runuser keeps the cwd; the postgres user must be able to enter it
        )
        if proc.returncode != 0:
            raise ServerFailed(
                f"{Path(cmd[0]).name} failed (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-800:]}"
            )
        return proc.stdout

    def _initdb(self) -> None:
        cmd = [
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--auth-local=trust",
            "--no-sync",  # a throwaway cluster: no need to fsync initdb's files
        ]
        pwfile = None
        if self.password:
            pwfile = self._require_root() / ".pwfile"
            pwfile.write_text(self.password + "\n")
            pwfile.chmod(0o600)
            if self._as_root():
                pw = pwd.getpwnam(_RUN_AS)
                os.chown(pwfile, pw.pw_uid, pw.pw_gid)
            cmd += ["--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        else:
            cmd += ["--auth-host=trust"]
        t0 = time.perf_counter()
        try:
            out = self._run(cmd)
        finally:
            if pwfile is not None:
                pwfile.unlink(missing_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        (self.logs_dir / f"{self.name}.initdb.log").write_text(out)
        log.info("initdb %s in %.1f s", self.data_dir, time.perf_counter() - t0)

    def _launch(self) -> None:
        # A restart keeps its port (clients hold the DSN); a first start picks a free one.
        keep = bool(self._fixed_port or self.port)
        attempts = 1 if keep else 3
        for attempt in range(attempts):
            if not keep:
                self.port = free_port()
            cmd = [
                *self._prefix(),
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-k",
                str(self.socket_dir),
                "-c",
                f"listen_addresses={self.host}",
            ]
            for key, value in self.settings.items():
                cmd += ["-c", f"{key}={value}"]
            # SIGINT is PostgreSQL's "fast" shutdown (SIGTERM would wait for clients).
            self._proc = ServerProcess(
                self.name,
                cmd,
                self.logs_dir,
                cwd=self.root,
                stop_signal=signal.SIGINT,
                cpus=self.cpus,
            )
            try:
                self._proc.wait_ready(self._ready, self.start_timeout_s)
                log.info("PostgreSQL ready on %s:%d (data %s)", self.host, self.port, self.data_dir)
                return
            except ServerFailed:
                port_taken = "could not bind" in self._proc._tail(4000)
                self._proc.stop(grace_s=5)
                self._proc = None
                if not port_taken or attempt == attempts - 1:
                    raise

    def _ready(self) -> bool:
        # postmaster.pid's 8th line turns to "ready" once connections are accepted.
        lines = self._pidfile_lines()
        return len(lines) >= 8 and lines[7].strip() == "ready" and tcp_ready(self.host, self.port)

    def _pidfile_lines(self) -> list[str]:
        try:
            return (self.data_dir / "postmaster.pid").read_text().splitlines()
        except (OSError, RuntimeError):
            return []

    def _postmaster_pid(self) -> int | None:
        lines = self._pidfile_lines()
        if lines and lines[0].strip().isdigit():
            return int(lines[0])
        return None

    def _wait_postmaster_gone(self, timeout_s: float) -> None:
        """The postmaster is a child of runuser; make sure it is gone before removing its data."""
        pm = self._postmaster_pid()
        if pm is None:
            return
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pm)
            if "postgres" not in proc.name():
                return
            try:
                proc.wait(timeout_s)
            except psutil.TimeoutExpired:
                log.warning("postmaster %d still running; killing it", pm)
                proc.kill()


def _conf_value(v: object) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    return str(v)


def _quote(value: str) -> str:
    """A libpq DSN value, quoted when needed."""
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _urlquote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


@atexit.register
def _stop_all() -> None:
    # Registered after benchflow.sut.servers' handler, so it runs first: servers stop
    # cleanly and their directories are removed.
    for pg in list(_STARTED):
        with contextlib.suppress(Exception):
            pg.stop(grace_s=5)
