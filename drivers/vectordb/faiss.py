"""``faiss``: a FAISS index in the harness process (Flat, IVF, HNSW; CPU or GPU).

Setup trains (IVF), ingests in batches (its own phase: vectors/s) and records
the memory the index took. Each request searches ``batch`` queries for the
``k`` nearest neighbours. Recall@k is measured afterwards over every query with
the same parameters, against the exact neighbours of the dataset.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import psutil
from pydantic import BaseModel, ConfigDict, Field

from drivers.base import ConfigRefused, Driver, ServiceSettings
from drivers.vectordb.dataset import DatasetSettings, load, normalized, recall_at_k


class IndexSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["Flat", "IVF", "HNSW"] = "HNSW"
    metric: Literal["L2", "IP", "cosine"] = "L2"
    M: int = Field(32, ge=2, le=512)
    ef_construction: int = Field(80, ge=1)
    nlist: int = Field(256, ge=1)


class SearchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: int = Field(10, ge=1, le=2048)
    ef: int = Field(64, ge=1)
    nprobe: int = Field(16, ge=1)


class FaissSettings(ServiceSettings):
    device: Literal["cpu", "cuda"] = "cpu"
    threads: int = Field(0, ge=0)
    index: IndexSettings = Field(default_factory=IndexSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    ingest_batch: int = Field(10000, ge=1)
    dataset: DatasetSettings = Field(default_factory=DatasetSettings)


class FaissDriver(Driver):
    name = "faiss"
    family = "vectordb"
    description = "FAISS index in process: Flat/IVF/HNSW, batch queries, recall@k"
    Settings = FaissSettings
    batch_meaning = "queries per search call"
    size_unit = "queries"
    supports_clients = False
    client_library = "faiss-cpu"

    settings: FaissSettings

    @classmethod
    def check(cls, settings: FaissSettings, run) -> None:
        super().check(settings, run)
        ix, ds = settings.index, settings.dataset
        if run.batch > ds.queries:
            raise ConfigRefused("batch", run.batch, f"at most dataset.queries ({ds.queries})")
        if settings.search.k > ds.n:
            raise ConfigRefused(
                "service.search.k", settings.search.k, f"at most dataset.n ({ds.n})"
            )
        if ix.type == "IVF" and ix.nlist > ds.n:
            raise ConfigRefused("service.index.nlist", ix.nlist, f"at most dataset.n ({ds.n})")
        if ix.type == "IVF" and settings.search.nprobe > ix.nlist:
            raise ConfigRefused(
                "service.search.nprobe", settings.search.nprobe, f"at most index.nlist ({ix.nlist})"
            )
        if settings.device == "cuda":
            import faiss

            has_gpu_build = hasattr(faiss, "StandardGpuResources")
            if not has_gpu_build or faiss.get_num_gpus() < 1:
                why = "no GPU visible" if has_gpu_build else "this faiss has no GPU support"
                raise ConfigRefused(
                    "service.device", "cuda", f"needs faiss-gpu and a GPU ({why}); use device=cpu"
                )
            if ix.type == "HNSW":
                raise ConfigRefused(
                    "service.index.type", "HNSW", "FAISS has no GPU HNSW; use Flat or IVF"
                )

    def setup(self) -> None:
        import faiss

        s, ix = self.settings, self.settings.index
        if s.threads:
            faiss.omp_set_num_threads(s.threads)
        with self.trial.phase("dataset") as fig:
            self.data = load(s.dataset, self.trial.data_dir)
            self.truth = self.data.ground_truth(ix.metric, s.search.k)
            fig["vectors"] = len(self.data.base)
        base, self.queries = self.data.base, self.data.queries
        if ix.metric == "cosine":
            base, self.queries = normalized(base), normalized(self.queries)
        metric = faiss.METRIC_L2 if ix.metric == "L2" else faiss.METRIC_INNER_PRODUCT
        d = self.data.dim
        if ix.type == "Flat":
            index = faiss.IndexFlat(d, metric)
        elif ix.type == "IVF":
            index = faiss.IndexIVFFlat(faiss.IndexFlat(d, metric), d, ix.nlist, metric)
        else:
            index = faiss.IndexHNSWFlat(d, ix.M, metric)
            index.hnsw.efConstruction = ix.ef_construction
        if s.device == "cuda":
            self._gpu_res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._gpu_res, 0, index)
        proc = psutil.Process(os.getpid())
        rss0 = proc.memory_info().rss
        if ix.type == "IVF":
            with self.trial.phase("train") as fig:
                index.train(base)
                fig["vectors"] = len(base)
        with self.trial.phase("ingest") as fig:
            for i in range(0, len(base), s.ingest_batch):
                index.add(base[i : i + s.ingest_batch])
        fig["vectors"] = len(base)
        fig["vectors_per_s"] = len(base) / fig["seconds"] if fig["seconds"] else 0.0
        self.trial.extra["index.rss_delta_mb"] = (proc.memory_info().rss - rss0) / 2**20
        self.trial.extra["index.ntotal"] = float(index.ntotal)
        self.index = index
        self._apply_search_params()

    def _apply_search_params(self) -> None:
        import faiss

        ix, sp = self.settings.index, self.settings.search
        if ix.type == "HNSW":
            self.index.hnsw.efSearch = sp.ef
        elif ix.type == "IVF":
            if self.settings.device == "cuda":
                faiss.GpuParameterSpace().set_index_parameter(self.index, "nprobe", sp.nprobe)
            else:
                self.index.nprobe = sp.nprobe

    def operation(self, ctx) -> int:
        b = self.trial.run.batch
        nq = len(self.queries)
        start = (ctx.seq * b + ctx.worker * 7919) % nq
        q = self.queries[start : start + b]
        if len(q) < b:  # wrap around the query set
            q = np.concatenate([q, self.queries[: b - len(q)]])
        self.index.search(q, self.settings.search.k)
        return b

    def search_all(self) -> np.ndarray:
        """Neighbour ids of every query, searched ``batch`` at a time (as under load)."""
        b, k = self.trial.run.batch, self.settings.search.k
        out = [
            self.index.search(self.queries[i : i + b], k)[1] for i in range(0, len(self.queries), b)
        ]
        return np.concatenate(out)

    def quality(self) -> dict[str, float]:
        k = self.settings.search.k
        return {f"recall_at_{k}": recall_at_k(self.search_all(), self.truth, k)}

    def teardown(self) -> None:
        self.index = None
