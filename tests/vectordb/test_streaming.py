"""Search during ingest (VectorDBBench's streaming case) on real engines.

A trial ingests half the dataset in setup, then searches and inserts at their
shares of an open-loop rate. Each test recomputes the live-set recall itself, by
brute force with numpy, from the searches the driver attaches
(``custom/stream_searches.npz``: query index, vectors acknowledged when it was
sent, ids returned), and compares it with the reported figure.
"""

from __future__ import annotations

import numpy as np
import pytest
from vectordb_support import DATA, NO_MLFLOW, SMALL, K, in_process, vectors

from drivers.base import DriverError

# Low HNSW settings so the recall is below 1: equality with the recomputed figure
# is then a real comparison.
LOW_RECALL = ["service.index.M=8", "service.index.ef_construction=16", "service.search.ef=10"]
INSERT_BATCH = 10


def stream_trial(workdir, service: str, *extra: str, rate: int = 100) -> dict:
    proc = workdir.run(
        f"service={service}",
        NO_MLFLOW,
        *SMALL,
        "service.stream.initial_fraction=0.5",
        f"service.stream.insert_batch={INSERT_BATCH}",
        "service.stream.freshness_every=5",
        "mix={search: 0.8, insert: 0.2}",
        f"rate={rate}",
        "duration_s=2",
        "warmup_s=0.2",
        "monitor.interval_s=0.5",
        "progress=off",
        *extra,
    )
    assert proc.returncode == 0, workdir.explain(proc)
    (tdir,) = workdir.trial_dirs()
    m = workdir.metrics(tdir)
    m["_searches"] = dict(np.load(tdir / "custom" / "stream_searches.npz"))
    return m


def recompute_live_recall(searches: dict, k: int = K) -> np.ndarray:
    """The live-set rule, independently: exact top-k over base[:n_at_send] (float64,
    direct differences); a returned id >= n_at_send is not judged; recall = hits /
    (k - unjudged)."""
    base, queries = (x.astype(np.float64) for x in vectors())
    assert len(searches["failed"]) == 0, "these trials have no failed inserts"
    out = []
    for q, n, ids in zip(searches["query"], searches["n_at_send"], searches["ids"], strict=True):
        d = ((base[:n] - queries[q]) ** 2).sum(1)
        truth = set(np.argsort(d, kind="stable")[:k].tolist())
        ids = ids[ids >= 0]
        judged = ids[ids < n]
        out.append(len(truth & set(judged.tolist())) / (k - (len(ids) - len(judged))))
    return np.array(out)


def check_stream(m: dict, timeouts_allowed: bool = False) -> None:
    x, q, s = m["extra"], m["quality"], m["_searches"]
    n0 = DATA["n"] // 2
    assert x["stream.initial_vectors"] == n0 == x["index.ntotal"]
    inserted = m["classes"]["insert"]["latency_ms"]["count"]
    assert inserted > 0 and m["classes"]["insert"]["errors"]["count"] == 0
    assert m["classes"]["search"]["latency_ms"]["count"] > inserted
    # warm-up inserts count too: at least the measured ones, whole batches
    assert x["stream.inserted_vectors"] >= inserted * INSERT_BATCH
    assert x["stream.inserted_vectors"] % INSERT_BATCH == 0
    live = n0 + x["stream.inserted_vectors"]
    assert x["stream.live_vectors_end"] == live == x["stream.ntotal_end"], "the count grew"
    assert m["throughput"]["unit"] == "requests_per_s", "a mix with inserts headlines calls/s"
    # the sample: every measured search (fewer than recall_samples), live set growing
    searches = m["classes"]["search"]["latency_ms"]["count"]
    assert len(s["query"]) == x["stream.recall_queries"] == searches
    assert s["n_at_send"].min() >= n0 and s["n_at_send"].max() > n0
    per_query = recompute_live_recall(s)
    key = f"stream_recall_at_{K}"
    assert 0 < q[key] <= 1
    assert q[key] == pytest.approx(per_query.mean(), abs=1e-12)
    assert q[f"{key}_p10"] == pytest.approx(np.percentile(per_query, 10), abs=1e-12)
    assert q[f"{key}_p50"] == pytest.approx(np.percentile(per_query, 50), abs=1e-12)
    assert q[f"recall_at_{K}_eps"] >= q[f"recall_at_{K}"] > 0
    assert q[f"recall_at_{K}_p10"] <= q[f"recall_at_{K}_p50"] <= 1
    # freshness
    assert x["freshness.samples"] > 0
    if not timeouts_allowed:
        assert x["freshness.timeouts"] == 0
        assert 0 <= x["freshness_ms.p50"] <= x["freshness_ms.p90"] <= x["freshness_ms.max"]


def test_faiss_search_during_ingest(workdir):
    m = stream_trial(workdir, "faiss", *LOW_RECALL, rate=200)
    check_stream(m)
    assert m["quality"][f"stream_recall_at_{K}"] < 1, "HNSW at ef=10 misses some"


def test_chroma_search_during_ingest(workdir):
    check_stream(stream_trial(workdir, "chroma", *LOW_RECALL))


def test_milvus_lite_search_during_ingest(workdir):
    # milvus-lite: correctness only; its visibility rules are not Milvus's (docs)
    check_stream(stream_trial(workdir, "milvus", *LOW_RECALL, rate=60), timeouts_allowed=True)


# -- identity, refusals, the cursor (no engine) ----------------------------------------
def test_stream_settings_at_their_defaults_leave_the_config_identity_alone():
    from benchflow.config.compose import compose_trials

    for svc in ("faiss", "chroma", "milvus"):
        resolved = compose_trials([f"service={svc}"], False)[0].resolved["service"]
        assert "stream" not in resolved and "recall_epsilon" not in resolved["search"]
    on = compose_trials(
        [
            "service=faiss",
            "service.stream.initial_fraction=0.5",
            "service.search.recall_epsilon=0.01",
        ],
        False,
    )[0].resolved["service"]
    assert on["stream"]["initial_fraction"] == 0.5 and on["search"]["recall_epsilon"] == 0.01


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["mix={search: 0.8, insert: 0.2}"], ["mix.insert", "initial_fraction"]),
        (["mix={search: 0.8, delete: 0.2}"], ["mix.delete", "search, insert"]),
        (
            [
                "service=chroma",
                "service.mode=server",
                "clients=2",
                "concurrency=2",
                "service.stream.initial_fraction=0.5",
            ],
            ["clients", "clients=1"],
        ),
        (
            ["service.stream.initial_fraction=0.001"],
            ["service.stream.initial_fraction", "fewer than k"],
        ),
    ],
)
def test_stream_settings_it_cannot_honour_are_refused(overrides, words):
    from benchflow.config.compose import compose_trials
    from benchflow.config.schema import ConfigError

    svc = [] if any(o.startswith("service=") for o in overrides) else ["service=faiss"]
    with pytest.raises(ConfigError) as err:
        compose_trials([*svc, *overrides, *SMALL], False)
    for w in words:
        assert w in str(err.value)


def test_cursor_tracks_the_acknowledged_prefix_across_out_of_order_acks_and_failures():
    from drivers.vectordb.stream import Cursor

    c = Cursor(100, 130)
    a, b, d = c.claim(10), c.claim(10), c.claim(15)
    assert (a, b, d) == ((100, 110), (110, 120), (120, 130)), "the last claim is cut short"
    c.ack(*b)
    assert c.n_ack == 100, "110..119 is done but 100..109 is not"
    c.fail(*a)
    assert c.n_ack == 120 and c.failed == [(100, 110)]
    c.ack(*d)
    assert c.n_ack == 130
    with pytest.raises(DriverError) as err:
        c.claim(1)
    assert err.value.error_class == "dataset_exhausted"


def test_faiss_concurrent_live_inserts_keep_the_datasets_ids(tmp_path, data_dir):
    """FAISS numbers vectors in arrival order: concurrent inserts must still give row
    i the id i, and an exhausted dataset fails the insert with dataset_exhausted."""
    import threading

    from drivers.vectordb.faiss import FaissDriver

    svc = {"index": {"type": "Flat"}, "stream": {"initial_fraction": 0.5, "insert_batch": 7}}
    d = in_process(FaissDriver, svc, tmp_path, data_dir)
    d.setup()
    errors: list[str] = []

    def inserter() -> None:
        while True:
            try:
                d._insert_live()
            except DriverError as exc:
                errors.append(exc.error_class)
                return

    threads = [threading.Thread(target=inserter) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(50):  # searches in between take the read lock
        d.search(None, d.queries[:5], K)
    for t in threads:
        t.join(30)
    assert errors == ["dataset_exhausted"] * 4
    assert d.index.ntotal == DATA["n"] == d.cursor.n_ack
    base, _ = vectors()
    np.testing.assert_array_equal(d.index.reconstruct_n(0, DATA["n"]), base)
    d.teardown()


def test_recall_rules_on_hand_made_cases():
    """Ties cost no recall counted by distance; ids not live at send are not judged."""
    from drivers.vectordb.stream import live_recall, recall_by_distance

    base = np.array([[1.0], [-1.0], [3.0]], np.float32)  # query 0: ids 0 and 1 tie
    queries = np.zeros((1, 1), np.float32)
    truth = np.array([[0]])
    for found, want in (([1], 1.0), ([0], 1.0), ([2], 0.0)):
        got = recall_by_distance(base, queries, np.array([found]), truth, "L2", 1, 1e-3)
        assert got[0] == want, found
    # k=4, live set base[:10]: id 12 was in flight (unjudged), 3 and 5 hits, 7 a miss
    truth = np.array([[3, 5, 1, 2]])
    got = live_recall(np.array([[3, 12, 5, 7]]), truth, np.array([10]), 4, [])
    assert got[0] == pytest.approx(2 / 3)
    # a failed insert's ids are not judged either
    got = live_recall(np.array([[3, 12, 5, 7]]), truth, np.array([10]), 4, [(6, 8)])
    assert got[0] == pytest.approx(2 / 2)
