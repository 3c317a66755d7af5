"""``faiss``: a FAISS index in the harness process — Flat, IVF, HNSW on the CPU;
Flat and IVF on a GPU with faiss-gpu (``device=cuda``).

The baseline library: no server, no serialisation, so its figures are the
ceiling the databases are compared with. The index lives in this process, so
``clients`` must be 1 and memory is this process's RSS (plus the GPU's used
memory with ``device=cuda``). Cosine is inner product on normalized vectors.
Filtered search passes a bitmap ``IDSelector`` of the vectors that qualify.

Search during ingest: a FAISS index takes concurrent searches but nothing may
search it while vectors are added, so then searches share a readers–writer lock
that an insert holds alone; and FAISS numbers vectors in the order they are
added, so live inserts are made one at a time in id order (``ordered_inserts``).
"""

from __future__ import annotations

import threading
from typing import Literal

import numpy as np
from pydantic import Field

from drivers.base import ConfigRefused, DriverError
from drivers.vectordb.base import VectorDBDriver, VectorDBSettings
from drivers.vectordb.dataset import normalized
from drivers.vectordb.stream import RWLock

_this_thread = threading.local()

# FAISS's GPU kernels select at most this many neighbours / probe this many lists.
GPU_MAX_K = 2048
GPU_MAX_NPROBE = 2048


class FaissSettings(VectorDBSettings):
    device: Literal["cpu", "cuda"] = "cpu"
    gpu_id: int = Field(0, ge=0, description="device=cuda: which GPU (CUDA numbering)")
    threads: int = Field(0, ge=0, description="OpenMP threads; 0 = FAISS's default")


def gpu_support() -> tuple[bool, str]:
    """Whether this faiss can build GPU indexes here, and why not."""
    import faiss

    if not hasattr(faiss, "StandardGpuResources"):
        return False, "this faiss has no GPU support (install faiss-gpu)"
    if faiss.get_num_gpus() < 1:
        return False, "faiss-gpu sees no GPU"
    return True, ""


class FaissDriver(VectorDBDriver):
    name = "faiss"
    description = "FAISS index in process: Flat/IVF/HNSW on CPU, Flat/IVF on GPU; recall@k"
    Settings = FaissSettings
    supports_clients = False
    client_library = "faiss-cpu"
    ordered_inserts = True

    settings: FaissSettings

    @classmethod
    def check(cls, settings: FaissSettings, run) -> None:
        super().check(settings, run)
        if settings.mode != "embedded":
            raise ConfigRefused("service.mode", settings.mode, "faiss runs in process: embedded")
        if settings.device == "cuda":
            ok, why = gpu_support()
            if not ok:
                raise ConfigRefused(
                    "service.device", "cuda", f"needs faiss-gpu and a GPU ({why}); use device=cpu"
                )
            ix, sp = settings.index, settings.search
            if run.concurrency > 1:
                raise ConfigRefused(
                    "concurrency",
                    run.concurrency,
                    "a FAISS GPU index serves one search at a time; use concurrency=1 "
                    "and a larger batch",
                )
            if ix.type == "HNSW":
                raise ConfigRefused(
                    "service.index.type", "HNSW", "FAISS has no GPU HNSW; use Flat or IVF"
                )
            if settings.filter.selectivity is not None:
                raise ConfigRefused(
                    "service.filter.selectivity",
                    settings.filter.selectivity,
                    "FAISS GPU indexes take no ID selector; use device=cpu for filtered search",
                )
            if sp.k > GPU_MAX_K:
                raise ConfigRefused("service.search.k", sp.k, f"at most {GPU_MAX_K} on the GPU")
            if ix.type == "IVF" and sp.nprobe > GPU_MAX_NPROBE:
                raise ConfigRefused(
                    "service.search.nprobe", sp.nprobe, f"at most {GPU_MAX_NPROBE} on the GPU"
                )

    def connect(self) -> None:
        import faiss

        self.faiss = faiss
        self.index = None
        self.params = None
        self.gpu_resources = None
        # Only when the load inserts: the static case keeps its lock-free searches.
        self._rw = RWLock() if self.streaming else None
        if self.settings.threads:
            faiss.omp_set_num_threads(self.settings.threads)
        if self.settings.device == "cuda":
            # Made before the "before ingest" memory snapshot; FAISS still reserves
            # its scratch memory lazily, on first use, so the GPU delta includes it.
            self.gpu_resources = faiss.StandardGpuResources()

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return normalized(x) if self.settings.index.metric == "cosine" else x

    def _metric(self) -> int:
        f = self.faiss
        return f.METRIC_L2 if self.settings.index.metric == "L2" else f.METRIC_INNER_PRODUCT

    def create(self, dim: int) -> None:
        f, ix = self.faiss, self.settings.index
        metric = self._metric()
        if self.settings.device == "cuda":
            self.index = self._gpu_index(dim, metric)
        elif ix.type == "Flat":
            self.index = f.IndexFlat(dim, metric)
        elif ix.type == "IVF":
            self.index = f.IndexIVFFlat(f.IndexFlat(dim, metric), dim, ix.nlist, metric)
        else:
            self.index = f.IndexHNSWFlat(dim, ix.M, metric)
            self.index.hnsw.efConstruction = ix.ef_construction

    def _gpu_index(self, dim: int, metric: int):
        """A GPU index built directly on the device (no CPU copy to transfer)."""
        f, ix = self.faiss, self.settings.index
        if ix.type == "Flat":
            cfg = f.GpuIndexFlatConfig()
            cfg.device = self.settings.gpu_id
            return f.GpuIndexFlat(self.gpu_resources, dim, metric, cfg)
        cfg = f.GpuIndexIVFFlatConfig()
        cfg.device = self.settings.gpu_id
        return f.GpuIndexIVFFlat(self.gpu_resources, dim, ix.nlist, metric, cfg)

    def needs_training(self) -> bool:
        return self.settings.index.type == "IVF"

    def train(self, base: np.ndarray) -> None:
        self.index.train(base)

    def insert(self, start: int, vectors: np.ndarray, attr: np.ndarray) -> None:
        # FAISS numbers vectors in the order they are added: ids are start.. by construction
        # (the base class makes live inserts one at a time, in order).
        if self._rw is None:
            self.index.add(vectors)
            return
        self._rw.acquire_write()
        try:
            if self.index.ntotal != start:
                raise DriverError(
                    f"FAISS holds {self.index.ntotal} vectors, the insert starts at id {start}",
                    "insert_out_of_order",
                )
            self.index.add(vectors)
        finally:
            self._rw.release_write()

    def apply_search_params(self) -> None:
        f, ix, sp = self.faiss, self.settings.index, self.settings.search
        t = self.settings.filter.threshold
        if t is not None:
            # A bitmap selector (bit i set: vector i qualifies); the arrays must outlive it.
            self._bitmap = np.packbits(self.data.attr < t, bitorder="little")
            self._selector = f.IDSelectorBitmap(len(self.data.attr), f.swig_ptr(self._bitmap))
            if ix.type == "HNSW":
                p = f.SearchParametersHNSW()
                p.efSearch = sp.ef
            elif ix.type == "IVF":
                p = f.SearchParametersIVF()
                p.nprobe = sp.nprobe
            else:
                p = f.SearchParameters()
            p.sel = self._selector
            self.params = p
        elif ix.type == "HNSW":
            self.index.hnsw.efSearch = sp.ef
        elif ix.type == "IVF":
            if self.settings.device == "cuda":
                f.GpuParameterSpace().set_index_parameter(self.index, "nprobe", sp.nprobe)
            else:
                self.index.nprobe = sp.nprobe

    def search(self, state, queries: np.ndarray, k: int) -> np.ndarray:
        threads = self.settings.threads
        if threads and getattr(_this_thread, "omp_threads", 0) != threads:
            # OpenMP's thread count is per calling thread: the load engine's workers
            # start with the process default, not what connect() set in this one.
            self.faiss.omp_set_num_threads(threads)
            _this_thread.omp_threads = threads
        if self._rw is None:
            return self._search(queries, k)
        self._rw.acquire_read()
        try:
            return self._search(queries, k)
        finally:
            self._rw.release_read()

    def _search(self, queries: np.ndarray, k: int) -> np.ndarray:
        if self.params is None:
            return self.index.search(queries, k)[1]
        return self.index.search(queries, k, params=self.params)[1]

    def count(self) -> int:
        return int(self.index.ntotal)

    def memory_snapshot(self) -> dict[str, float]:
        out = super().memory_snapshot()
        if self.settings.device == "cuda":
            used = _gpu_used_mb(self.settings.gpu_id)
            if used is not None:
                out["gpu_used"] = used
        return out

    def drop(self) -> None:
        self.index = None
        self.params = None

    def disconnect(self) -> None:
        self.index = None
        self.gpu_resources = None


def _gpu_used_mb(gpu_id: int) -> float | None:
    """Used memory of the GPU (whole device: other processes count too), via NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(gpu_id)
            return pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML: no figure, never a failed trial
        return None
