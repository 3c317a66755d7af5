"""The ``postgres`` driver class: config checks, setup, workers, the request, teardown.

Its bases bring the rest, one module each: connections, the schema load, the
workloads, the server's counters, error classes. What the driver measures is
the package's docstring (:mod:`drivers.storage.postgres`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from typing import Any

from benchflow.secrets import mask
from benchflow.workload.keys import AccessConfig, KeyChooser
from drivers.base import ConfigRefused, Driver
from drivers.storage.postgres.connections import Connections, _Worker
from drivers.storage.postgres.errors import ErrorClassifier, _first_line
from drivers.storage.postgres.schema import (
    ACCOUNTS_PER_BRANCH,
    TELLERS_PER_BRANCH,
    SchemaLoader,
)
from drivers.storage.postgres.server_stats import ServerStats
from drivers.storage.postgres.settings import PostgresSettings, _has_password
from drivers.storage.postgres.statements import _statements
from drivers.storage.postgres.workloads import MIX_CLASSES, Workloads

# One logger for the whole driver, whichever of its modules logs.
log = logging.getLogger("drivers.storage.postgres")


class PostgresDriver(Connections, SchemaLoader, Workloads, ServerStats, ErrorClassifier, Driver):
    name = "postgres"
    family = "storage"
    description = "PostgreSQL OLTP (pgbench schema): selects, ranges, inserts, updates, TPC-B"
    Settings = PostgresSettings
    batch_meaning = "rows per statement for workload=batch_insert (1 otherwise)"
    size_unit = "rows"
    throughput_basis = "requests"  # transactions per second
    client_library = "psycopg2-binary"
    mix_classes = MIX_CLASSES  # mix={point_select: 0.9, update: 0.1}: per-class figures

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
        self.access = trial.run.access or AccessConfig()  # None from older call sites
        self._bind_ops()

    def _bind_ops(self) -> None:
        # the trial's workload, and each mix class's request (bound methods: not pickled)
        self._op = getattr(self, f"_{self.settings.workload}")
        self._ops = {cls: getattr(self, f"_{cls}") for cls in MIX_CLASSES}

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
            from benchflow.sut.embedded import EmbeddedPostgres

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

    # -- workers -------------------------------------------------------------------
    def open_worker(self, worker: int) -> _Worker:
        rng = random.Random(self.trial.run.seed * 1_000_003 + worker)
        keys = starts = None
        if self.access.distribution != "uniform":
            seed = self.trial.run.seed
            keys = KeyChooser(self._n_rows, self.access, seed, stream=worker)
            # a range's first row has its own key space (rows - range_rows + 1 starts) and
            # its own stream, so that ranges and single rows are drawn independently
            starts = KeyChooser(
                self._n_rows - self._n_range + 1, self.access, seed, stream=(1 << 32) + worker
            )
        w = _Worker(worker, rng, keys, starts)
        self._open(w)
        self._workers.append(w)
        return w

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
            return (self._op if ctx.cls is None else self._ops[ctx.cls])(w)
        except Exception as exc:
            self._after_error(w, exc)
            raise

    # -- the rest ---------------------------------------------------------------------
    def sut_pids(self) -> list[int]:
        return self._server.pids() if self._server is not None else []

    def teardown(self) -> None:
        s, p = self.settings, self.settings.table_prefix
        self._close_monitor()
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
        state.update(_server=None, _admin=None, _workers=[], _before=None, _op=None, _ops=None)
        state["_monitor"] = None
        return state

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self._bind_ops()
