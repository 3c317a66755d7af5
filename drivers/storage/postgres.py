"""``postgres``: OLTP micro-benchmarks on PostgreSQL through psycopg2.

The schema is pgbench's (accounts, branches, tellers, history: same columns,
same fill), under a table prefix, plus an ``inserts`` table with an identity
primary key for the insert workloads. So ``workload=point_select`` is pgbench's
select-only transaction and ``workload=tpcb`` its TPC-B-like one, statement for
statement, and the two can be compared on the same server (``make bench``).

One request is one transaction:

==============  ==========================================================
point_select    ``SELECT abalance FROM accounts WHERE aid = ?``
range           ``SELECT aid, abalance ... WHERE aid BETWEEN ? AND ?+range_rows-1``
insert          one row into ``inserts``, committed
update          ``UPDATE accounts SET abalance = abalance + ? WHERE aid = ?``
batch_insert    ``batch`` rows into ``inserts`` in one statement, committed
mix             point_select with probability ``read_ratio``, else update
tpcb            BEGIN; update account; select it; update teller; update
                branch; insert history; COMMIT (pgbench's built-in script)
==============  ==========================================================

Each worker has its own connection (autocommit; ``tpcb`` sends its own
BEGIN/COMMIT, as pgbench does); ``prepared=true`` uses server-side prepared
statements. A failed request is classified (serialization_failure, deadlock,
timeout, connection_lost, ...); a lost connection is re-opened by the next
request, with a short back-off so a dead server is not hammered.

Around the measured window the server's own counters (``pg_stat_database``)
are read and differenced: commits, rollbacks, block hit ratio, temp bytes,
deadlocks. Before the first reading every worker's backend is made to flush
its pending statistics (``pg_stat_force_next_flush()``, PostgreSQL 15+), and the
last reading waits for the workers' backends to exit, so the window's counts
are exact. A server that restarted or vanished during the window makes the
trial invalid.

``mode=embedded`` (default) starts a throwaway server (:mod:`benchflow.embedded`);
``mode=server`` connects to ``dsn``, with the password taken from the
environment variable named by ``auth_env`` (or ``~/.pgpass``), never from the
config.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import re
import time
from typing import Any, Literal

from pydantic import Field

from benchflow.secrets import mask
from drivers.base import ConfigRefused, Driver, DriverError, ServiceSettings

log = logging.getLogger("drivers.storage.postgres")

WORKLOADS = ("point_select", "range", "insert", "update", "batch_insert", "mix", "tpcb")
ACCOUNTS_PER_BRANCH = 100_000  # pgbench's scale unit
TELLERS_PER_BRANCH = 10
_IDENT = r"^[a-z_][a-z0-9_]{0,40}$"
_COUNTERS = (
    "xact_commit",
    "xact_rollback",
    "blks_read",
    "blks_hit",
    "temp_files",
    "temp_bytes",
    "deadlocks",
    "conflicts",
    "tup_returned",
    "tup_fetched",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
)

# SQLSTATEs (psycopg2.errorcodes) to the error classes of the result.
_SQLSTATE_CLASS = {
    "40001": "serialization_failure",
    "40P01": "deadlock",
    "57014": "timeout",  # query_canceled: statement_timeout
    "55P03": "timeout",  # lock_not_available: lock_timeout
    "25P03": "timeout",  # idle_in_transaction_session_timeout
    "57P01": "connection_lost",  # admin_shutdown (pg_ctl stop, pg_terminate_backend)
    "57P02": "connection_lost",  # crash_shutdown
    "57P03": "connection_lost",  # cannot_connect_now (starting up / shutting down)
    "28P01": "authentication_failed",
    "28000": "authentication_failed",
    "53300": "too_many_connections",
}


class PostgresSettings(ServiceSettings):
    workload: Literal[
        "point_select", "range", "insert", "update", "batch_insert", "mix", "tpcb"
    ] = "point_select"
    rows: int = Field(
        100_000, ge=1, le=2_000_000_000, description="accounts rows (pgbench scale 1 = 100,000)"
    )
    range_rows: int = Field(100, ge=1, description="rows per range lookup")
    read_ratio: float = Field(0.9, ge=0, le=1, description="mix: share of point selects")
    prepared: bool = Field(False, description="server-side prepared statements")
    isolation_level: Literal["read_committed", "repeatable_read", "serializable"] = "read_committed"
    statement_timeout_ms: int = Field(30_000, ge=0, description="0: none")
    connect_timeout_s: int = Field(10, ge=1)
    dsn: str | None = Field(None, description="mode=server: libpq DSN or URL, no password")
    auth_env: str = Field("PGPASSWORD", description="environment variable holding the password")
    table_prefix: str = Field("benchflow_", pattern=_IDENT)
    keep_data: bool = Field(False, description="mode=server: leave the tables behind")
    server_settings: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="mode=embedded: postgresql.conf settings"
    )
    start_timeout_s: float = Field(60, gt=0)


class _Worker:
    """One worker's connection and random stream."""

    __slots__ = ("conn", "cur", "failures", "index", "retry_at", "rng")

    def __init__(self, index: int, rng: random.Random) -> None:
        self.index = index
        self.rng = rng
        self.conn = None
        self.cur = None
        self.failures = 0  # consecutive failed connection attempts
        self.retry_at = 0.0


class PostgresDriver(Driver):
    name = "postgres"
    family = "storage"
    description = "PostgreSQL OLTP (pgbench schema): selects, ranges, inserts, updates, TPC-B"
    Settings = PostgresSettings
    batch_meaning = "rows per statement for workload=batch_insert (1 otherwise)"
    size_unit = "rows"
    throughput_basis = "requests"  # transactions per second
    client_library = "psycopg2-binary"

    settings: PostgresSettings

    def __init__(self, settings: PostgresSettings, trial) -> None:
        super().__init__(settings, trial)
        s = settings
        self.branches = max(1, math.ceil(s.rows / ACCOUNTS_PER_BRANCH))
        self.tellers = self.branches * TELLERS_PER_BRANCH
        self.app_name = f"benchflow-{trial.trial_id[:12]}"
        self.dsn: str | None = s.dsn
        self._server = None  # EmbeddedPostgres in mode=embedded
        self._admin = None  # the harness's own connection (setup, counters)
        self._workers: list[_Worker] = []
        self._before: dict[str, Any] | None = None
        self._admin_commits = 0  # statements on the stats connection since measure_start
        self._closing_commits = 0  # workers' flushes after the window, before the last reading
        self._statements = _statements(s.table_prefix)
        # What a request sends for each statement: its SQL, or EXECUTE of the prepared one,
        # as a template its integer parameters are formatted into (see _statements).
        # Bytes, which psycopg2 sends as they are (a str is encoded on every call).
        self._sql = {
            name: (
                f"EXECUTE {name} ({', '.join(['%d'] * len(types))})"
                if s.prepared
                else sql.replace("%s", "%d")
            ).encode()
            for name, (sql, types) in self._statements.items()
        }
        self._n_rows, self._n_range = s.rows, s.range_rows
        self._op = getattr(self, f"_{s.workload}")

    # -- config ------------------------------------------------------------------
    @classmethod
    def check(cls, settings: PostgresSettings, run) -> None:
        s = settings
        if run.batch != 1 and s.workload != "batch_insert":
            raise ConfigRefused(
                "batch", run.batch, "rows per statement is for workload=batch_insert; use batch=1"
            )
        if run.batch > 100_000:
            raise ConfigRefused("batch", run.batch, "at most 100000 rows per statement")
        if s.range_rows > s.rows:
            raise ConfigRefused("service.range_rows", s.range_rows, f"at most rows ({s.rows})")
        if s.mode == "server":
            if not s.dsn:
                raise ConfigRefused(
                    "service.dsn", s.dsn, "mode=server needs a DSN, e.g. 'host=db port=5432 user=u'"
                )
            if _has_password(s.dsn):
                raise ConfigRefused(
                    "service.dsn",
                    mask(s.dsn, set()),
                    f"must not hold a password: put it in the environment variable "
                    f"{s.auth_env} (service.auth_env) or ~/.pgpass",
                )
            if s.server_settings:
                raise ConfigRefused(
                    "service.server_settings",
                    s.server_settings,
                    "only for mode=embedded (a server of your own is configured by you)",
                )
        elif s.dsn:
            raise ConfigRefused(
                "service.dsn", mask(s.dsn, set()), "only for mode=server (embedded starts its own)"
            )

    # -- setup ---------------------------------------------------------------------
    def setup(self) -> None:
        s = self.settings
        if s.mode == "embedded":
            from benchflow.embedded import EmbeddedPostgres

            settings = {"max_connections": max(100, self.trial.run.concurrency + 10)}
            settings.update(s.server_settings)
            with self.trial.phase("server_start"):
                self._server = EmbeddedPostgres(
                    logs_dir=self.trial.logs_dir,
                    settings=settings,
                    start_timeout_s=s.start_timeout_s,
                )
                self._server.start()
            self.dsn = self._server.dsn
        self._admin = self._connect("setup")
        version = self._scalar("SHOW server_version_num")
        self.trial.extra["pg.server_version_num"] = float(version)
        self._load()

    def _load(self) -> None:
        """Create and fill the pgbench-shaped schema, like ``pgbench -i`` (server-side)."""
        p, s = self.settings.table_prefix, self.settings
        cur = self._admin.cursor()
        ddl = [
            f"DROP TABLE IF EXISTS {p}accounts, {p}branches, {p}tellers, {p}history, {p}inserts",
            f"CREATE TABLE {p}branches (bid int NOT NULL, bbalance int, filler char(88))"
            " WITH (fillfactor=100)",
            f"CREATE TABLE {p}tellers (tid int NOT NULL, bid int, tbalance int, filler char(84))"
            " WITH (fillfactor=100)",
            f"CREATE TABLE {p}accounts (aid int NOT NULL, bid int, abalance int, filler char(84))"
            " WITH (fillfactor=100)",
            f"CREATE TABLE {p}history (tid int, bid int, aid int, delta int, mtime timestamp,"
            " filler char(22))",
            f"CREATE TABLE {p}inserts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " aid int NOT NULL, delta int NOT NULL, mtime timestamptz NOT NULL DEFAULT now(),"
            " filler char(22))",
        ]
        fill = [
            f"INSERT INTO {p}branches (bid, bbalance) SELECT bid, 0"
            f" FROM generate_series(1, {self.branches}) AS bid",
            f"INSERT INTO {p}tellers (tid, bid, tbalance) SELECT tid,"
            f" (tid - 1) / {TELLERS_PER_BRANCH} + 1, 0"
            f" FROM generate_series(1, {self.tellers}) AS tid",
            f"INSERT INTO {p}accounts (aid, bid, abalance, filler) SELECT aid,"
            f" (aid - 1) / {ACCOUNTS_PER_BRANCH} + 1, 0, ''"
            f" FROM generate_series(1, {s.rows}) AS aid",
        ]
        keys = [
            f"ALTER TABLE {p}branches ADD PRIMARY KEY (bid)",
            f"ALTER TABLE {p}tellers ADD PRIMARY KEY (tid)",
            f"ALTER TABLE {p}accounts ADD PRIMARY KEY (aid)",
        ]
        with self.trial.phase("load") as figures:
            try:
                for sql in ddl + fill:
                    cur.execute(sql)
                cur.execute(f"VACUUM ANALYZE {p}branches, {p}tellers, {p}accounts, {p}history")
                for sql in keys:
                    cur.execute(sql)
            except Exception as exc:
                raise DriverError(
                    f"creating the schema failed: {_first_line(exc)}", self.classify_error(exc)
                ) from None
            figures["rows"] = float(s.rows)
        figures["rows_per_s"] = s.rows / figures["seconds"] if figures["seconds"] else 0.0
        log.info(
            "loaded %d accounts (%d branches) in %.2f s", s.rows, self.branches, figures["seconds"]
        )

    # -- connections -----------------------------------------------------------------
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

    def open_worker(self, worker: int) -> _Worker:
        w = _Worker(worker, random.Random(self.trial.run.seed * 1_000_003 + worker))
        self._open(w)
        self._workers.append(w)
        return w

    def _open(self, w: _Worker) -> None:
        w.conn = self._connect("worker")
        w.cur = w.conn.cursor()
        if self.settings.prepared:
            for name, (sql, types) in self._statements.items():
                w.cur.execute(f"PREPARE {name} ({', '.join(types)}) AS {_dollar(sql)}")

    def close_worker(self, state: _Worker) -> None:
        if self._before is not None and state.cur is not None and self._flushes_stats():
            # After the window: publish this backend's last statistics before it goes
            # (a closing backend leaves pg_stat_activity before it flushes them).
            try:
                state.cur.execute(self._flush_sql)
                self._closing_commits += 1
            except Exception:  # a lost connection has nothing left to publish
                self._drop(state)
        self._drop(state)
        if state in self._workers:
            self._workers.remove(state)

    # -- the request -----------------------------------------------------------------
    def operation(self, ctx) -> int:
        w: _Worker = ctx.state
        if w.cur is None:
            self._reconnect(w)
        try:
            return self._op(w)
        except Exception as exc:
            self._after_error(w, exc)
            raise

    # One method per workload, chosen once: the hot path does no dispatching.
    # Ids are drawn as int(random() * n) + 1 (uniform, and cheaper than randint).
    def _point_select(self, w: _Worker) -> int:
        w.cur.execute(self._sql["bf_select"] % (int(w.rng.random() * self._n_rows) + 1))
        w.cur.fetchone()
        return 1

    def _range(self, w: _Worker) -> int:
        lo = int(w.rng.random() * (self._n_rows - self._n_range + 1)) + 1
        w.cur.execute(self._sql["bf_range"] % (lo, lo + self._n_range - 1))
        return len(w.cur.fetchall())

    def _update(self, w: _Worker) -> int:
        rng = w.rng
        aid = int(rng.random() * self._n_rows) + 1
        w.cur.execute(self._sql["bf_update"] % (int(rng.random() * 10001) - 5000, aid))
        return 1

    def _insert(self, w: _Worker) -> int:
        rng = w.rng
        aid = int(rng.random() * self._n_rows) + 1
        w.cur.execute(self._sql["bf_insert"] % (aid, int(rng.random() * 10001) - 5000))
        return 1

    def _mix(self, w: _Worker) -> int:
        if w.rng.random() < self.settings.read_ratio:
            return self._point_select(w)
        return self._update(w)

    def _batch_insert(self, w: _Worker) -> int:
        from psycopg2.extras import execute_values

        rng, n, rows = w.rng, self.trial.run.batch, self._n_rows
        values = [
            (int(rng.random() * rows) + 1, int(rng.random() * 10001) - 5000) for _ in range(n)
        ]
        execute_values(
            w.cur,
            f"INSERT INTO {self.settings.table_prefix}inserts (aid, delta) VALUES %s",
            values,
            page_size=n,  # one statement, one transaction (autocommit)
        )
        return n

    def _tpcb(self, w: _Worker) -> int:
        """pgbench's built-in TPC-B-like script, one statement at a time."""
        rng, cur, sql = w.rng, w.cur, self._sql
        aid = int(rng.random() * self._n_rows) + 1
        bid = int(rng.random() * self.branches) + 1
        tid = int(rng.random() * self.tellers) + 1
        delta = int(rng.random() * 10001) - 5000
        cur.execute(b"BEGIN")
        cur.execute(sql["bf_tpcb_account"] % (delta, aid))
        cur.execute(sql["bf_select"] % aid)
        cur.fetchone()
        cur.execute(sql["bf_tpcb_teller"] % (delta, tid))
        cur.execute(sql["bf_tpcb_branch"] % (delta, bid))
        cur.execute(sql["bf_tpcb_history"] % (tid, bid, aid, delta))
        cur.execute(b"COMMIT")
        return 1

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

    def classify_error(self, exc: BaseException) -> str:
        if isinstance(exc, DriverError):
            return exc.error_class
        import psycopg2

        code = getattr(exc, "pgcode", None)
        if code:
            if code in _SQLSTATE_CLASS:
                return _SQLSTATE_CLASS[code]
            if code.startswith("08"):  # connection exceptions
                return "connection_lost"
            from psycopg2 import errorcodes

            return (errorcodes.lookup(code) or f"sqlstate_{code}").lower()
        if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
            return "connection_lost"  # no SQLSTATE: the client lost the server
        return super().classify_error(exc)

    # -- the server's own counters -----------------------------------------------------
    def measure_start(self) -> None:
        flushed = self._flush_worker_stats()
        if not flushed:
            self.trial.notes.append(
                "pg_stat_database counters may be off by up to 1 s of activity: worker "
                "statistics could not be flushed before the window (PostgreSQL < 15 or "
                "client processes)"
            )
        self._admin_commits = self._closing_commits = 0
        self._before = self._snapshot()

    @property
    def _flush_sql(self) -> str:
        # A backend with no pending table statistics skips the flush and keeps its
        # transaction counts: reading a (one-row) table makes sure there is one, so
        # this statement's own commit is published with the rest.
        return (
            f"SELECT pg_stat_force_next_flush() FROM {self.settings.table_prefix}branches LIMIT 1"
        )

    def _flushes_stats(self) -> bool:
        return self.trial.extra.get("pg.server_version_num", 0) >= 150000

    def _flush_worker_stats(self) -> bool:
        """Make every worker backend publish its pending statistics now (PostgreSQL 15+)."""
        if not self._flushes_stats() or not self._workers:
            return False
        for w in list(self._workers):
            if w.cur is None:
                continue
            try:
                w.cur.execute(self._flush_sql)
            except Exception:
                self._drop(w)
        return True

    def measure_end(self) -> dict[str, float]:
        before, self._before = self._before, None
        if before is None:
            return {}
        self._wait_workers_gone()
        after = self._snapshot()
        if after is None:
            self.trial.invalid_reasons.append(
                "PostgreSQL could not be reached after the measured window "
                "(server lost during the trial)"
            )
            return {}
        if after["start_time"] != before["start_time"]:
            self.trial.invalid_reasons.append(
                "PostgreSQL restarted during the measured window (its statistics were reset)"
            )
            return {}
        d = {k: float(after[k] - before[k]) for k in _COUNTERS}
        # The harness's own statements between the readings are transactions too.
        d["xact_commit"] -= after["admin_commits"] + self._closing_commits
        seconds = after["t"] - before["t"]
        blocks = d["blks_hit"] + d["blks_read"]
        return {
            "pg.commits": d["xact_commit"],
            "pg.rollbacks": d["xact_rollback"],
            "pg.commits_per_s": d["xact_commit"] / seconds if seconds > 0 else 0.0,
            "pg.block_hit_ratio": d["blks_hit"] / blocks if blocks else 1.0,
            "pg.blocks_read": d["blks_read"],
            "pg.temp_bytes": d["temp_bytes"],
            "pg.temp_files": d["temp_files"],
            "pg.deadlocks": d["deadlocks"],
            "pg.conflicts": d["conflicts"],
            "pg.rows_returned": d["tup_returned"],
            "pg.rows_fetched": d["tup_fetched"],
            "pg.rows_inserted": d["tup_inserted"],
            "pg.rows_updated": d["tup_updated"],
            "pg.rows_deleted": d["tup_deleted"],
        }

    def _snapshot(self) -> dict[str, Any] | None:
        """pg_stat_database for our database (None when the server cannot be reached).

        The stats connection first flushes its own pending statistics, so every
        one of its statements since the last reading is counted by the time this
        one reads; ``admin_commits`` says how many there were.
        """
        try:
            if self._flushes_stats():
                self._scalar(self._flush_sql)
            # Autocommit: each statement is its own transaction, so the statistics
            # snapshot (stats_fetch_consistency=cache) is fresh for this one.
            row = self._scalar(
                f"SELECT {', '.join(_COUNTERS)}, pg_postmaster_start_time()"
                " FROM pg_stat_database WHERE datname = current_database()",
                whole_row=True,
            )
        except Exception as exc:
            log.warning("cannot read pg_stat_database: %s", _first_line(exc))
            self._admin = None
            return None
        snap = {k: (v or 0) for k, v in zip(_COUNTERS, row[:-1], strict=True)}
        snap["start_time"] = row[-1]
        snap["t"] = time.monotonic()
        # Since measure_start's flush, the stats connection's statements counted by
        # this reading: all but that first flush and this reading itself (pending).
        snap["admin_commits"] = self._admin_commits - 2
        return snap

    def _wait_workers_gone(self, timeout_s: float = 5.0) -> None:
        """Backends flush their statistics when they exit: wait for the workers' to."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                n = self._scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    (self.app_name,),
                )
            except Exception:
                return
            if n == 0:
                return
            time.sleep(0.02)
        self.trial.notes.append(
            "pg_stat_database: some worker backends were still open after the window; "
            "their last statistics may be missing"
        )

    def _scalar(self, sql: str, params: tuple = (), whole_row: bool = False):
        """One statement on the harness's own connection (counted: each is a commit)."""
        if self._admin is None or self._admin.closed:
            self._admin = self._connect("stats")
        with self._admin.cursor() as cur:
            cur.execute(sql, params)
            self._admin_commits += 1
            row = cur.fetchone()
        return row if whole_row else row[0]

    # -- the rest ---------------------------------------------------------------------
    def sut_pids(self) -> list[int]:
        return self._server.pids() if self._server is not None else []

    def teardown(self) -> None:
        s, p = self.settings, self.settings.table_prefix
        try:
            if self._server is None and not s.keep_data and self.dsn:
                try:
                    if self._admin is None or self._admin.closed:
                        self._admin = self._connect("teardown")
                    with self._admin.cursor() as cur:
                        cur.execute(
                            f"DROP TABLE IF EXISTS {p}accounts, {p}branches, {p}tellers,"
                            f" {p}history, {p}inserts"
                        )
                except Exception as exc:
                    log.warning("could not drop the benchmark tables: %s", _first_line(exc))
            if self._admin is not None:
                with contextlib.suppress(Exception):
                    self._admin.close()
                self._admin = None
        finally:
            if self._server is not None:
                self._server.stop()
                self._server = None

    def __getstate__(self):
        # Client processes get the DSN, not the server object or open connections.
        state = dict(self.__dict__)
        state.update(_server=None, _admin=None, _workers=[], _before=None, _op=None)
        return state

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self._op = getattr(self, f"_{self.settings.workload}")


# -- statements -------------------------------------------------------------------------
def _statements(p: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (SQL with %s placeholders, parameter types for PREPARE).

    Every parameter is an ``int`` the driver draws itself, so the hot path formats
    them into the SQL with ``%d`` instead of passing them to psycopg2: its
    parameter adaptation cost ~4 µs of client CPU per point select here (``make bench``,
    storage section), and ``%d`` of an int cannot inject anything.
    """
    statements = {
        "bf_select": (f"SELECT abalance FROM {p}accounts WHERE aid = %s", ["int"]),
        "bf_range": (
            f"SELECT aid, abalance FROM {p}accounts WHERE aid BETWEEN %s AND %s",
            ["int", "int"],
        ),
        "bf_update": (
            f"UPDATE {p}accounts SET abalance = abalance + %s WHERE aid = %s",
            ["int", "int"],
        ),
        "bf_insert": (f"INSERT INTO {p}inserts (aid, delta) VALUES (%s, %s)", ["int", "int"]),
        "bf_tpcb_account": (
            f"UPDATE {p}accounts SET abalance = abalance + %s WHERE aid = %s",
            ["int", "int"],
        ),
        "bf_tpcb_teller": (
            f"UPDATE {p}tellers SET tbalance = tbalance + %s WHERE tid = %s",
            ["int", "int"],
        ),
        "bf_tpcb_branch": (
            f"UPDATE {p}branches SET bbalance = bbalance + %s WHERE bid = %s",
            ["int", "int"],
        ),
        "bf_tpcb_history": (
            f"INSERT INTO {p}history (tid, bid, aid, delta, mtime)"
            " VALUES (%s, %s, %s, %s, CURRENT_TIMESTAMP)",
            ["int", "int", "int", "int"],
        ),
    }
    assert all(t == "int" for _, types in statements.values() for t in types)
    return statements


def _dollar(sql: str) -> str:
    """``%s`` placeholders to ``$1, $2, ...`` for PREPARE."""
    n = iter(range(1, 100))
    return re.sub(r"%s", lambda _: f"${next(n)}", sql)


def _has_password(dsn: str) -> bool:
    return mask(dsn, set()) != dsn


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _connect_error_class(exc: BaseException) -> str:
    """Connection failures carry no SQLSTATE; libpq's message says what happened."""
    code = getattr(exc, "pgcode", None)
    if code in _SQLSTATE_CLASS:
        return _SQLSTATE_CLASS[code]
    text = str(exc).lower()
    if "password authentication failed" in text or "no password supplied" in text:
        return "authentication_failed"
    if "connection refused" in text:
        return "connection_refused"
    if "timeout expired" in text or "timed out" in text:
        return "connect_timeout"
    if "could not translate host name" in text or "name or service not known" in text:
        return "unknown_host"
    if "does not exist" in text:  # role or database
        return "authentication_failed" if "role" in text else "database_not_found"
    if "too many" in text and "connections" in text:
        return "too_many_connections"
    return "connection_failed"
