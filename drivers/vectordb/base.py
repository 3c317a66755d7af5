"""The vector-database driver: one abstract class, one client per engine behind it.

In the manner of VectorDBBench, the harness owns everything that must be the
same for every engine — the dataset and its exact ground truth, the phases,
which queries a request carries, recall@k, memory figures, the filter — and an
engine module (``faiss.py``, ``chroma.py``, ``milvus.py``, ``weaviate.py``) says
only how its database does each step:

``connect()``          start or reach the SUT (embedded, launched, or remote)
``existing()``         (dim, count) of a named collection that is already there
``create(dim)``        the collection / index with the configured parameters
``train(base)``        indexes that need training (IVF in FAISS)
``insert(start, vectors, attr)``   one ingest batch; ids are ``start, start+1, ...``
``build()``            flush / build / load, when the engine has such a step
``apply_search_params()``  ef, nprobe, the filter
``search(state, queries, k)``  one call; returns ids ``(nq, k)``, ``-1`` padded
``drop()`` / ``disconnect()``  undo, always

Phases recorded: ``dataset``, ``train`` (if any), ``ingest`` (vectors/s),
``build`` (if any). ``quality.recall_at_<k>`` is measured after the load over
every query, ``batch`` queries per call as under load, against the exact
neighbours (of the vectors passing the filter, when there is one).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from abc import abstractmethod
from typing import Any, ClassVar, Literal

import numpy as np
import psutil
from pydantic import BaseModel, ConfigDict, Field

from drivers.base import ConfigRefused, Driver, DriverError, RunSettings, ServiceSettings
from drivers.vectordb.dataset import ATTR_RANGE, DatasetSettings, Metric, load, recall_at_k

log = logging.getLogger("benchflow.vectordb")

IndexType = Literal["Flat", "IVF", "HNSW"]


class IndexSettings(BaseModel):
    """The index to build; each engine maps these onto its own names."""

    model_config = ConfigDict(extra="forbid")
    type: IndexType = "HNSW"
    metric: Metric = "L2"
    M: int = Field(32, ge=2, le=2048, description="HNSW: links per node")
    ef_construction: int = Field(80, ge=1, description="HNSW: build breadth")
    nlist: int = Field(256, ge=1, le=65536, description="IVF: lists (centroids)")


class SearchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: int = Field(10, ge=1, le=16384)
    ef: int = Field(64, ge=1, description="HNSW: search breadth")
    nprobe: int = Field(16, ge=1, description="IVF: lists probed")


class FilterSettings(BaseModel):
    """Filtered search: only vectors whose attribute is below a threshold qualify."""

    model_config = ConfigDict(extra="forbid")
    selectivity: float | None = Field(
        None, gt=0, le=1, description="fraction of vectors that pass; null = no filter"
    )

    @property
    def threshold(self) -> int | None:
        """The filter ``attr < threshold`` (None: no filter)."""
        if self.selectivity is None:
            return None
        return max(1, round(self.selectivity * ATTR_RANGE))


class VectorDBSettings(ServiceSettings):
    index: IndexSettings = Field(default_factory=IndexSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    filter: FilterSettings = Field(default_factory=FilterSettings)
    ingest_batch: int = Field(10000, ge=1, description="vectors per insert call")
    dataset: DatasetSettings = Field(default_factory=DatasetSettings)


class CollectionSettings(VectorDBSettings):
    """Engines that keep vectors in a named collection (Chroma, Milvus, Weaviate)."""

    collection: str | None = Field(None, description="null: a fresh name for every trial")
    if_exists: Literal["fail", "drop", "reuse"] = Field(
        "fail", description="a collection of that name exists: fail, drop it, or reuse it"
    )
    keep: bool = Field(False, description="leave the collection behind after the trial")
    request_timeout_s: float = Field(60, gt=0, description="one client call")
    ready_timeout_s: float = Field(60, gt=0, description="a launched server's start")


class VectorDBDriver(Driver):
    """The common driver; subclasses implement the engine hooks below."""

    family = "vectordb"
    batch_meaning = "queries per search call"
    size_unit = "queries"
    # QPS in the vector-search sense: queries answered per second, whatever the batch.
    throughput_basis = "size"
    Settings: ClassVar[type[VectorDBSettings]] = VectorDBSettings
    index_types: ClassVar[tuple[str, ...]] = ("Flat", "IVF", "HNSW")
    supports_filter: ClassVar[bool] = True
    max_batch: ClassVar[int | None] = None  # queries one search call can carry
    max_k: ClassVar[int | None] = None
    # What build() does, for the docs and the phase list; None: no build step.
    build_step: ClassVar[str | None] = None
    # Collection names: what the engine accepts, in a regex and in words.
    name_rule: ClassVar[tuple[str, str]] = (r"^[A-Za-z_][A-Za-z0-9_]{0,254}$", "")
    # Attributes that never travel to client processes (clients=N pickles the driver).
    local_only: ClassVar[tuple[str, ...]] = ("data", "server")

    settings: VectorDBSettings

    def __init__(self, settings: VectorDBSettings, trial) -> None:
        super().__init__(settings, trial)
        self.data = None
        self.server = None  # a launched SUT process (benchflow.sut.servers.ServerProcess)
        self.created = False
        self.queries: np.ndarray | None = None
        self.truth: np.ndarray | None = None

    # -- checks (no I/O beyond file headers) ----------------------------------------
    @classmethod
    def check(cls, settings: VectorDBSettings, run: RunSettings) -> None:
        super().check(settings, run)
        s, ix, sp = settings, settings.index, settings.search
        if ix.type not in cls.index_types:
            raise ConfigRefused(
                "service.index.type", ix.type, f"{cls.name} supports: {', '.join(cls.index_types)}"
            )
        if cls.max_batch is not None and run.batch > cls.max_batch:
            raise ConfigRefused(
                "batch", run.batch, f"{cls.name} searches at most {cls.max_batch} per call"
            )
        if cls.max_k is not None and sp.k > cls.max_k:
            raise ConfigRefused("service.search.k", sp.k, f"{cls.name} allows at most {cls.max_k}")
        problem = s.dataset.problem()
        if problem is not None:
            raise ConfigRefused(*problem)
        shapes = s.dataset.shapes()
        n, nq = shapes["base"][0], shapes["query"][0]
        generated = s.dataset.source == "generated"
        queries = "dataset.queries" if generated else "the number of queries"
        if run.batch > nq:
            raise ConfigRefused("batch", run.batch, f"at most {queries} ({nq})")
        vectors = "dataset.n" if generated else "the number of vectors"
        if sp.k > n:
            raise ConfigRefused("service.search.k", sp.k, f"at most {vectors} ({n})")
        if ix.type == "IVF":
            if ix.nlist > n:
                raise ConfigRefused("service.index.nlist", ix.nlist, f"at most {vectors} ({n})")
            if sp.nprobe > ix.nlist:
                raise ConfigRefused(
                    "service.search.nprobe", sp.nprobe, f"at most index.nlist ({ix.nlist})"
                )
        t = s.filter.threshold
        if t is not None:
            if not cls.supports_filter:
                raise ConfigRefused(
                    "service.filter.selectivity", s.filter.selectivity, f"{cls.name} cannot filter"
                )
            expected = n * t / ATTR_RANGE
            if expected < sp.k:
                raise ConfigRefused(
                    "service.filter.selectivity",
                    s.filter.selectivity,
                    f"leaves about {expected:.0f} of {n} vectors, fewer than k ({sp.k})",
                )
        if isinstance(s, CollectionSettings):
            rule, words = cls.name_rule
            if s.collection is not None and not re.match(rule, s.collection):
                raise ConfigRefused(
                    "service.collection", s.collection, words or f"must match {rule}"
                )
            if s.if_exists == "reuse" and s.collection is None:
                raise ConfigRefused(
                    "service.if_exists", "reuse", "needs service.collection (the name to reuse)"
                )
        if s.mode == "embedded" and run.clients > 1:
            raise ConfigRefused(
                "clients", run.clients, f"{cls.name} embedded runs in this process; use clients=1"
            )

    # -- engine hooks -----------------------------------------------------------------
    @abstractmethod
    def connect(self) -> None:
        """Start (embedded / launched) or reach (remote) the SUT."""

    def existing(self) -> tuple[int, int] | None:
        """(dimension, vector count) of the named collection if it exists, else None."""
        return None

    @abstractmethod
    def create(self, dim: int) -> None:
        """Create the collection / index with the configured parameters."""

    def needs_training(self) -> bool:
        """Whether the configured index must be trained before vectors are added."""
        return False

    def train(self, base: np.ndarray) -> None:
        """Train the index on ``base`` (timed as the ``train`` phase)."""

    @abstractmethod
    def insert(self, start: int, vectors: np.ndarray, attr: np.ndarray) -> None:
        """Insert one batch; the ids are ``start .. start + len(vectors) - 1``."""

    def build(self) -> None:
        """Flush / build / load after ingest (timed as the ``build`` phase)."""

    def apply_search_params(self) -> None:
        """Set ef / nprobe / the filter before the load."""

    @abstractmethod
    def search(self, state: Any, queries: np.ndarray, k: int) -> np.ndarray:
        """One search call; neighbour ids ``(len(queries), k)``, ``-1`` where none."""

    def count(self) -> int | None:
        """How many vectors the SUT holds."""
        return None

    def drop(self) -> None:
        """Remove the collection / index created by this trial."""

    def disconnect(self) -> None:
        """Close clients, stop what connect() launched, remove temporary data."""

    def sut_process(self) -> psutil.Process | None:
        """The process that holds the index (None: a remote server, not measurable)."""
        if self.server is not None:
            return psutil.Process(self.server.pid)
        if self.settings.mode == "embedded":
            return psutil.Process(os.getpid())
        return None

    def memory_snapshot(self) -> dict[str, float]:
        """Memory figures in MiB, taken before and after ingest (deltas are derived)."""
        proc = self.sut_process()
        return {} if proc is None else {"rss": _rss_mb(proc)}

    def engine_figures(self) -> dict[str, float]:
        """Figures the engine reports about its index (sizes on disk, segments, ...)."""
        return {}

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Vectors as the engine should receive them (FAISS normalizes for cosine)."""
        return x

    @property
    def collection_name(self) -> str:
        s = self.settings
        given = getattr(s, "collection", None)
        return given or f"bf_{self.trial.trial_id[:16]}"

    # -- the life of a trial -------------------------------------------------------
    def setup(self) -> None:
        s, extra, notes = self.settings, self.trial.extra, self.trial.notes
        t = s.filter.threshold
        with self.trial.phase("dataset") as fig:
            self.data = load(s.dataset, self.trial.data_dir)
            self.truth = self.data.ground_truth(s.index.metric, s.search.k, t)
            fig.update(vectors=len(self.data.base), queries=len(self.data.queries))
            fig["dim"] = self.data.dim
        if self.data.truth_source == "file":
            notes.append("recall against the dataset file's own ground truth")
        if t is not None:
            extra["filter.threshold"] = float(t)
            extra["filter.selectivity"] = float(np.mean(self.data.attr < t))
        self.queries = np.ascontiguousarray(self.prepare(self.data.queries), dtype=np.float32)
        self.connect()
        before = self.memory_snapshot()
        have = self.existing()
        reuse = have is not None and self._resolve_existing(have)
        if not reuse:
            self._ingest()
        self.apply_search_params()
        after = self.memory_snapshot()
        for key, v0 in before.items():
            if key in after:
                extra[f"memory.{key}_before_mb"] = v0
                extra[f"memory.{key}_after_mb"] = after[key]
                extra[f"memory.{key}_delta_mb"] = after[key] - v0
        if not before:
            notes.append(f"memory not measured: the {self.name} server is remote")
        extra.update({f"index.{k}": v for k, v in self.engine_figures().items()})
        n = self.count()
        if n is not None:
            extra["index.ntotal"] = float(n)
            if n != len(self.data.base):
                raise DriverError(
                    f"{self.name} holds {n} vectors after ingest, the dataset has "
                    f"{len(self.data.base)}",
                    "ingest_incomplete",
                )

    def _resolve_existing(self, have: tuple[int, int]) -> bool:
        """Decide what to do with a collection that is already there; True: reuse it."""
        dim, count = have
        name, policy = self.collection_name, getattr(self.settings, "if_exists", "fail")
        if policy == "drop":
            log.info("dropping the existing collection %s (if_exists=drop)", name)
            self.drop()
            return False
        if policy == "fail":
            raise DriverError(
                f"collection {name!r} already exists in {self.name}; set service.if_exists=drop "
                "to replace it or reuse to search it as it is",
                "collection_exists",
            )
        if dim != self.data.dim:
            raise DriverError(
                f"dimension mismatch: collection {name!r} has {dim} dimensions, the dataset "
                f"{self.data.dim}; use service.if_exists=drop or another collection",
                "dimension_mismatch",
            )
        if count != len(self.data.base):
            raise DriverError(
                f"collection {name!r} holds {count} vectors, the dataset has "
                f"{len(self.data.base)}; use service.if_exists=drop to rebuild it",
                "collection_mismatch",
            )
        self.trial.notes.append(
            f"reused collection {name!r}: no ingest; its index parameters are those it was "
            "built with"
        )
        return True

    def _ingest(self) -> None:
        s, data = self.settings, self.data
        base = np.ascontiguousarray(self.prepare(data.base), dtype=np.float32)
        attr = data.attr
        self.create(data.dim)
        self.created = True
        if self.needs_training():
            with self.trial.phase("train") as fig:
                self.train(base)
            fig["vectors"] = len(base)
        with self.trial.phase("ingest") as fig:
            for i in range(0, len(base), s.ingest_batch):
                self.insert(i, base[i : i + s.ingest_batch], attr[i : i + s.ingest_batch])
        fig["vectors"] = len(base)
        fig["vectors_per_s"] = len(base) / fig["seconds"] if fig["seconds"] else 0.0
        if self.build_step is not None:
            with self.trial.phase("build") as fig:
                self.build()
            total = self.trial.phases["ingest"]["seconds"] + fig["seconds"]
            fig["vectors_per_s_with_ingest"] = len(base) / total if total else 0.0

    def query_batch(self, ctx) -> np.ndarray:
        """The ``batch`` queries of one request: consecutive, each worker from its own offset."""
        b, nq = self.trial.run.batch, len(self.queries)
        start = (ctx.seq * b + ctx.worker * 7919) % nq
        q = self.queries[start : start + b]
        if len(q) < b:  # wrap around the query set
            q = np.concatenate([q, self.queries[: b - len(q)]])
        return q

    def operation(self, ctx) -> int:
        self.search(ctx.state, self.query_batch(ctx), self.settings.search.k)
        return self.trial.run.batch

    def search_all(self) -> np.ndarray:
        """Neighbour ids of every query, searched ``batch`` at a time (as under load)."""
        b, k = self.trial.run.batch, self.settings.search.k
        state = self.open_worker(0)
        try:
            out = [
                _pad(self.search(state, self.queries[i : i + b], k), k)
                for i in range(0, len(self.queries), b)
            ]
        finally:
            self.close_worker(state)
        return np.concatenate(out)

    def quality(self) -> dict[str, float]:
        k = self.settings.search.k
        try:
            found = self.search_all()
        except Exception as exc:  # a SUT that died under load: the trial keeps its figures
            log.error("recall not measured: %s: %s", type(exc).__name__, exc)
            self.trial.notes.append(
                f"recall not measured: the search after the load failed "
                f"({self.classify_error(exc)}: {str(exc)[:200]})"
            )
            return {}
        return {f"recall_at_{k}": recall_at_k(found, self.truth, k)}

    def sut_pids(self) -> list[int]:
        return [self.server.pid] if self.server is not None else []

    def classify_error(self, exc: BaseException) -> str:
        cls = getattr(exc, "error_class", None)
        if isinstance(cls, str):
            return cls
        if isinstance(exc, ConnectionRefusedError):
            return "connection_refused"
        if isinstance(exc, ConnectionError):
            return "connection_lost"
        return super().classify_error(exc)

    def teardown(self) -> None:
        try:
            if self.created and not getattr(self.settings, "keep", False):
                self.drop()
        finally:
            try:
                self.disconnect()
            finally:
                if self.server is not None:
                    self.server.stop()
                    self.server = None

    def __getstate__(self) -> dict:
        # Client processes get the queries and settings; connections are made in
        # open_worker() there, and the base vectors and server handle stay here.
        state = dict(self.__dict__)
        for key in self.local_only:
            if key in state:
                state[key] = None
        return state


def _pad(ids: np.ndarray, k: int) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim == 2 and ids.shape[1] == k:
        return ids
    m = min(k, ids.shape[1])
    out = np.full((len(ids), k), -1, dtype=np.int64)
    out[:, :m] = ids[:, :m]
    return out


def ids_matrix(rows: list[list[int]], k: int) -> np.ndarray:
    """Ragged lists of ids (engines return fewer than k when a filter leaves fewer) as
    an ``(n, k)`` array padded with -1."""
    out = np.full((len(rows), k), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row[:k]
    return out


def _rss_mb(proc: psutil.Process) -> float:
    """Resident memory of a process and its children, in MiB."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20
