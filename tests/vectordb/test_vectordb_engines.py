"""Engine modes end to end: Chroma launched by benchflow (its process measured, load
from two client processes), and Weaviate — whose tests need a server.

No Weaviate server can run on these machines (its embedded mode downloads a binary;
no package ships one), so the Weaviate trials run only when ``WEAVIATE_URL`` (and
``WEAVIATE_GRPC_PORT`` when not 50051) point at one: that skip is the one allowed
in CI. Its index configuration is still built and validated by the real client
library without a server.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import FAST
from vectordb_support import DATA, NO_MLFLOW, SMALL, K, brute_force, recall, vectors


def test_chroma_launched_server_is_measured_and_serves_two_client_processes(workdir):
    proc = workdir.run(
        "service=chroma",
        "service.mode=server",
        NO_MLFLOW,
        "clients=2",
        "concurrency=2",
        "batch=5",
        *SMALL,
        "duration_s=2",
        "warmup_s=0.5",
        "progress=off",
    )
    assert proc.returncode == 0, workdir.explain(proc)
    (tdir,) = workdir.trial_dirs()
    m = workdir.metrics(tdir)
    assert m["validity"]["valid"] is True, m["validity"]
    assert m["load"]["clients"] == 2
    assert m["resource"]["scope"] == "sut_process" and m["resource"]["ram_mb"] > 0
    x = m["extra"]
    assert x["memory.rss_after_mb"] > x["memory.rss_before_mb"] > 0
    assert x["index.disk_mb"] > 0 and x["index.ntotal"] == DATA["n"]
    assert 0 < m["quality"][f"recall_at_{K}"] <= 1
    assert m["rates"]["queries_per_s"] == pytest.approx(5 * m["rates"]["ok_requests_per_s"])
    assert (tdir / "logs" / "chroma.err").exists(), "the server's output is in the trial's logs"


def test_weaviate_index_config_is_built_by_the_client_library_without_a_server(tmp_path, data_dir):
    """No server: checks only that the v4 client accepts the configuration we send."""
    from vectordb_support import in_process

    from drivers.vectordb.weaviate import WeaviateDriver

    for metric, distance in (("L2", "l2-squared"), ("IP", "dot"), ("cosine", "cosine")):
        svc = {"index": {"type": "HNSW", "metric": metric, "M": 12, "ef_construction": 40}}
        d = in_process(WeaviateDriver, {**svc, "search": {"ef": 24}}, tmp_path, data_dir)
        cfg = d.vector_config()._to_dict()
        assert cfg["vectorIndexType"] == "hnsw"
        index = cfg["vectorIndexConfig"]
        assert (index["distance"], index["maxConnections"], index["efConstruction"]) == (
            distance,
            12,
            40,
        )
        assert index["ef"] == 24
    d = in_process(WeaviateDriver, {"index": {"type": "Flat"}}, tmp_path, data_dir)
    assert d.vector_config()._to_dict()["vectorIndexType"] == "flat"
    assert d.collection_name[0].isupper(), "Weaviate class names start upper-case"


WEAVIATE_URL = os.environ.get("WEAVIATE_URL")
needs_weaviate = pytest.mark.skipif(
    not WEAVIATE_URL,
    reason="no Weaviate server can run here; set WEAVIATE_URL to run (the one allowed skip)",
)


@needs_weaviate
@pytest.mark.parametrize(("index", "metric"), [("HNSW", "L2"), ("Flat", "cosine")])
def test_weaviate_recall_equals_raw_weaviate_on_the_same_collection(workdir, index, metric):
    import weaviate

    name = f"Bf_recall_{index}_{metric}"
    proc = workdir.run(
        "service=weaviate",
        f"service.collection={name}",
        "service.keep=true",
        "service.if_exists=drop",
        f"service.index.type={index}",
        f"service.index.metric={metric}",
        "service.index.M=8",
        "service.index.ef_construction=16",
        "service.search.ef=4",
        "service.filter.selectivity=0.5",
        *SMALL,
        *FAST,
        "progress=off",
    )
    assert proc.returncode == 0, workdir.explain(proc)
    (tdir,) = workdir.trial_dirs()
    m = workdir.metrics(tdir)
    from urllib.parse import urlsplit

    from vectordb_support import attr, threshold
    from weaviate.classes.query import Filter

    url = urlsplit(WEAVIATE_URL)
    client = weaviate.connect_to_custom(
        http_host=url.hostname, http_port=url.port or 8080, http_secure=url.scheme == "https",
        grpc_host=url.hostname, grpc_port=int(os.environ.get("WEAVIATE_GRPC_PORT", "50051")),
        grpc_secure=url.scheme == "https",
    )  # fmt: skip
    try:
        col = client.collections.get(name)
        _, queries = vectors()
        t = threshold(0.5)
        found = []
        for q in queries:
            res = col.query.near_vector(
                near_vector=q.tolist(), limit=K, target_vector="vec",
                filters=Filter.by_property("attr").less_than(t),
            )  # fmt: skip
            ids = [o.uuid.int for o in res.objects]
            found.append(ids + [-1] * (K - len(ids)))
        client.collections.delete(name)
    finally:
        client.close()
    allowed = np.flatnonzero(attr() < t)
    raw = recall(np.array(found), brute_force(metric, allowed=allowed))
    assert m["quality"][f"recall_at_{K}"] == pytest.approx(raw, abs=1e-12)
    assert m["extra"]["index.ntotal"] == DATA["n"]


def test_faiss_threads_setting_reaches_the_load_engines_worker_threads(tmp_path, data_dir):
    """OpenMP's thread count belongs to the calling thread; the load engine's workers
    must search with service.threads, not with the process default."""
    import threading

    import faiss
    from vectordb_support import in_process

    from drivers.vectordb.faiss import FaissDriver

    d = in_process(FaissDriver, {"threads": 1, "index": {"type": "Flat"}}, tmp_path, data_dir)
    d.setup()
    seen = []

    def worker():
        d.search(None, d.queries[:1], K)
        seen.append(faiss.omp_get_max_threads())

    try:
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    finally:
        d.teardown()
    assert seen == [1]
