"""The SQL of every request, under the table prefix, and its form for PREPARE."""

from __future__ import annotations

import re


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
