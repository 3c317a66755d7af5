"""Bad vector-DB settings end with exit code 2 and one clear line naming the key, the
value and what is allowed — before anything starts; a collection that does not fit
the dataset fails the trial with a message that says why."""

from __future__ import annotations

import pytest
from conftest import FAST
from vectordb_support import NO_MLFLOW, SMALL

CASES = [
    (["service.index.metric=L1"], ["service.index.metric", "'L1'", "allowed: L2, IP, cosine"]),
    (["service=milvus", "service.index.type=DiskANN"], ["service.index.type", "Flat, IVF, HNSW"]),
    (["service=chroma", "service.index.type=IVF"], ["service.index.type", "chroma supports: HNSW"]),
    (["service=weaviate", "service.index.type=IVF"], ["weaviate supports: Flat, HNSW"]),
    (["service.index.M=1"], ["service.index.M", "greater than or equal to 2"]),
    (
        ["service.index.type=IVF", "service.index.nlist=16", "service.search.nprobe=32"],
        ["service.search.nprobe", "32", "at most index.nlist (16)"],
    ),
    (["service=milvus", "service.search.ef=5"], ["service.search.ef", "Milvus needs ef >= k"]),
    (["service=milvus", "service.mode=server"], ["service.uri", "needs http://host:19530"]),
    (["service=weaviate", "batch=4"], ["batch", "weaviate searches at most 1 per call"]),
    (["service=weaviate", "service.mode=embedded"], ["service.mode", "allowed: server"]),
    (["service=faiss", "service.mode=server"], ["service.mode", "faiss runs in process"]),
    (["service.filter.selectivity=0"], ["service.filter.selectivity", "greater than 0"]),
    (["service.filter.selectivity=0.0001"], ["service.filter.selectivity", "fewer than k"]),
    (["service=chroma", "service.collection=ab"], ["service.collection", "3 to 512 characters"]),
    (
        ["service=chroma", "service.if_exists=reuse"],
        ["service.if_exists", "needs service.collection"],
    ),
    (
        ["service=chroma", "clients=2", "concurrency=2"],
        ["clients", "embedded runs in this process"],
    ),
    (["service.search.k=5000"], ["service.search.k", "at most dataset.n (3000)"]),
    (
        ["service=faiss", "service.device=cuda", "service.index.type=IVF"],
        ["service.device", "needs faiss-gpu and a GPU", "use device=cpu"],
    ),
]


@pytest.mark.parametrize(("overrides", "words"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_vectordb_config_is_refused_with_a_clear_message(overrides, words):
    """The validation `python -m benchflow` runs before anything starts (in process:
    one Hydra compose per case instead of one Python start)."""
    from benchflow.config import ConfigError, compose_trials

    with pytest.raises(ConfigError) as err:
        compose_trials([*SMALL, *overrides], multirun=False)
    for w in words:
        assert w in str(err.value), str(err.value)


@pytest.mark.parametrize("case", [0, 2, 8, 17], ids=lambda i: " ".join(CASES[i][0]))
def test_bad_vectordb_config_exits_2_through_the_cli(workdir, case):
    overrides, words = CASES[case]
    proc = workdir.run(*SMALL, *overrides)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    msg = proc.stderr.strip().splitlines()[-1]
    for w in words:
        assert w in msg, msg
    assert not workdir.results.exists()


def test_reusing_a_collection_of_another_dimension_is_a_clear_failure(workdir, chroma_server):
    client = chroma_server.client()
    name = "dim_mismatch_16"
    col = client.get_or_create_collection(name, embedding_function=None)
    col.upsert(ids=["0"], embeddings=[[0.0] * 16])
    proc = workdir.run(
        *chroma_server.overrides(),
        *SMALL,
        *FAST,
        NO_MLFLOW,
        f"service.collection={name}",
        "service.if_exists=reuse",
    )
    assert proc.returncode == 1
    (tdir,) = workdir.trial_dirs()
    meta = workdir.meta(tdir)
    assert meta["status"] == "failed" and meta["error"]["class"] == "dimension_mismatch"
    assert "has 16 dimensions, the dataset 32" in meta["error"]["message"]
    assert client.get_collection(name).count() == 1, "a reused collection is never dropped"
    # The same collection with if_exists=fail (the default) is refused, untouched.
    proc = workdir.run(
        *chroma_server.overrides(), *SMALL, *FAST, NO_MLFLOW, f"service.collection={name}"
    )
    failed = [workdir.meta(d) for d in workdir.trial_dirs() if d != tdir]
    assert proc.returncode == 1 and failed[0]["error"]["class"] == "collection_exists"
    assert client.get_collection(name).count() == 1
    client.delete_collection(name)
