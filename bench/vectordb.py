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
ROUNDS = 8
ROUND_S = 2.0
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


def _raw_loop(index, queries: np.ndarray, batch: int, k: int, seconds: float) -> tuple:
    """A plain loop over ``index.search``: what a user of FAISS would write.
    Returns (queries searched, wall seconds, process CPU seconds)."""
    batches = [queries[i : i + batch] for i in range(0, len(queries) - batch + 1, batch)]
    calls, t0, c0 = 0, time.perf_counter(), time.process_time()
    end = t0 + seconds
    while True:
        index.search(batches[calls % len(batches)], k)
        calls += 1
        if time.perf_counter() >= end:
            break
    return calls * batch, time.perf_counter() - t0, time.process_time() - c0


def _benchflow_loop(driver, seconds: float) -> tuple:
    """benchflow's load engine driving the driver, as in a trial (monitor included).
    Returns (queries searched, wall seconds of the window, process CPU seconds)."""
    from benchflow.load.engine import Engine, Phase
    from benchflow.results.monitor import Monitor

    c0 = time.process_time()
    monitor = Monitor(1.0, gpu=False).start()
    try:
        (rec,) = Engine(driver, 1).run([Phase("measure", concurrency=1, duration_s=seconds)])
    finally:
        monitor.stop()
    return rec.size_ok, rec.elapsed_s(), time.process_time() - c0


def _same_index(
    batch: int, data_dir: Path, index: dict = HNSW, dataset: dict = DATASET
) -> tuple[list[tuple], list[tuple]]:
    """(raw loop, benchflow) rounds, interleaved on one index (paired by round, so a
    busy moment of a shared machine hits both sides of a pair alike)."""
    driver = _driver(batch, data_dir, index, dataset)
    try:
        raw, bf = [], []
        for i in range(ROUNDS):
            if i % 2:  # ABBA order: neither side always goes first
                bf.append(_benchflow_loop(driver, ROUND_S))
                raw.append(_raw_loop(driver.index, driver.queries, batch, 10, ROUND_S))
            else:
                raw.append(_raw_loop(driver.index, driver.queries, batch, 10, ROUND_S))
                bf.append(_benchflow_loop(driver, ROUND_S))
    finally:
        driver.teardown()
    return raw, bf


def _paired(raw: list[tuple], bf: list[tuple], f) -> float:
    return statistics.median(f(r, b) for r, b in zip(raw, bf, strict=True))


def rows(ws: Workspace) -> list[Row]:
    data_dir = ws.dir / "data"
    how = (
        "python -m bench vectordb  (one HNSW index, M=32 efC=80 ef=64, n=20000 d=64, k=10, "
        "threads=1)"
    )
    raw, bf = _same_index(100, data_dir)
    ratio = _paired(raw, bf, lambda r, b: (b[0] / b[1]) / (r[0] / r[1]) * 100)
    out = [
        Row(S, "faiss raw search loop, batch=100 (median of 8 x 2 s)",
            statistics.median(r[0] / r[1] for r in raw), "queries/s", how=how),
        Row(S, "  benchflow on the same index, batch=100",
            statistics.median(b[0] / b[1] for b in bf), "queries/s", how=how),
        Row(S, "  benchflow / raw (median of the rounds' ratios)",
            ratio, "%", ">= 90", check(ratio, ">=", 90), how),
        Row(S, "  same, per CPU-second of this process (less disturbed by a shared machine)",
            _paired(raw, bf, lambda r, b: (b[0] / b[2]) / (r[0] / r[2]) * 100), "%", how=how),
    ]  # fmt: skip
    # A cheap call (exact search over 2,000 vectors) so the harness's own time shows:
    # wall time per call (what the trial reports), and the process's CPU time per
    # call, which other programs on a shared machine disturb far less.
    flat = {"type": "Flat", "metric": "L2"}
    tiny = DATASET | {"n": 2000, "clusters": 16}
    raw1, bf1 = _same_index(1, data_dir, flat, tiny)
    wall = _paired(raw1, bf1, lambda r, b: (b[1] / b[0] - r[1] / r[0]) * 1e6)
    cpu = _paired(raw1, bf1, lambda r, b: (b[2] / b[0] - r[2] / r[0]) * 1e6)
    how1 = "python -m bench vectordb  (Flat index, n=2000 d=64, k=10, batch=1, threads=1)"
    out += [
        Row(S, "faiss single-query call (Flat, n=2000), raw loop",
            statistics.median(r[1] / r[0] for r in raw1) * 1e6, "us/call", how=how1),
        Row(S, "  harness overhead per single-query call, wall time (median of pairs)",
            wall, "us", how=how1),
        Row(S, "  harness overhead per single-query call, process CPU time",
            cpu, "us", how=how1),
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
