"""The postgres driver against a real PostgreSQL server (started by a fixture, or by
the driver itself in mode=embedded)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import FAST

from storage.helpers import assert_nowhere, override, trials

SMALL = ["service=postgres", "service.rows=2000", *FAST]


def server_mode(workdir, pg, dsn: str, password: str | None = None) -> list[str]:
    """Overrides for mode=server against the fixture; its password goes in the environment."""
    workdir.env["PGPASSWORD"] = pg.password if password is None else password
    return ["service.mode=server", f"service.dsn='{dsn}'"]


def test_every_workload_on_a_real_server_counts_what_the_server_counts(
    workdir, postgres_server, postgres_dsn
):
    """Each request is one transaction: the server's own commit counter, differenced
    over the window, equals the number of requests the harness recorded."""
    proc = workdir.run(
        "-m",
        *SMALL,
        *server_mode(workdir, postgres_server, postgres_dsn),
        "service.workload=point_select,range,insert,update,mix,tpcb",
        "service.prepared=true",
        "service.range_rows=10",
        "concurrency=2",
    )
    assert proc.returncode == 0, workdir.explain(proc)
    done = trials(workdir)
    assert len(done) == 6
    for meta, m in done:
        wl = meta["run_name"]
        assert meta["status"] == "finished", wl
        assert m["validity"]["valid"], (wl, m["validity"])
        assert m["throughput"]["unit"] == "requests_per_s" and m["throughput"]["value"] > 0
        x = m["extra"]
        assert x["pg.commits"] == m["load"]["completed"], (wl, x["pg.commits"], m["load"])
        assert x["pg.rollbacks"] == 0 and 0 < x["pg.block_hit_ratio"] <= 1
        assert m["phases"]["load"]["rows"] == 2000 and m["phases"]["load"]["seconds"] > 0
        assert m["errors"]["count"] == 0
    by_wl = {override(meta, "service.workload"): m for meta, m in done}
    assert by_wl["range"]["rates"]["rows_per_s"] == pytest.approx(
        10 * by_wl["range"]["rates"]["requests_per_s"]
    )
    assert by_wl["update"]["extra"]["pg.rows_updated"] == by_wl["update"]["load"]["completed"]
    assert by_wl["insert"]["extra"]["pg.rows_inserted"] == by_wl["insert"]["load"]["completed"]
    tpcb = by_wl["tpcb"]  # three updates and one insert per transaction
    assert tpcb["extra"]["pg.rows_updated"] == 3 * tpcb["load"]["completed"]
    runs = workdir.runs()
    runs = runs[runs["tags.benchflow.trial_id"].notna()]  # not the sweep's parent run
    assert len(runs) == 6 and (runs["metrics.extra.pg.commits"] > 0).all()
    assert_nowhere(postgres_server.password, workdir, proc.stdout, proc.stderr)


def test_batch_insert_writes_batch_rows_per_statement(workdir, postgres_server, postgres_dsn):
    proc = workdir.run(
        *SMALL,
        *server_mode(workdir, postgres_server, postgres_dsn),
        "service.workload=batch_insert",
        "batch=50",
        check=True,
    )
    ((_, m),) = trials(workdir)
    n = m["load"]["completed"]
    assert m["extra"]["pg.rows_inserted"] == 50 * n and m["extra"]["pg.commits"] == n
    assert m["rates"]["rows_per_s"] == pytest.approx(50 * m["rates"]["requests_per_s"])
    assert m["config"]["batch"] == 50
    assert_nowhere(postgres_server.password, workdir, proc.stdout, proc.stderr)


def test_server_series_are_read_beside_exact_commit_counts(workdir):
    """The embedded server's backends each monitor interval (``server.csv``, MLflow
    ``server/backends.*``), read from the maintenance database: the benchmark
    database's commit count stays exactly the requests recorded."""
    proc = workdir.run(*SMALL, "concurrency=4", "duration_s=2", "tracking.upload=false")
    assert proc.returncode == 0, workdir.explain(proc)
    ((_, m),) = trials(workdir)
    assert m["extra"]["pg.commits"] == m["load"]["completed"]
    (trial,) = workdir.trial_dirs()
    rows = [r.split(",") for r in (trial / "server.csv").read_text().splitlines()]
    col = rows[0].index("backends.total")
    seen = [float(r[col]) for r in rows[1:] if r[col]]
    assert seen and max(seen) >= 4, rows[:4]


def _data_dir_from(trial_log: Path) -> Path:
    for line in trial_log.read_text().splitlines():
        if "PostgreSQL ready on" in line:
            return Path(line.rsplit("(data ", 1)[1].rstrip(")"))
    raise AssertionError("the trial log does not say where the server lived")


def test_server_killed_mid_trial_invalidates_it_and_the_sweep_goes_on(workdir):
    """Two trials in mode=embedded, each starting (and removing) its own server.

    ``pg_ctl stop -m immediate`` on the first trial's server during its window: that
    trial ends on time with connection_lost errors and is invalid; the next one runs."""
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "benchflow", "-m", *SMALL,
            "service.workload=point_select,update", "duration_s=4", "stall_timeout_s=10",
        ],
        cwd=workdir.path, env=workdir.env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        data_dir, port = _wait_for_embedded_server(proc.pid)
        _wait_for_workers(port)
        time.sleep(0.8)  # past the 0.2 s warm-up: inside the measured window
        killed_at = time.monotonic()
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        from benchflow.sut.embedded.postgres import find_bin_dir

        subprocess.run(
            [*prefix, str(find_bin_dir() / "pg_ctl"), "stop", "-D", data_dir, "-m", "immediate"],
            check=True, capture_output=True, cwd="/",
        )  # fmt: skip
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    (meta1, m1), (meta2, m2) = trials(workdir)
    assert meta1["status"] == "finished" and meta2["status"] == "finished"
    # It ended within its own time: the 4 s window, not a hang on a dead server.
    assert meta1["ended_at_epoch"] - meta1["started_at_epoch"] < 30
    assert time.monotonic() - killed_at < 90
    assert not m1["validity"]["valid"]
    assert any("PostgreSQL" in r for r in m1["validity"]["reasons"]), m1["validity"]
    assert m1["errors"]["by_class"].get("connection_lost", 0) >= 1, m1["errors"]
    assert m1["load"]["completed"] > 0, "requests before the kill were measured"
    assert m2["validity"]["valid"] and m2["errors"]["count"] == 0
    # mode=embedded: the server was started for the trial, watched, and removed after.
    assert m2["extra"]["pg.commits"] == m2["load"]["completed"]
    assert m2["phases"]["server_start"]["seconds"] > 0
    assert m2["resource"]["scope"] == "sut_process"  # the monitor watched the server
    logs = workdir.results / "adhoc" / meta2["trial_id"] / "logs"
    assert "database system is ready" in (logs / "postgres.err").read_text()
    for meta in (meta1, meta2):
        data_dir = _data_dir_from(workdir.results / "adhoc" / meta["trial_id"] / "logs/trial.log")
        assert not data_dir.parent.exists(), "the throwaway server's directory must be removed"
        left = [
            p for p in psutil.process_iter(["cmdline"]) if str(data_dir) in str(p.info["cmdline"])
        ]
        assert not left, "the throwaway server must be stopped"


def _wait_for_embedded_server(pid: int, timeout_s: float = 60) -> tuple[str, int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in psutil.Process(pid).children(recursive=True):
            try:
                cmd = child.cmdline()
            except psutil.Error:
                continue
            if cmd and cmd[0].endswith("/postgres") and "-D" in cmd:
                return cmd[cmd.index("-D") + 1], int(cmd[cmd.index("-p") + 1])
        time.sleep(0.05)
    raise AssertionError("the trial never started its PostgreSQL")


def _wait_for_workers(port: int, timeout_s: float = 60) -> None:
    """Until the trial's worker connections are open (the load has begun)."""
    import psycopg2

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with psycopg2.connect(
                host="127.0.0.1", port=port, user="postgres", dbname="postgres"
            ) as c:
                cur = c.cursor()
                cur.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name ~ '^benchflow-[0-9a-f]+$'"
                )
                if cur.fetchone()[0] > 0:
                    return
        except psycopg2.OperationalError:
            pass
        time.sleep(0.05)
    raise AssertionError("the trial's workers never connected")


def test_wrong_password_and_unreachable_dsn_are_failed_trials_that_leak_nothing(
    workdir, postgres_server, postgres_dsn
):
    """A sweep of two trials that cannot connect: each is a FAILED trial with its error
    class, the sweep goes on, and no password reaches any file, log or MLflow."""
    from benchflow.sut.servers import free_port

    wrong = "wrong-password-" + "x" * 12
    unreachable = f"host=127.0.0.1 port={free_port()} user=postgres connect_timeout=2"
    server_mode(workdir, postgres_server, postgres_dsn, password=wrong)
    proc = workdir.run(
        "-m", *SMALL, "service.mode=server", f"service.dsn='{postgres_dsn}','{unreachable}'"
    )
    assert proc.returncode == 1, "a sweep with failed trials exits 1 at the end"
    (meta1, m1), (meta2, m2) = trials(workdir)
    assert meta1["status"] == meta2["status"] == "failed" and m1 is m2 is None
    assert meta1["error"]["class"] == "authentication_failed", meta1["error"]
    assert "password authentication failed" in meta1["error"]["message"]
    assert meta2["error"]["class"] == "connection_refused", meta2["error"]
    assert "cannot connect to PostgreSQL" in meta2["error"]["message"]
    runs = workdir.runs()
    runs = runs[runs["tags.benchflow.trial_id"].notna()]
    assert set(runs["status"]) == {"FAILED"}
    assert set(runs["tags.benchflow.error_class"]) == {
        "authentication_failed",
        "connection_refused",
    }
    assert_nowhere(wrong, workdir, proc.stdout, proc.stderr)
    assert_nowhere(postgres_server.password, workdir, proc.stdout, proc.stderr)


def test_a_password_in_the_dsn_is_refused_without_being_shown(workdir):
    secret = "hunter2-" + "s" * 10
    proc = workdir.run(
        "service=postgres", "service.mode=server", f"service.dsn='host=db user=u password={secret}'"
    )
    assert proc.returncode == 2
    msg = proc.stderr.strip().splitlines()[-1]
    assert "service.dsn" in msg and "must not hold a password" in msg and "PGPASSWORD" in msg
    assert secret not in proc.stdout + proc.stderr
    assert not workdir.results.exists()


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["service.workload=oltp"], ["service.workload", "'oltp'", "point_select", "tpcb"]),
        (["batch=10"], ["batch", "workload=batch_insert"]),
        (["service.range_rows=5000", "service.rows=100"], ["service.range_rows", "at most rows"]),
        (["service.mode=server"], ["service.dsn", "mode=server needs a DSN"]),
        (["service.dsn='host=x'"], ["service.dsn", "only for mode=server"]),
        (["service.rows=0"], ["service.rows", "greater than or equal to 1"]),
    ],
    ids=["unknown-workload", "batch", "range", "server-no-dsn", "embedded-dsn", "rows"],
)
def test_bad_postgres_config_is_refused_before_anything_starts(overrides, words):
    """The same validation `python -m benchflow` runs (exit 2), called in process."""
    from benchflow.config import ConfigError, compose_trials

    with pytest.raises(ConfigError) as err:
        compose_trials(["service=postgres", *overrides], multirun=False)
    for w in words:
        assert w in str(err.value), str(err.value)


def test_errors_from_the_server_are_classified(postgres_server, tmp_path):
    """Real failures, provoked on the fixture server: each maps to its error class."""
    import psycopg2

    from drivers.base import RunSettings, TrialContext
    from drivers.storage.postgres import PostgresDriver, PostgresSettings

    ctx = TrialContext("t" * 32, RunSettings(1, 1, 1, 0, None), tmp_path, tmp_path)
    drv = PostgresDriver(PostgresSettings(name="postgres", driver="postgres"), ctx)
    dsn = postgres_server.dsn

    def conn():
        c = psycopg2.connect(dsn)
        c.autocommit = True
        return c

    a, b = conn(), conn()
    ca, cb = a.cursor(), b.cursor()
    ca.execute("DROP TABLE IF EXISTS bf_err; CREATE TABLE bf_err (id int PRIMARY KEY, v int)")
    ca.execute("INSERT INTO bf_err VALUES (1, 0), (2, 0)")

    caught = {}
    # deadlock: a locks 1 then wants 2, b locks 2 then wants 1
    ca.execute("SET deadlock_timeout = '50ms'")
    cb.execute("SET deadlock_timeout = '50ms'")
    ca.execute("BEGIN; UPDATE bf_err SET v = 1 WHERE id = 1")
    cb.execute("BEGIN; UPDATE bf_err SET v = 1 WHERE id = 2")
    import threading

    def second():
        try:
            cb.execute("UPDATE bf_err SET v = 2 WHERE id = 1")
        except psycopg2.Error as exc:
            caught["b"] = exc

    t = threading.Thread(target=second)
    t.start()
    try:
        ca.execute("UPDATE bf_err SET v = 2 WHERE id = 2")
    except psycopg2.Error as exc:
        caught["a"] = exc
    t.join(10)
    (exc,) = caught.values()
    assert drv.classify_error(exc) == "deadlock"
    ca.execute("ROLLBACK")
    cb.execute("ROLLBACK")

    # serialization failure: two serializable transactions updating the same row
    ca.execute("BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT v FROM bf_err WHERE id = 1")
    cb.execute("BEGIN ISOLATION LEVEL SERIALIZABLE; UPDATE bf_err SET v = 3 WHERE id = 1; COMMIT")
    with pytest.raises(psycopg2.Error) as err:
        ca.execute("UPDATE bf_err SET v = 4 WHERE id = 1")
    assert drv.classify_error(err.value) == "serialization_failure"
    ca.execute("ROLLBACK")

    # statement timeout
    ca.execute("SET statement_timeout = 50")
    with pytest.raises(psycopg2.Error) as err:
        ca.execute("SELECT pg_sleep(2)")
    assert drv.classify_error(err.value) == "timeout"

    # the connection lost (its backend terminated, as by a server shutdown)
    pid = a.get_backend_pid()
    cb.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.1)
    with pytest.raises(psycopg2.Error) as err:
        ca.execute("SELECT 1")
    assert drv.classify_error(err.value) == "connection_lost"
    cb.execute("DROP TABLE bf_err")
    b.close()
