"""Connections to PostgreSQL: opening them, per worker, and recovering a lost one."""

from __future__ import annotations

import contextlib
import os
import random
import time
from typing import Any

from benchflow.secrets import mask
from drivers.base import DriverError
from drivers.storage.postgres.errors import _connect_error_class, _first_line
from drivers.storage.postgres.statements import _dollar


class _Worker:
    """One worker's connection, random stream and, with a skewed access law, key streams."""

    __slots__ = ("conn", "cur", "failures", "index", "keys", "retry_at", "rng", "starts")

    def __init__(self, index: int, rng: random.Random, keys=None, starts=None) -> None:
        self.index = index
        self.rng = rng
        # benchflow.workload.keys.KeyChooser over the accounts (``keys``) and over the
        # first rows of a range (``starts``); None: uniform, drawn from ``rng``
        self.keys = keys
        self.starts = starts
        self.conn = None
        self.cur = None
        self.failures = 0  # consecutive failed connection attempts
        self.retry_at = 0.0


class Connections:
    """Connecting, for the harness and for each worker: a base of
    :class:`~drivers.storage.postgres.driver.PostgresDriver`, whose ``settings``,
    ``dsn``, ``app_name``, ``_server`` and ``_statements`` it uses."""

    def _connect(self, role: str):
        """A connection (autocommit, session settings applied); DriverError when it fails."""
        import psycopg2

        s = self.settings
        kwargs: dict[str, Any] = {
            "connect_timeout": s.connect_timeout_s,
            "application_name": self.app_name if role == "worker" else f"{self.app_name}-{role}",
            # A dead peer is noticed within the timeout instead of hanging (Linux, libpq 12+).
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
        }
        if s.statement_timeout_ms and role == "worker":
            kwargs["tcp_user_timeout"] = s.statement_timeout_ms + 5000
        password = os.environ.get(s.auth_env) if s.mode == "server" else None
        if password and s.auth_env != "PGPASSWORD":  # libpq reads PGPASSWORD itself
            kwargs["password"] = password
        try:
            conn = psycopg2.connect(self.dsn, **kwargs)
        except psycopg2.Error as exc:
            raise DriverError(
                f"cannot connect to PostgreSQL ({self._where()}): {_first_line(exc)}",
                _connect_error_class(exc),
            ) from None
        conn.autocommit = True
        # Only the load is bounded: setup (filling, VACUUM) may take long on big scales.
        timeout_ms = int(s.statement_timeout_ms) if role == "worker" else 0
        with conn.cursor() as cur:
            cur.execute(f"SET statement_timeout = {timeout_ms}")
            level = s.isolation_level.replace("_", " ")
            cur.execute("SET default_transaction_isolation = %s", (level,))
        return conn

    def _where(self) -> str:
        """Where we connect, for messages: host/port/db/user, never a password."""
        if self._server is not None:
            return f"embedded server {self._server.host}:{self._server.port}"
        return mask(self.dsn or "", set())

    def _open(self, w: _Worker) -> None:
        w.conn = self._connect("worker")
        w.cur = w.conn.cursor()
        if self.settings.prepared:
            for name, (sql, types) in self._statements.items():
                w.cur.execute(f"PREPARE {name} ({', '.join(types)}) AS {_dollar(sql)}")

    def _after_error(self, w: _Worker, exc: Exception) -> None:
        """Leave the connection usable (rolled back) or mark it for reconnection."""
        conn = w.conn
        if conn is None or conn.closed or self.classify_error(exc) == "connection_lost":
            self._drop(w)
            return
        try:
            if conn.info.transaction_status != 0:  # not idle: inside a failed transaction
                w.cur.execute("ROLLBACK")
        except Exception:
            self._drop(w)

    def _drop(self, w: _Worker) -> None:
        if w.conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to release
                w.conn.close()
        w.conn = w.cur = None

    def _reconnect(self, w: _Worker) -> None:
        # Back off after failed attempts (50 ms doubling to 1 s) so that a dead
        # server yields a bounded stream of connection_lost errors, not a busy loop.
        wait = w.retry_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        try:
            self._open(w)
            w.failures = 0
        except DriverError as exc:
            w.failures += 1
            w.retry_at = time.monotonic() + min(1.0, 0.05 * 2 ** (w.failures - 1))
            self._drop(w)
            raise DriverError(str(exc), "connection_lost") from None
