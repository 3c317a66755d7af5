"""The workloads: one method per ``service.workload``, each one request (transaction);
those in ``MIX_CLASSES`` are also the classes a mix (``mix=``) draws per request."""

from __future__ import annotations

from drivers.storage.postgres.connections import _Worker

# The workloads that are one kind of request each, so a mix may name them (pgbench's
# weighted scripts, ``-b tpcb-like@1 -b select-only@9``). Not batch_insert (its size is
# ``batch``, one per trial) nor mix (a mix of these itself).
MIX_CLASSES = ("point_select", "range", "insert", "update", "tpcb")


class Workloads:
    """The requests: a base of :class:`~drivers.storage.postgres.driver.PostgresDriver`,
    which picks one of these methods as ``_op`` (or, per request, ``_ops[ctx.cls]``)
    and sends its ``_sql``."""

    # One method per workload, chosen once: the hot path does no dispatching.
    # Ids are drawn as int(random() * n) + 1 (uniform, and cheaper than randint), or
    # by the access law's key stream when it is skewed (pgbench's random_zipfian).
    def _point_select(self, w: _Worker) -> int:
        aid = int(w.rng.random() * self._n_rows) + 1 if w.keys is None else w.keys.next() + 1
        w.cur.execute(self._sql["bf_select"] % aid)
        w.cur.fetchone()
        return 1

    def _range(self, w: _Worker) -> int:
        if w.starts is None:
            lo = int(w.rng.random() * (self._n_rows - self._n_range + 1)) + 1
        else:
            lo = w.starts.next() + 1
        w.cur.execute(self._sql["bf_range"] % (lo, lo + self._n_range - 1))
        return len(w.cur.fetchall())

    def _update(self, w: _Worker) -> int:
        rng = w.rng
        aid = int(rng.random() * self._n_rows) + 1 if w.keys is None else w.keys.next() + 1
        w.cur.execute(self._sql["bf_update"] % (int(rng.random() * 10001) - 5000, aid))
        return 1

    def _insert(self, w: _Worker) -> int:
        rng = w.rng
        aid = int(rng.random() * self._n_rows) + 1 if w.keys is None else w.keys.next() + 1
        w.cur.execute(self._sql["bf_insert"] % (aid, int(rng.random() * 10001) - 5000))
        return 1

    def _mix(self, w: _Worker) -> int:
        """``workload=mix``: the two-class mix drawn by the driver, from the worker's own
        stream (as before ``mix=`` existed: the same statements, with the same
        probabilities), then run as ``mix={point_select: r, update: 1-r}`` runs a class."""
        cls = "point_select" if w.rng.random() < self.settings.read_ratio else "update"
        return self._ops[cls](w)

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
        aid = int(rng.random() * self._n_rows) + 1 if w.keys is None else w.keys.next() + 1
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
