"""Mixes (``mix=``) and skewed keys (``access.*``) in the storage drivers, against real
servers (the fixtures' S3 and PostgreSQL, this machine's filesystem), and the parts
of them that need no server (key spaces, draws) in this process."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from storage.helpers import trials

MIX_S3 = {"get": 0.5, "put": 0.2, "delete": 0.1, "head": 0.1, "list": 0.1}
# short trials; MLflow is not what these tests are about
SHORT = ["duration_s=2", "monitor.interval_s=0.2", "concurrency=2", "tracking.upload=false"]
WARM = "warmup_s=0.5"


def mix_arg(weights: dict[str, float]) -> str:
    return "mix={" + ", ".join(f"{k}: {v}" for k, v in weights.items()) + "}"


def class_counts(m: dict) -> dict[str, int]:
    """Requests per class of a result: its successes and its failures."""
    return {k: v["latency_ms"]["count"] + v["errors"]["count"] for k, v in m["classes"].items()}


def assert_binomial(counts: dict[str, int], weights: dict[str, float], sds: float = 4) -> None:
    """Each class's count within ``sds`` standard deviations of n x its weight."""
    n = sum(counts.values())
    assert set(counts) == set(weights), counts
    for cls, w in weights.items():
        sd = math.sqrt(n * w * (1 - w))
        assert abs(counts[cls] - n * w) <= sds * sd, (cls, counts, n)


def custom_of(workdir, meta: dict) -> dict:
    return json.loads((workdir.results / "adhoc" / meta["trial_id"] / "custom.json").read_text())


# -- S3 -----------------------------------------------------------------------------
def test_s3_mix_with_zipf_keys_on_a_real_server(workdir, s3_server):
    """Every class in its share, no errors (deletes never touch what GETs read), and
    the GETs' objects as skewed as Zipf's law says."""
    from benchflow.workload.keys import AccessConfig, KeyChooser, zeta
    from storage.test_s3 import server_mode

    n_obj = 64
    proc = workdir.run(
        *server_mode(workdir, s3_server),
        mix_arg(MIX_S3),
        "access.distribution=zipfian",
        "access.theta=1.2",  # the hottest object: 30% of the GETs (uniform: 1.6%)
        "service.object_size=4KiB",
        f"service.objects={n_obj}",
        "service.verify_fraction=1",
        *SHORT,
        WARM,
    )
    assert proc.returncode == 0, workdir.explain(proc)
    ((meta, m),) = trials(workdir)
    assert meta["status"] == "finished"
    assert m["errors"]["count"] == 0, m["errors"]
    # no one byte rate stands for GETs, PUTs and metadata calls: requests/s
    assert m["throughput"]["unit"] == "requests_per_s"
    counts = class_counts(m)
    assert_binomial(counts, MIX_S3)
    cls = m["classes"]
    for name, sl in cls.items():
        assert sl["errors"]["count"] == 0, (name, sl["errors"])
        moves_bytes = name in ("get", "put")
        assert (sl["rates"]["MiB_per_s"] > 0) == moves_bytes, (name, sl["rates"])
    get = cls["get"]
    assert get["rates"]["MiB_per_s"] == pytest.approx(get["rates"]["ok_requests_per_s"] * 4 / 1024)
    assert m["extra"]["s3.verified_gets"] == counts["get"]  # every GET checked its CRC
    assert m["phases"]["prepare"]["objects"] == n_obj  # the pool GETs read was written
    # deletes removed objects the puts wrote (an empty key only if the puts lagged)
    assert 0 <= m["extra"]["s3.mix.missing_deletes"] < counts["delete"]
    # Skew: the object Zipf's law makes hottest took its share of the window's GETs.
    keys = custom_of(workdir, meta)["s3.keys"]
    assert keys["get"]["requests"] == counts["get"]
    access = AccessConfig(distribution="zipfian", theta=1.2)
    hottest = int(np.bincount(KeyChooser(n_obj, access, seed=1).take(100_000)).argmax())
    p1, n = 1 / zeta(n_obj, 1.2), counts["get"]
    top = dict((k, c) for k, c in keys["get"]["top"])
    share = top.get(hottest, 0) / n
    assert abs(share - p1) <= 4 * math.sqrt(p1 * (1 - p1) / n), (share, p1, keys["get"])
    assert m["extra"]["s3.keys.get.hottest_share"] >= share > 4 / n_obj  # uniform: 1/64


def test_s3_mix_refuses_an_unknown_class_naming_the_allowed_ones(workdir):
    proc = workdir.run("service=s3", "mix={get: 0.5, frobnicate: 0.5}")
    assert proc.returncode == 2, workdir.explain(proc)
    assert "mix.frobnicate" in proc.stderr, proc.stderr
    assert "allowed: get, put, list, delete, head" in proc.stderr, proc.stderr
    assert not workdir.results.exists() or not list(workdir.results.rglob("meta.json"))


def test_s3_write_space_never_lends_one_key_to_two_requests():
    """A mix's puts and deletes: puts take free keys first, deletes the least recently
    written, and a key held by a request is not handed out again until released."""
    from drivers.storage.s3.keys import WriteSpace

    space = WriteSpace(3, "t")
    assert space.claim_delete() == 0 and space.missing_deletes == 1  # nothing written yet
    space.deleted(0)
    assert space.claim_put(None) == 1 and space.claim_put(2) == 2
    assert space.claim_put(2) == 0 and space.redirects == 1  # 2 is held: another key
    assert space.claim_put(None) is None and space.claim_delete() is None  # all held
    for k in (2, 0, 1):
        space.wrote(k)
    assert space.claim_delete() == 2  # the least recently written first
    assert space.claim_put(0) == 0  # live and idle: overwritten
    assert space.claim_delete() == 1 and space.claim_delete() is None  # 0 is held
    space.deleted(2)
    space.deleted(1)
    assert space.claim_put(None) == 2  # a deleted key is written again first
    assert space.live == 0 and space.missing_deletes == 1


def test_s3_mixed_settings_choose_requests_per_s_and_survive_client_processes(tmp_path):
    """A trial with a mix tells the driver through its run settings (the headline becomes
    requests/s), and the driver, sent to client processes by pickling, keeps it and
    regenerates the same object bytes."""
    import pickle

    from benchflow.config import compose_trials
    from drivers.base import RunSettings, TrialContext
    from drivers.storage.s3 import S3Driver

    (mixed,) = compose_trials(["service=s3", "service.op=get", "mix={get: 1}"], False)
    (plain,) = compose_trials(["service=s3", "service.op=get"], False)
    assert S3Driver.headline_for(mixed.service, mixed.run_settings) == "requests"
    assert S3Driver.headline_for(plain.service, plain.run_settings) == "size"
    run = RunSettings(1, 2, 2, 5, None, mix=mixed.run_settings.mix)
    ctx = TrialContext("s" * 32, run, tmp_path, tmp_path)
    drv = S3Driver(mixed.service, ctx)
    copy = pickle.loads(pickle.dumps(drv))
    assert copy.settings.mixed and copy.settings == drv.settings
    assert bytes(next(copy.payload.chunks(123, 4096, 4096))) == bytes(
        next(drv.payload.chunks(123, 4096, 4096))
    )


# -- fileio -------------------------------------------------------------------------
def test_fileio_read_write_mix_with_zipf_offsets(workdir, tmp_path):
    weights = {"read": 0.7, "write": 0.3}
    proc = workdir.run(
        "service=fileio",
        f"service.dir={tmp_path / 'io'}",
        "service.file_size_mb=8",
        "service.block_size_kb=16",
        "service.pattern=rand",
        mix_arg(weights),
        "access.distribution=zipfian",
        "access.theta=1.2",
        *SHORT,
        WARM,
    )
    assert proc.returncode == 0, workdir.explain(proc)
    ((meta, m),) = trials(workdir)
    assert meta["status"] == "finished" and m["errors"]["count"] == 0
    assert m["throughput"]["unit"] == "MiB_per_s"  # both classes move blocks
    assert_binomial(class_counts(m), weights)
    for sl in m["classes"].values():
        assert sl["errors"]["count"] == 0
        assert sl["rates"]["MiB_per_s"] == pytest.approx(sl["rates"]["requests_per_s"] * 16 / 1024)
    assert "reads and writes mixed" in m["notes"]


def test_fileio_draws_blocks_by_the_access_law_and_uniform_as_before(tmp_path):
    """Zipf: the worker's blocks are its KeyChooser stream's. Uniform: the same blocks
    as before the access law existed (the worker's seeded ``random.Random``)."""
    from benchflow.config import ConfigError, compose_trials
    from benchflow.workload.keys import AccessConfig, KeyChooser
    from drivers.base import RunSettings, TrialContext
    from drivers.storage.fileio import FileIODriver, FileIOSettings

    s = FileIOSettings(
        name="fileio",
        driver="fileio",
        dir=str(tmp_path),
        file_size_mb=1,
        block_size_kb=4,
        pattern="rand",
    )
    zipf = AccessConfig(distribution="zipfian", theta=1.1)
    for access in (None, AccessConfig(), zipf):
        ctx = TrialContext("f" * 32, RunSettings(1, 2, 1, 7, None, access), tmp_path, tmp_path)
        drv = FileIODriver(s, ctx)
        drv.setup()
        try:
            state = drv.open_worker(1)
            got = [state[2]() for _ in range(300)]
            drv.close_worker(state)
        finally:
            drv.teardown()
        if access is zipf:
            assert got == KeyChooser(256, zipf, 7, stream=1).take(300).tolist()
        else:
            rng = random.Random(7 * 1_000_003 + 1)
            assert got == [rng.randrange(256) for _ in range(300)]
    with pytest.raises(ConfigError, match=r"only with service\.pattern=rand"):
        compose_trials(["service=fileio", "access.distribution=zipfian"], False)


# -- PostgreSQL ---------------------------------------------------------------------
def _pg_server_mode(workdir, pg, dsn: str) -> list[str]:
    workdir.env["PGPASSWORD"] = pg.password
    return ["service=postgres", "service.mode=server", f"service.dsn='{dsn}'"]


def test_postgres_mix_reports_both_classes_with_zipf_rows(workdir, postgres_server, postgres_dsn):
    """``mix={point_select: 0.9, update: 0.1}``: both classes, each update one row (the
    server's own counter agrees), and updates concentrated on Zipf's hot rows."""
    import psycopg2

    from benchflow.workload.keys import AccessConfig, KeyChooser

    weights, rows, prefix = {"point_select": 0.9, "update": 0.1}, 2000, "bf_mixes_"
    proc = workdir.run(
        *_pg_server_mode(workdir, postgres_server, postgres_dsn),
        f"service.rows={rows}",
        mix_arg(weights),
        "access.distribution=zipfian",
        f"service.table_prefix={prefix}",
        "service.keep_data=true",  # to count the rows the updates touched
        *SHORT,
        "warmup_s=0",  # every update is one the window counted
    )
    assert proc.returncode == 0, workdir.explain(proc)
    ((meta, m),) = trials(workdir)
    assert meta["status"] == "finished" and m["errors"]["count"] == 0
    assert m["throughput"]["unit"] == "requests_per_s"
    counts = class_counts(m)
    assert_binomial(counts, weights)
    x = m["extra"]
    assert x["pg.rows_updated"] == counts["update"] > 0
    assert x["pg.commits"] == m["load"]["completed"] == sum(counts.values())
    conn = psycopg2.connect(postgres_server.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {prefix}accounts WHERE abalance <> 0")
            touched = cur.fetchone()[0]
            cur.execute(
                f"DROP TABLE {prefix}accounts, {prefix}branches, {prefix}tellers,"
                f" {prefix}history, {prefix}inserts"
            )
        conn.commit()
    finally:
        conn.close()
    # distinct rows k updates touch: uniform n(1 - (1 - 1/n)^k); Zipf far fewer
    k = counts["update"]
    uniform = rows * (1 - (1 - 1 / rows) ** k)
    zipf = np.mean(
        [
            len(set(KeyChooser(rows, AccessConfig(distribution="zipfian"), s).take(k).tolist()))
            for s in range(5)
        ]
    )
    assert touched <= (uniform + zipf) / 2, (touched, zipf, uniform, k)


def test_postgres_workload_mix_is_unchanged(workdir, postgres_server, postgres_dsn):
    """``service.workload=mix``: point selects and updates only, updates in the share
    ``1 - read_ratio`` (the server's counters), no classes (the driver draws them)."""
    proc = workdir.run(
        *_pg_server_mode(workdir, postgres_server, postgres_dsn),
        "service.rows=2000",
        "service.workload=mix",
        "service.read_ratio=0.7",
        *SHORT,
        WARM,
    )
    assert proc.returncode == 0, workdir.explain(proc)
    ((meta, m),) = trials(workdir)
    assert meta["status"] == "finished" and m["errors"]["count"] == 0
    assert not m["classes"]
    x, n = m["extra"], m["load"]["completed"]
    assert x["pg.commits"] == n and x["pg.rows_inserted"] == 0
    share = x["pg.rows_updated"] / n
    assert abs(share - 0.3) <= 4 * math.sqrt(0.3 * 0.7 / n), (share, n)


def test_postgres_workload_mix_sends_the_statements_it_always_sent(tmp_path):
    """Statement for statement the sequence of the code before ``mix=`` (kept here as
    the reference): the class draw, then the ids and deltas, from the worker's stream."""
    from drivers.base import RunSettings, TrialContext
    from drivers.storage.postgres import PostgresDriver, PostgresSettings
    from drivers.storage.postgres.connections import _Worker

    class Cursor:
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        def execute(self, sql) -> None:
            self.sent.append(sql)

        def fetchone(self):
            return (0,)

    s = PostgresSettings(
        name="postgres", driver="postgres", workload="mix", rows=5000, read_ratio=0.6
    )
    ctx = TrialContext("p" * 32, RunSettings(1, 1, 1, 3, None), tmp_path, tmp_path)
    drv = PostgresDriver(s, ctx)
    w = _Worker(0, random.Random(3 * 1_000_003))
    w.cur = Cursor()
    for _ in range(500):
        drv._mix(w)
    rng, want, sql = random.Random(3 * 1_000_003), [], drv._sql
    for _ in range(500):  # the pre-mix= workloads._mix, _point_select and _update
        if rng.random() < 0.6:
            want.append(sql["bf_select"] % (int(rng.random() * 5000) + 1))
        else:
            aid = int(rng.random() * 5000) + 1
            want.append(sql["bf_update"] % (int(rng.random() * 10001) - 5000, aid))
    assert w.cur.sent == want
