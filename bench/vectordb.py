"""Vector databases (issue: FAISS, Chroma, Milvus, Weaviate behind one interface).

1. The harness must not slow the engine down: on ONE FAISS index built once in this
   process, rounds of a raw ``index.search`` loop alternate with rounds of
   benchflow's load engine driving the ``faiss`` driver (the code a trial runs,
   with the monitor sampling), ``batch`` queries per call. Medians of the rounds;
   target: benchflow's QPS >= 90% of the raw loop's. FAISS runs single-threaded
   here (``threads=1``): on a shared 2-core machine OpenMP's spinning thread team
   makes a multi-threaded loop's speed depend on which thread calls it (the raw
   loop in the main thread ran 2-3x slower than the same loop in another thread),
   which would measure OpenMP scheduling, not the harness.
2. Per-query overhead of the harness around a single-query call (batch=1): the
   difference of the mean time per call, in microseconds.
3. A recall–QPS curve from real trials (``python -m benchflow``) over ef, and one
   point each for Chroma (embedded) and milvus-lite (correctness only: its QPS is
   not Milvus's).
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from bench.common import Row, Workspace, check

S = "vectordb"
ORDER = 40
ROUNDS = 10
ROUND_S = 1.0
HNSW = {"type": "HNSW", "metric": "L2", "M": 32, "ef_construction": 80}
DATASET = {"n": 20000, "dim": 64, "clusters": 64, "spread": 0.15, "queries": 1000}


def _driver(batch: int, data_dir: Path, index: dict, dataset: dict):
    from drivers.base import RunSettings, TrialContext
    from drivers.vectordb.faiss import FaissDriver

    settings = FaissDriver.Settings.model_validate(
        {"name": "faiss", "driver": "faiss", "index": index, "search": {"k": 10, "ef": 64}}
        | {"dataset": dataset, "threads": 1}
    )
    run = RunSettings(batch=batch, concurrency=1, clients=1, seed=0, rate=None)
    tdir = Path(tempfile.mkdtemp(prefix="bench-vectordb-"))
    (tdir / "logs").mkdir()
    driver = FaissDriver(settings, TrialContext(uuid.uuid4().hex, run, tdir, data_dir))
    driver.setup()
    return driver


def _raw_qps(index, queries: np.ndarray, batch: int, k: int, seconds: float) -> float:
    """A plain loop over ``index.search``: what a user of FAISS would write."""
    batches = [queries[i : i + batch] for i in range(0, len(queries) - batch + 1, batch)]
    calls, t0 = 0, time.perf_counter()
    end = t0 + seconds
    while True:
        index.search(batches[calls % len(batches)], k)
        calls += 1
        if time.perf_counter() >= end:
            break
    return calls * batch / (time.perf_counter() - t0)


def _benchflow_qps(driver, seconds: float) -> float:
    """benchflow's load engine driving the driver, as in a trial (monitor included)."""
    from benchflow.load.engine import Engine, Phase
    from benchflow.monitor import Monitor

    monitor = Monitor(1.0, gpu=False).start()
    try:
        (rec,) = Engine(driver, 1).run([Phase("measure", concurrency=1, duration_s=seconds)])
    finally:
        monitor.stop()
    return rec.size_ok / rec.elapsed_s()


def _same_index(
    batch: int, data_dir: Path, index: dict = HNSW, dataset: dict = DATASET
) -> tuple[list[float], list[float]]:
    """QPS of (raw loop, benchflow) in interleaved rounds on one index (paired by round,
    so a busy moment of a shared machine hits both sides of a pair alike)."""
    driver = _driver(batch, data_dir, index, dataset)
    try:
        raw, bf = [], []
        for i in range(ROUNDS):
            if i % 2:  # ABBA order: neither side always goes first
                bf.append(_benchflow_qps(driver, ROUND_S))
                raw.append(_raw_qps(driver.index, driver.queries, batch, 10, ROUND_S))
            else:
                raw.append(_raw_qps(driver.index, driver.queries, batch, 10, ROUND_S))
                bf.append(_benchflow_qps(driver, ROUND_S))
    finally:
        driver.teardown()
    return raw, bf


def rows(ws: Workspace) -> list[Row]:
    data_dir = ws.dir / "data"
    how = (
        "python -m bench vectordb  (one HNSW index, M=32 efC=80 ef=64, n=20000 d=64, k=10, "
        "threads=1)"
    )
    raw, bf = _same_index(100, data_dir)
    ratio = statistics.median(b / r * 100 for r, b in zip(raw, bf, strict=True))
    out = [
        Row(S, "faiss raw search loop, batch=100 (median of 10 x 1 s)",
            statistics.median(raw), "queries/s", how=how),
        Row(S, "  benchflow on the same index, batch=100",
            statistics.median(bf), "queries/s", how=how),
        Row(S, "  benchflow / raw (median of the rounds' ratios)",
            ratio, "%", ">= 90", check(ratio, ">=", 90), how),
    ]  # fmt: skip
    # A cheap call (exact search over 2,000 vectors) so the harness's own time shows.
    flat = {"type": "Flat", "metric": "L2"}
    tiny = DATASET | {"n": 2000, "clusters": 16}
    raw1, bf1 = _same_index(1, data_dir, flat, tiny)
    overhead = statistics.median(1e6 / b - 1e6 / r for r, b in zip(raw1, bf1, strict=True))
    how1 = "python -m bench vectordb  (Flat index, n=2000 d=64, k=10, batch=1, threads=1)"
    out += [
        Row(S, "faiss single-query call (Flat, n=2000), raw loop",
            1e6 / statistics.median(raw1), "us/call", how=how1),
        Row(S, "  harness overhead per single-query call (median of paired rounds)",
            overhead, "us", how=how1),
    ]  # fmt: skip

    small = [f"service.dataset.{k}={v}" for k, v in DATASET.items()]
    for ef in (8, 32, 128):
        o = ["service=faiss", "service.threads=1", f"service.search.ef={ef}", "batch=10", *small]
        o += ["duration_s=3", "warmup_s=0.5"]
        m, _, _ = ws.trial(*o, f"data_dir={data_dir}")
        recall = m["quality"]["recall_at_10"]
        out.append(
            Row(
                S,
                f"recall-QPS curve, faiss HNSW ef={ef}, batch=10: QPS (recall@10 {recall:.3f})",
                m["throughput"]["value"],
                "queries/s",
                how=ws.how(*o),
            )
        )
    for service, note in (("chroma", "embedded"), ("milvus", "milvus-lite, correctness only")):
        o = [f"service={service}", "service.search.ef=64", "batch=10", *small]
        o += ["duration_s=3", "warmup_s=0.5"]
        m, _, _ = ws.trial(*o, f"data_dir={data_dir}")
        ingest = m["phases"]["ingest"]["vectors_per_s"]
        out += [
            Row(
                S,
                f"{service} ({note}) HNSW ef=64, batch=10: QPS "
                f"(recall@10 {m['quality']['recall_at_10']:.3f})",
                m["throughput"]["value"],
                "queries/s",
                how=ws.how(*o),
            ),
            Row(S, f"  {service} ingest", ingest, "vectors/s", how=ws.how(*o)),
        ]
    return out
