"""The harness must not change results: for every engine, on the same small generated
dataset, the recall@k benchflow measures equals the recall of the raw library call
with the same parameters (and the exact neighbours are computed independently)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import FAST
from vectordb_support import (
    DATA,
    NO_MLFLOW,
    SMALL,
    K,
    attr,
    brute_force,
    in_process,
    recall,
    threshold,
    vectors,
)


def trial_recalls(workdir, *overrides, multirun=False) -> list[tuple[dict, dict]]:
    args = ["-m"] if multirun else []
    proc = workdir.run(*args, *overrides, *SMALL, *FAST, "progress=off", timeout=600)
    assert proc.returncode == 0, workdir.explain(proc)
    out = []
    for d in workdir.trial_dirs():
        m = workdir.metrics(d)
        out.append((m, _effective(d)))
    return out


def _effective(trial_dir) -> dict:
    import yaml

    return yaml.safe_load((trial_dir / "effective_config.yaml").read_text())["service"]


# -- FAISS ------------------------------------------------------------------------------
def raw_faiss(
    index_type,
    metric,
    *,
    M=32,
    efc=80,
    ef=64,
    nlist=256,
    nprobe=16,
    ingest=10000,
    batch=1,
    params=None,
):
    import faiss

    faiss.omp_set_num_threads(1)
    base, queries = vectors()
    if metric == "cosine":
        faiss.normalize_L2(base)
        faiss.normalize_L2(queries)
    d, mt = base.shape[1], faiss.METRIC_L2 if metric == "L2" else faiss.METRIC_INNER_PRODUCT
    if index_type == "HNSW":
        index = faiss.IndexHNSWFlat(d, M, mt)
        index.hnsw.efConstruction = efc
    elif index_type == "IVF":
        index = faiss.IndexIVFFlat(faiss.IndexFlat(d, mt), d, nlist, mt)
        index.train(base)
    else:
        index = faiss.IndexFlat(d, mt)
    for i in range(0, len(base), ingest):
        index.add(base[i : i + ingest])
    if index_type == "HNSW":
        index.hnsw.efSearch = ef
    elif index_type == "IVF":
        index.nprobe = nprobe
    found = [
        index.search(queries[i : i + batch], K, params=params)[1]
        for i in range(0, len(queries), batch)
    ]
    return np.concatenate(found)


def test_faiss_sweep_recall_equals_raw_faiss_and_each_trial_logs_recall_and_qps(workdir):
    """A sweep over ef gives recall–QPS points; each point's recall is raw FAISS's."""
    results = trial_recalls(
        workdir,
        "service=faiss",
        "service.threads=1",
        "service.index.metric=cosine",
        "service.index.M=8",
        "service.index.ef_construction=16",
        "service.ingest_batch=1000",
        "service.search.ef=4,32",
        "batch=10",
        multirun=True,
    )
    assert len(results) == 2
    truth = brute_force("cosine")
    by_ef = {}
    for m, svc in results:
        ef = svc["search"]["ef"]
        raw = recall(raw_faiss("HNSW", "cosine", M=8, efc=16, ef=ef, ingest=1000, batch=10), truth)
        assert m["quality"][f"recall_at_{K}"] == pytest.approx(raw, abs=1e-12), ef
        assert m["throughput"]["unit"] == "queries_per_s" and m["throughput"]["value"] > 0
        assert m["phases"]["ingest"]["vectors"] == DATA["n"]
        assert m["extra"]["memory.rss_delta_mb"] >= 0
        by_ef[ef] = raw
    assert by_ef[4] < 1.0, "the low-ef point must miss neighbours, or the comparison is weak"
    assert by_ef[4] < by_ef[32]
    runs = workdir.runs()
    children = runs[runs["tags.benchflow.role"] != "sweep"]
    assert children[f"metrics.quality.recall_at_{K}"].notna().all()
    assert children["metrics.throughput"].notna().all()
    assert set(children["params.service.search.ef"]) == {"4", "32"}


@pytest.mark.parametrize(
    ("index", "metric", "selectivity"),
    [("IVF", "L2", None), ("Flat", "IP", None), ("HNSW", "L2", 0.1), ("IVF", "cosine", 0.3)],
)
def test_faiss_in_process_recall_equals_raw_faiss(tmp_path, data_dir, index, metric, selectivity):
    import faiss

    from drivers.vectordb.faiss import FaissDriver

    service = {
        "threads": 1,
        "index": {"type": index, "metric": metric, "nlist": 32, "M": 8, "ef_construction": 16},
        "search": {"k": K, "nprobe": 2, "ef": 8},
        "filter": {"selectivity": selectivity},
        "ingest_batch": 1000,
    }
    driver = in_process(FaissDriver, service, tmp_path, data_dir, batch=20)
    driver.setup()
    try:
        got = driver.quality()[f"recall_at_{K}"]
    finally:
        driver.teardown()
    params, allowed = None, None
    if selectivity is not None:
        allowed = np.flatnonzero(attr() < threshold(selectivity))
        sel = faiss.IDSelectorBatch(allowed.astype(np.int64))
        params = {"HNSW": faiss.SearchParametersHNSW, "IVF": faiss.SearchParametersIVF}.get(
            index, faiss.SearchParameters
        )()
        params.sel = sel
        if index == "HNSW":
            params.efSearch = 8
        if index == "IVF":
            params.nprobe = 2
    found = raw_faiss(
        index, metric, M=8, efc=16, ef=8, nlist=32, nprobe=2, ingest=1000, batch=20, params=params
    )
    truth = brute_force(metric, allowed=allowed)
    if allowed is not None:
        assert np.isin(found[found >= 0], allowed).all()
    assert got == pytest.approx(recall(found, truth), abs=1e-12)
    assert got < 1.0 or index == "Flat"


# -- Chroma -------------------------------------------------------------------------------
def test_chroma_server_recall_equals_raw_chroma_on_the_same_collection(workdir, chroma_server):
    """Chroma builds its HNSW graph nondeterministically (two builds of the same data
    differ), so the raw queries run against the collection the trial built and kept;
    its configuration is checked to be the one asked for."""
    name = "recall_check_l2"
    ((m, _),) = trial_recalls(
        workdir,
        *chroma_server.overrides(),
        NO_MLFLOW,
        f"service.collection={name}",
        "service.keep=true",
        "service.if_exists=drop",
        "service.index.M=8",
        "service.index.ef_construction=16",
        "service.search.ef=4",
        "batch=10",
    )
    client = chroma_server.client()
    col = client.get_collection(name)
    hnsw = col.configuration["hnsw"]
    assert (hnsw["space"], hnsw["max_neighbors"], hnsw["ef_construction"], hnsw["ef_search"]) == (
        "l2",
        8,
        16,
        4,
    )
    assert col.count() == DATA["n"]
    _, queries = vectors()
    ids = []
    for i in range(0, len(queries), 10):
        res = col.query(query_embeddings=queries[i : i + 10], n_results=K, include=[])
        ids += [[int(x) for x in row] for row in res["ids"]]
    raw = recall(np.array(ids), brute_force("L2"))
    assert m["quality"][f"recall_at_{K}"] == pytest.approx(raw, abs=1e-12)
    assert raw < 1.0
    client.delete_collection(name)


def test_chroma_embedded_filtered_recall_equals_raw_chroma(tmp_path, data_dir):
    from drivers.vectordb.chroma import ChromaDriver

    service = {
        "index": {"type": "HNSW", "metric": "cosine", "M": 8, "ef_construction": 16},
        "search": {"k": K, "ef": 4},
        "filter": {"selectivity": 0.5},
    }
    driver = in_process(ChromaDriver, service, tmp_path, data_dir, batch=5)
    driver.setup()
    try:
        got = driver.quality()[f"recall_at_{K}"]
        t = threshold(0.5)
        _, queries = vectors()
        res = driver.collection.query(
            query_embeddings=queries, n_results=K, where={"attr": {"$lt": t}}, include=[]
        )
        found = np.array([[int(x) for x in row] for row in res["ids"]])
    finally:
        driver.teardown()
    allowed = np.flatnonzero(attr() < t)
    assert np.isin(found, allowed).all()
    assert got == pytest.approx(recall(found, brute_force("cosine", allowed=allowed)), abs=1e-12)
    assert not os.path.exists(driver.path), "the temporary store is removed"


# -- Milvus -------------------------------------------------------------------------------
def raw_milvus(
    uri,
    name,
    index_type,
    metric,
    index_params,
    search_params,
    *,
    ingest=1000,
    batch=1,
    expr="",
    build=True,
):
    from pymilvus import DataType, MilvusClient

    c = MilvusClient(uri=uri)
    if not build:
        c.load_collection(name)
    base, queries = vectors()
    a = attr()
    if build:
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=base.shape[1])
        schema.add_field("attr", DataType.INT64)
        ip = c.prepare_index_params()
        ip.add_index(
            field_name="vec", index_type=index_type, metric_type=metric, params=index_params
        )
        c.create_collection(name, schema=schema, index_params=ip)
        for i in range(0, len(base), ingest):
            c.insert(
                name,
                [
                    {"id": j, "vec": base[j], "attr": int(a[j])}
                    for j in range(i, min(i + ingest, len(base)))
                ],
            )
        c.flush(name)
        c.load_collection(name)
    found = []
    for i in range(0, len(queries), batch):
        res = c.search(
            name,
            data=queries[i : i + batch],
            limit=K,
            filter=expr,
            search_params={"metric_type": metric, "params": search_params},
        )
        found += [[h["id"] for h in hits] + [-1] * (K - len(hits)) for hits in res]
    c.close()
    return np.array(found)


def test_milvus_embedded_recall_equals_raw_milvus_lite_on_the_same_collection(workdir, tmp_path):
    """milvus-lite builds HNSW with FAISS on several threads, so two builds of the same
    data differ slightly; the raw queries run on the collection the trial built and
    kept in ``service.path``."""
    store = tmp_path / "store"
    ((m, _),) = trial_recalls(
        workdir,
        "service=milvus",
        NO_MLFLOW,
        f"service.path={store}",
        "service.collection=recall_check_ip",
        "service.keep=true",
        "service.index.metric=IP",
        "service.index.M=4",
        "service.index.ef_construction=8",
        "service.search.ef=10",
        "batch=4",
    )
    found = raw_milvus(
        str(store / "milvus.db"),
        "recall_check_ip",
        "HNSW",
        "IP",
        {},
        {"ef": 10},
        batch=4,
        build=False,
    )
    raw = recall(found, brute_force("IP"))
    assert m["quality"][f"recall_at_{K}"] == pytest.approx(raw, abs=1e-12)
    assert raw < 1.0
    assert m["phases"]["build"]["seconds"] > 0 and m["extra"]["index.ntotal"] == DATA["n"]
    assert m["extra"]["memory.rss_delta_mb"] > 0


def test_milvus_server_by_uri_filtered_ivf_recall_equals_raw_milvus(workdir, milvus_uri):
    name = "recall_check_ivf"
    ((m, _),) = trial_recalls(
        workdir,
        "service=milvus",
        NO_MLFLOW,
        "service.mode=server",
        f"service.uri={milvus_uri}",
        f"service.collection={name}",
        "service.keep=true",
        "service.if_exists=drop",
        "service.index.type=IVF",
        "service.index.nlist=32",
        "service.search.nprobe=2",
        "service.filter.selectivity=0.3",
        "batch=8",
    )
    t = threshold(0.3)
    found = raw_milvus(
        milvus_uri,
        name,
        "IVF_FLAT",
        "L2",
        {},
        {"nprobe": 2},
        batch=8,
        expr=f"attr < {t}",
        build=False,
    )
    allowed = np.flatnonzero(attr() < t)
    raw = recall(found, brute_force("L2", allowed=allowed))
    assert m["quality"][f"recall_at_{K}"] == pytest.approx(raw, abs=1e-12)
    assert np.isin(found[found >= 0], allowed).all()
    assert m["extra"]["filter.selectivity"] == pytest.approx(len(allowed) / DATA["n"])
    assert "memory not measured" in (m["notes"] or ""), "a remote server's RSS is not ours"
    from pymilvus import MilvusClient

    MilvusClient(uri=milvus_uri).drop_collection(name)


def test_chroma_reused_collection_is_searched_at_the_new_ef(tmp_path, data_dir):
    """A sweep over ef builds once (if_exists=reuse, keep=true): the second point
    reuses the collection, which Chroma must reload to apply the new ef_search."""
    from drivers.vectordb.chroma import ChromaDriver

    store = str(tmp_path / "store")
    common = {
        "path": store,
        "collection": "sweep_once",
        "if_exists": "reuse",
        "keep": True,
        "index": {"type": "HNSW", "M": 4, "ef_construction": 8},
    }
    got, phases = {}, {}
    for ef in (4, 64):
        d = in_process(ChromaDriver, {**common, "search": {"k": K, "ef": ef}}, tmp_path / str(ef),
                       data_dir, batch=10)  # fmt: skip
        d.setup()
        try:
            got[ef], phases[ef] = d.quality()[f"recall_at_{K}"], set(d.trial.phases)
            _, queries = vectors()
            res = d.collection.query(query_embeddings=queries, n_results=K, include=[])
            raw = recall(np.array([[int(x) for x in row] for row in res["ids"]]), brute_force("L2"))
            assert d.collection.configuration["hnsw"]["ef_search"] == ef
        finally:
            d.teardown()
        assert got[ef] == pytest.approx(raw, abs=1e-12), ef
    assert phases[4] == {"dataset", "ingest"} and phases[64] == {"dataset"}
    assert got[4] < got[64]
