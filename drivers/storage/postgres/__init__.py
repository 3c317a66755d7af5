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

``mix={point_select: 0.9, update: 0.1}`` (any of point_select, range, insert,
update, tpcb) runs each request as its class's workload, with figures per class;
``workload=mix`` is the older two-class form, drawn by the driver. A skewed access
law (``access.distribution=zipfian``, pgbench's ``random_zipfian``) picks the
account ids (and a range's first row), one key stream per worker.

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

``mode=embedded`` (default) starts a throwaway server (:mod:`benchflow.sut.embedded`);
``mode=server`` connects to ``dsn``, with the password taken from the
environment variable named by ``auth_env`` (or ``~/.pgpass``), never from the
config.
"""

from drivers.storage.postgres.driver import PostgresDriver
from drivers.storage.postgres.settings import PostgresSettings

__all__ = ["PostgresDriver", "PostgresSettings"]
