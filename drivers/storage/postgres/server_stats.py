"""The server's own counters (``pg_stat_database``) around the measured window."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from drivers.storage.postgres.errors import _first_line

# One logger for the whole driver, whichever of its modules logs.
log = logging.getLogger("drivers.storage.postgres")

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


class ServerStats:
    """``measure_start``/``measure_end``: a base of
    :class:`~drivers.storage.postgres.driver.PostgresDriver`, reading the counters on
    its harness connection (``_admin``) and flushing its workers' (``_workers``)."""

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

    # -- the server's side as series (Driver.server_sample) ------------------------------
    _ACTIVITY = (
        "SELECT count(*) FILTER (WHERE state = 'active'),"
        " count(*) FILTER (WHERE state = 'idle in transaction'),"
        " count(*) FILTER (WHERE wait_event_type = 'Lock'),"
        " count(*)"
        " FROM pg_stat_activity WHERE datname = %s"
    )

    def server_sample(self) -> dict[str, float]:
        """The benchmark database's backends now (``pg_stat_activity``): active, idle in a
        transaction, waiting on a lock, all. Read on a connection of its own to the
        maintenance database ``postgres`` (``template1`` on the trial's own embedded
        server, whose benchmark database is ``postgres``), so that ``pg_stat_database``
        of the benchmark database — the ``pg.*`` figures — never counts the monitor's
        statements. A benchmark run *in* ``postgres`` on a server of the user's gets no
        series: a session in ``template1`` would block their ``CREATE DATABASE``."""
        import psycopg2
        from psycopg2.extensions import parse_dsn

        db = parse_dsn(self.dsn).get("dbname") or "postgres"
        if db != "postgres":
            maintenance = "postgres"
        elif self.settings.mode == "embedded":
            maintenance = "template1"
        else:
            return {}

        conn = getattr(self, "_monitor", None)
        if conn is None or conn.closed:
            kwargs = {"connect_timeout": 2, "application_name": f"{self.app_name}-monitor"}
            s = self.settings
            password = os.environ.get(s.auth_env) if s.mode == "server" else None
            if password and s.auth_env != "PGPASSWORD":  # as the workers connect
                kwargs["password"] = password
            conn = self._monitor = psycopg2.connect(self.dsn, dbname=maintenance, **kwargs)
            conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(self._ACTIVITY, (db,))
            active, idle_tx, lock_waits, total = cur.fetchone()
        return {
            "backends.active": active,
            "backends.idle_in_transaction": idle_tx,
            "backends.lock_waits": lock_waits,
            "backends.total": total,
        }

    def _close_monitor(self) -> None:
        conn = getattr(self, "_monitor", None)
        self._monitor = None
        if conn is not None and not conn.closed:
            try:
                conn.close()
            except Exception as exc:  # closing a dead connection: nothing left to do
                log.debug("closing the monitor connection: %s", exc)
