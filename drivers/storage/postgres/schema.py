"""The pgbench-shaped schema: its scale and how it is created and filled."""

from __future__ import annotations

import logging

from drivers.base import DriverError
from drivers.storage.postgres.errors import _first_line

# One logger for the whole driver, whichever of its modules logs.
log = logging.getLogger("drivers.storage.postgres")

ACCOUNTS_PER_BRANCH = 100_000  # pgbench's scale unit
TELLERS_PER_BRANCH = 10


class SchemaLoader:
    """The load phase: a base of :class:`~drivers.storage.postgres.driver.PostgresDriver`,
    on its harness connection (``_admin``), at its scale (``branches``, ``tellers``)."""

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
