"""The workloads: one method per ``service.workload``, each one request (transaction)."""

from __future__ import annotations

from drivers.storage.postgres.connections import _Worker


class Workloads:
    """The requests: a base of :class:`~drivers.storage.postgres.driver.PostgresDriver`,
    which picks one of these methods as ``_op`` and sends its ``_sql``."""

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
