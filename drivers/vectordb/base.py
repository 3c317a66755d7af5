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
neighbours (of the vectors passing the filter, when there is one), with its
per-query percentiles and the recall counted by distance (``_eps``).

Search during ingest (``service.stream``, ``mix={search: .., insert: ..}``): setup
ingests only the first ``initial_fraction`` of the base vectors, an ``insert``
request adds the next ``stream.insert_batch``, and the harness judges sampled
searches against the vectors acknowledged when each was sent and measures how
soon an inserted vector is found (``stream.py``, docs/vectordb.md).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import tempfile
import threading
import time
from abc import abstractmethod
from typing import Any, ClassVar, Literal

import numpy as np
import psutil
from pydantic import BaseModel, ConfigDict, Field

from drivers.base import ConfigRefused, Driver, DriverError, RunSettings, ServiceSettings
from drivers.vectordb import stream
from drivers.vectordb.dataset import (
    ATTR_RANGE,
    DatasetSettings,
    Metric,
    exact_search,
    load,
    recall_at_k,
)

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
    recall_epsilon: float = Field(
        1e-3,
        ge=0,
        description="recall by distance: a neighbour within (1+ε) of the k-th true "
        "distance counts (quality.recall_at_<k>_eps)",
    )


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


class StreamSettings(BaseModel):
    """Search during ingest (VectorDBBench's streaming case); the defaults are "off"."""

    model_config = ConfigDict(extra="forbid")
    initial_fraction: float = Field(
        1.0, gt=0, le=1, description="share of the base vectors ingested in setup; 1 = all"
    )
    insert_batch: int = Field(100, ge=1, description="vectors one insert request adds")
    recall_samples: int = Field(
        2000, ge=0, description="queries sampled for the live-set recall (0: none)"
    )
    freshness_every: int = Field(
        50, ge=0, description="probe the freshness of every n-th insert request (0: none)"
    )
    freshness_timeout_s: float = Field(
        10, gt=0, description="an inserted vector not found by then is a freshness timeout"
    )


class VectorDBSettings(ServiceSettings):
    index: IndexSettings = Field(default_factory=IndexSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    filter: FilterSettings = Field(default_factory=FilterSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
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
    # The engine numbers vectors in the order they arrive (FAISS): live inserts are
    # then claimed and made one at a time, so ids stay the dataset's row numbers.
    ordered_inserts: ClassVar[bool] = False
    # A search during ingest is of one of these classes (docs/vectordb.md).
    mix_classes = ("search", "insert")

    settings: VectorDBSettings

    def __init__(self, settings: VectorDBSettings, trial) -> None:
        super().__init__(settings, trial)
        self.data = None
        self.server = None  # a launched SUT process (benchflow.sut.servers.ServerProcess)
        self.created = False
        self.queries: np.ndarray | None = None
        self.truth: np.ndarray | None = None
        # Search during ingest (None unless service.stream.initial_fraction < 1).
        self.stream_base: np.ndarray | None = None  # every base vector, as inserted
        self.cursor: stream.Cursor | None = None
        self.search_log: stream.SearchLog | None = None
        self.probe: stream.FreshnessProbe | None = None
        self._probe_state: Any = None
        self._measuring = False
        self._order_lock = threading.Lock()
        self._inserts_measured = itertools.count(1)

    @property
    def streaming(self) -> bool:
        """Whether setup leaves vectors for the load to insert (search during ingest)."""
        return self.settings.stream.initial_fraction < 1

    @classmethod
    def initial_count(cls, settings: VectorDBSettings, n: int) -> int:
        """Base vectors ingested in setup: the first ``initial_fraction`` of ``n``."""
        f = settings.stream.initial_fraction
        return n if f >= 1 else int(f * n)

    @classmethod
    def inactive_keys(cls, settings: VectorDBSettings) -> tuple[str, ...]:
        """Search during ingest and the recall's ε at their defaults change nothing
        measured before they existed: left out of params and hashes."""
        out = []
        if settings.stream == StreamSettings():
            out.append("stream")
        eps = SearchSettings.model_fields["recall_epsilon"].default
        if settings.search.recall_epsilon == eps:
            out.append("search.recall_epsilon")
        return tuple(out)

    @classmethod
    def headline_for(cls, settings: VectorDBSettings, run: RunSettings | None):
        # Inserts carry vectors and searches queries: their sum is no one thing, so a
        # mix with inserts headlines calls/s (per class: rates.queries_per_s).
        if run is not None and "insert" in dict(run.mix):
            return "requests"
        return cls.headline(settings)

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
        cls._check_stream(s, run, n)

    @classmethod
    def _check_stream(cls, s: VectorDBSettings, run: RunSettings, n: int) -> None:
        f, mix = s.stream.initial_fraction, dict(run.mix)
        if "insert" in mix and f >= 1:
            raise ConfigRefused(
                "mix.insert",
                mix["insert"],
                "inserts need vectors left to insert: set service.stream.initial_fraction "
                "below 1 (e.g. 0.5)",
            )
        if f >= 1:
            return
        if run.clients > 1:
            raise ConfigRefused(
                "clients",
                run.clients,
                "search during ingest keeps its insert cursor and samples in this process; "
                "use clients=1 (and concurrency for parallel requests)",
            )
        if getattr(s, "if_exists", None) == "reuse":
            raise ConfigRefused(
                "service.if_exists",
                "reuse",
                "search during ingest builds its collection from the initial fraction; "
                "use fail or drop",
            )
        n0 = cls.initial_count(s, n)
        if n0 < s.search.k:
            raise ConfigRefused(
                "service.stream.initial_fraction",
                f,
                f"ingests {n0} vectors, fewer than k ({s.search.k})",
            )
        if s.index.type == "IVF" and n0 < s.index.nlist:
            raise ConfigRefused(
                "service.stream.initial_fraction",
                f,
                f"ingests {n0} vectors to train IVF on, fewer than index.nlist ({s.index.nlist})",
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
        n0 = self.initial_count(s, len(self.data.base))
        if n is not None:
            extra["index.ntotal"] = float(n)
            if n != n0:
                raise DriverError(
                    f"{self.name} holds {n} vectors after ingest, {n0} were inserted",
                    "ingest_incomplete",
                )
        if self.streaming:
            self._stream_setup(n0)

    def _stream_setup(self, n0: int) -> None:
        s, run = self.settings.stream, self.trial.run
        base = np.ascontiguousarray(self.prepare(self.data.base), dtype=np.float32)
        self.stream_base = base
        self.cursor = stream.Cursor(n0, len(base))
        if s.recall_samples:
            cap = -(-s.recall_samples // run.batch)  # requests: batch queries each
            self.search_log = stream.SearchLog(cap, run.seed)
        self.trial.extra["stream.initial_vectors"] = float(n0)

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
        # Search during ingest: only the initial fraction now (the IVF is trained on it
        # too, as a live index would be), the rest by the load's insert requests.
        n0 = self.initial_count(s, len(data.base))
        base = np.ascontiguousarray(self.prepare(data.base[:n0]), dtype=np.float32)
        attr = data.attr[:n0]
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

    def query_start(self, ctx) -> int:
        """Index of a request's first query: consecutive requests, each worker from its
        own offset."""
        return (ctx.seq * self.trial.run.batch + ctx.worker * 7919) % len(self.queries)

    def query_batch(self, ctx) -> np.ndarray:
        """The ``batch`` queries of one request (see :meth:`query_start`)."""
        b = self.trial.run.batch
        start = self.query_start(ctx)
        q = self.queries[start : start + b]
        if len(q) < b:  # wrap around the query set
            q = np.concatenate([q, self.queries[: b - len(q)]])
        return q

    def operation(self, ctx) -> int:
        if self.cursor is None:  # the static case: nothing else on the hot path
            self.search(ctx.state, self.query_batch(ctx), self.settings.search.k)
            return self.trial.run.batch
        if ctx.cls == "insert":
            return self._insert_live()
        k, b = self.settings.search.k, self.trial.run.batch
        n_at_send = self.cursor.n_ack  # the live set: every insert acknowledged by now
        ids = self.search(ctx.state, self.query_batch(ctx), k)
        log_ = self.search_log
        if log_ is not None and self._measuring:
            slot = log_.slot()
            if slot is not None:
                qidx = (self.query_start(ctx) + np.arange(b)) % len(self.queries)
                log_.put(slot, qidx, n_at_send, _pad(ids, k))
        return b

    def _insert_live(self) -> int:
        """One insert request: the next ``stream.insert_batch`` vectors of the dataset."""
        c, b = self.cursor, self.settings.stream.insert_batch
        lock = self._order_lock if self.ordered_inserts else contextlib.nullcontext()
        with lock:
            start, end = c.claim(b)
            try:
                self.insert(start, self.stream_base[start:end], self.data.attr[start:end])
            except BaseException:
                c.fail(start, end)
                raise
            c.ack(start, end)
        acked = time.perf_counter()
        every = self.settings.stream.freshness_every
        if self.probe is not None and self._measuring and next(self._inserts_measured) % every == 0:
            vid = self._probe_id(start, end)
            if vid is not None:
                self.probe.add(vid, self.stream_base[vid], acked)
        return end - start

    def _probe_id(self, start: int, end: int) -> int | None:
        """The vector of a batch whose freshness is probed: the first one a filtered
        search can return (None: none of them passes the filter)."""
        t = self.settings.filter.threshold
        if t is None:
            return start
        ok = np.flatnonzero(self.data.attr[start:end] < t)
        return start + int(ok[0]) if len(ok) else None

    def measure_start(self) -> None:
        self._measuring = True
        mix = dict(self.trial.run.mix)
        if self.cursor is not None and self.settings.stream.freshness_every and "insert" in mix:
            # Its own connection, searching from its own thread: the measured requests
            # neither wait for it nor see its searches in their figures.
            self._probe_state = self.open_worker(self.trial.run.concurrency)
            self.probe = stream.FreshnessProbe(
                self.search,
                self._probe_state,
                self.settings.search.k,
                self.settings.stream.freshness_timeout_s,
                batch=min(stream.PROBE_BATCH, self.max_batch or stream.PROBE_BATCH),
            )

    def measure_end(self) -> dict[str, float]:
        self._measuring = False
        return {}

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
        out: dict[str, float] = {}
        truth = self.truth
        if self.cursor is not None:
            self._stop_probe(wait=True)
            out.update(self._stream_recall())
            truth = self._live_truth()
        try:
            found = self.search_all()
        except Exception as exc:  # a SUT that died under load: the trial keeps its figures
            log.error("recall not measured: %s: %s", type(exc).__name__, exc)
            self.trial.notes.append(
                f"recall not measured: the search after the load failed "
                f"({self.classify_error(exc)}: {str(exc)[:200]})"
            )
            return out
        name = f"recall_at_{k}"
        out.update(stream.percentiles(stream.per_query_recall(found, truth, k), name))
        # The mean as before (hits over all true neighbours): equal to the mean of the
        # per-query figures unless a filter leaves some query fewer than k neighbours.
        out[name] = recall_at_k(found, truth, k)
        eps = stream.recall_by_distance(
            self.data.base,
            self.data.queries,
            found,
            truth,
            self.settings.index.metric,
            k,
            self.settings.search.recall_epsilon,
            self._excluded(),
        )
        eps = eps[~np.isnan(eps)]
        if len(eps):
            out[f"{name}_eps"] = float(eps.mean())
        return out

    # -- search during ingest: after the load ---------------------------------------------
    def _excluded(self) -> np.ndarray | None:
        """Base ids that are no candidates: the filter's rejects and, when streaming,
        the vectors of failed inserts (in the index or not: nobody knows)."""
        t = self.settings.filter.threshold
        mask = None if t is None else self.data.attr >= t
        failed = self.cursor.failed if self.cursor is not None else []
        if failed:
            mask = np.zeros(len(self.data.base), bool) if mask is None else mask.copy()
            for a, b in failed:
                mask[a:b] = True
        return mask

    def _live_truth(self) -> np.ndarray:
        """Exact neighbours of every query over the vectors live after the load."""
        k, n = self.settings.search.k, self.cursor.n_ack
        excluded = self._excluded()
        allowed = np.arange(n) if excluded is None else np.flatnonzero(~excluded[:n])
        self.trial.extra["stream.live_vectors_end"] = float(len(allowed))
        metric = self.settings.index.metric
        return exact_search(self.data.base[:n], self.data.queries, metric, k, allowed)

    def _stream_recall(self) -> dict[str, float]:
        """The live-set recall of the sampled searches; the sample as an artifact."""
        k, c, extra = self.settings.search.k, self.cursor, self.trial.extra
        failed = sum(b - a for a, b in c.failed)
        extra["stream.inserted_vectors"] = float(c.n_ack - extra["stream.initial_vectors"] - failed)
        extra["stream.failed_vectors"] = float(failed)
        with contextlib.suppress(Exception):  # a dead SUT: the count is only a cross-check
            n = self.count()
            if n is not None:
                extra["stream.ntotal_end"] = float(n)
        if self.search_log is None:
            return {}
        qidx, n_send, ids = self.search_log.arrays(k)
        extra["stream.recall_queries"] = float(len(qidx))
        self._attach_searches(qidx, n_send, ids)
        if not len(qidx):
            return {}
        truth = stream.exact_prefix_topk(
            self.data.base,
            self.data.queries,
            qidx,
            n_send,
            self.settings.index.metric,
            k,
            self._excluded(),
        )
        per_query = stream.live_recall(ids, truth, n_send, k, c.failed)
        return stream.percentiles(per_query, f"stream_recall_at_{k}")

    def _attach_searches(self, qidx: np.ndarray, n_send: np.ndarray, ids: np.ndarray) -> None:
        """``custom/stream_searches.npz``: what the live-set recall was computed from, so
        anyone can recompute it (query index, live vectors at send, ids returned)."""
        failed = np.asarray(self.cursor.failed, np.int64).reshape(-1, 2)
        fd, tmp = tempfile.mkstemp(suffix=".npz", dir=self.trial.trial_dir)
        os.close(fd)
        try:
            np.savez(tmp, query=qidx, n_at_send=n_send, ids=ids, failed=failed)
            self.trial.attach(tmp, "stream_searches.npz")
        finally:
            os.unlink(tmp)

    def _stop_probe(self, wait: bool) -> None:
        """End the freshness thread; with ``wait``, let its pending vectors finish (each
        within its timeout) and put its figures in ``extra``."""
        probe = self.probe
        if probe is None:
            return
        self.probe = None
        probe.stop(self.settings.stream.freshness_timeout_s + 5 if wait else 1)
        if wait:
            self.trial.extra.update(probe.figures())
            if probe.error:
                self.trial.notes.append(f"freshness probing stopped: {probe.error}")
        if not probe.alive:
            with contextlib.suppress(Exception):
                self.close_worker(self._probe_state)
        self._probe_state = None

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
        self._stop_probe(wait=False)  # before the collection goes
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
        for key in (*self.local_only, "stream_base"):
            if key in state:
                state[key] = None
        # Locks and counters do not pickle (and search during ingest needs clients=1).
        state["_order_lock"] = state["_inserts_measured"] = None
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
