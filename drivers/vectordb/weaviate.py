"""``weaviate``: Weaviate through weaviate-client v4 — REST for schema and counts,
gRPC for inserts and searches.

Server mode only (``service.url``, default ``$WEAVIATE_URL``; gRPC on
``service.grpc_port``): Weaviate's embedded mode downloads a server binary at
run time, which benchflow never does, and no package on PyPI, Debian or npm
ships one (RECIPES.md). An API key, if needed, comes from the environment
variable named by ``service.api_key_env``, never from the config.

Index mapping: Flat → ``flat``, HNSW → ``hnsw`` (``max_connections`` = M,
``ef_construction``, ``ef``); Weaviate has no IVF. Metric L2 → ``l2-squared``,
IP → ``dot``, cosine → ``cosine``. One named vector ``vec`` per object; object
ids are ``UUID(int=row)``; the property ``attr`` (INT) carries the filter
attribute. Weaviate's gRPC search takes one vector per call, so ``batch`` must
be 1.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Literal
from urllib.parse import urlsplit

import numpy as np
from pydantic import Field

from drivers.base import ConfigRefused, DriverError
from drivers.vectordb.base import CollectionSettings, VectorDBDriver, ids_matrix

log = logging.getLogger("benchflow.vectordb.weaviate")

VECTOR = "vec"


class WeaviateSettings(CollectionSettings):
    mode: Literal["server"] = Field("server", description="Weaviate runs as a server only")
    url: str = Field("http://127.0.0.1:8080", description="REST endpoint of the server")
    grpc_host: str | None = Field(None, description="null: the host of url")
    grpc_port: int = Field(50051, ge=1, le=65535)
    api_key_env: str | None = Field(None, description="environment variable holding an API key")
    ingest_batch: int = Field(1000, ge=1, description="objects per insert_many() call")
    build_timeout_s: float = Field(600, gt=0, description="waiting for asynchronous indexing")


class WeaviateDriver(VectorDBDriver):
    name = "weaviate"
    description = "Weaviate via weaviate-client v4 (HTTP + gRPC) against a server URL"
    Settings = WeaviateSettings
    index_types = ("Flat", "HNSW")
    max_batch = 1
    client_library = "weaviate-client"
    supports_clients = True
    build_step = "wait until the vector index queue is empty (asynchronous indexing)"
    name_rule = (
        r"^[A-Z][A-Za-z0-9_]{0,254}$",
        "an upper-case letter, then letters, digits and '_' (Weaviate class names)",
    )
    local_only = ("data", "server", "client", "collection")

    settings: WeaviateSettings

    @classmethod
    def check(cls, settings: WeaviateSettings, run) -> None:
        super().check(settings, run)
        url = urlsplit(settings.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigRefused("service.url", settings.url, "http(s)://host:port of Weaviate")
        if settings.api_key_env and settings.api_key_env not in os.environ:
            raise ConfigRefused(
                "service.api_key_env", settings.api_key_env, "no such environment variable is set"
            )

    @property
    def collection_name(self) -> str:
        return self.settings.collection or f"Bf_{self.trial.trial_id[:16]}"

    # -- connecting ------------------------------------------------------------------
    def connect(self) -> None:
        self.collection = None
        # httpx logs every request at INFO: under load that is a log line per query,
        # which costs time in the measured loop and floods the trial's log.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self.client = self._client()

    def _client(self):
        import weaviate
        from weaviate.classes.init import AdditionalConfig, Auth, Timeout

        s = self.settings
        url = urlsplit(s.url)
        secure = url.scheme == "https"
        key = os.environ.get(s.api_key_env) if s.api_key_env else None
        t = s.request_timeout_s
        try:
            return weaviate.connect_to_custom(
                http_host=url.hostname,
                http_port=url.port or (443 if secure else 80),
                http_secure=secure,
                grpc_host=s.grpc_host or url.hostname,
                grpc_port=s.grpc_port,
                grpc_secure=secure,
                auth_credentials=Auth.api_key(key) if key else None,
                additional_config=AdditionalConfig(
                    timeout=Timeout(query=t, insert=t, init=min(t, 10))
                ),
            )
        except Exception as exc:
            raise DriverError(
                f"cannot connect to Weaviate at {s.url} (gRPC port {s.grpc_port}): {exc}",
                "connection_refused",
            ) from exc

    # -- the collection ----------------------------------------------------------------
    def vector_config(self):
        """The named vector ``vec``: self-provided vectors, the configured index."""
        from weaviate.classes.config import Configure, VectorDistances

        ix, sp = self.settings.index, self.settings.search
        distance = {
            "L2": VectorDistances.L2_SQUARED,
            "IP": VectorDistances.DOT,
            "cosine": VectorDistances.COSINE,
        }[ix.metric]
        if ix.type == "Flat":
            index = Configure.VectorIndex.flat(distance_metric=distance)
        else:
            index = Configure.VectorIndex.hnsw(
                distance_metric=distance,
                max_connections=ix.M,
                ef_construction=ix.ef_construction,
                ef=sp.ef,
            )
        return Configure.Vectors.self_provided(name=VECTOR, vector_index_config=index)

    def existing(self) -> tuple[int, int] | None:
        name = self.collection_name
        if not self.client.collections.exists(name):
            return None
        self.collection = self.client.collections.get(name)
        got = self.collection.query.fetch_objects(limit=1, include_vector=True)
        dim = len(got.objects[0].vector.get(VECTOR, [])) if got.objects else 0
        return dim, self.count()

    def create(self, dim: int) -> None:
        from weaviate.classes.config import DataType, Property

        self.collection = self.client.collections.create(
            self.collection_name,
            properties=[Property(name="attr", data_type=DataType.INT)],
            vector_config=self.vector_config(),
        )

    def insert(self, start: int, vectors: np.ndarray, attr: np.ndarray) -> None:
        from weaviate.classes.data import DataObject

        objects = [
            DataObject(
                properties={"attr": int(a)},
                uuid=uuid.UUID(int=start + i),
                vector={VECTOR: v.tolist()},
            )
            for i, (v, a) in enumerate(zip(vectors, attr, strict=True))
        ]
        res = self.collection.data.insert_many(objects)
        if res.has_errors:
            first = next(iter(res.errors.values()))
            raise DriverError(
                f"Weaviate refused {len(res.errors)} of {len(objects)} objects: {first.message}",
                "ingest_failed",
            )

    def build(self) -> None:
        # With ASYNC_INDEXING on, objects are searchable before they are in the HNSW
        # graph; wait for the queue to drain so the search measures the index.
        deadline = time.monotonic() + self.settings.build_timeout_s
        while True:
            shards = self.collection.config.get_shards()
            queued = sum(getattr(sh, "vector_queue_size", 0) or 0 for sh in shards)
            if queued == 0:
                return
            if time.monotonic() > deadline:
                raise DriverError(f"{queued} vectors still queued for indexing", "build_timeout")
            time.sleep(0.5)

    def apply_search_params(self) -> None:
        from weaviate.classes.query import Filter

        t = self.settings.filter.threshold
        self.filters = None if t is None else Filter.by_property("attr").less_than(t)
        if self.settings.index.type == "HNSW" and not self.created:
            # A reused collection: ef is the one setting of its index that may change.
            from weaviate.classes.config import Reconfigure

            hnsw = Reconfigure.VectorIndex.hnsw(ef=self.settings.search.ef)
            self.collection.config.update(
                vector_config=Reconfigure.Vectors.update(name=VECTOR, vector_index_config=hnsw)
            )

    def open_worker(self, worker: int):
        client = self._client()  # one HTTP + gRPC connection per worker
        return client, client.collections.get(self.collection_name)

    def close_worker(self, state) -> None:
        if state is not None:
            state[0].close()

    def search(self, state, queries: np.ndarray, k: int) -> np.ndarray:
        collection = state[1]
        rows = []
        for q in queries:  # batch is 1 under load; the recall pass may pass more
            res = collection.query.near_vector(
                near_vector=q.tolist(),
                limit=k,
                target_vector=VECTOR,
                filters=self.filters,
                return_properties=[],
            )
            rows.append([o.uuid.int for o in res.objects])
        return ids_matrix(rows, k)

    def count(self) -> int:
        return int(self.collection.aggregate.over_all(total_count=True).total_count)

    def drop(self) -> None:
        if self.client is not None:
            self.client.collections.delete(self.collection_name)
        self.collection = None

    def disconnect(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
            self.client = None

    def classify_error(self, exc: BaseException) -> str:
        from weaviate.exceptions import WeaviateBaseError

        if isinstance(exc, WeaviateBaseError):
            text = str(exc).lower()
            if "deadline" in text or "timeout" in text or "timed out" in text:
                return "timeout"
            if "unavailable" in text or "connect" in text:
                return "connection_lost"
            return f"weaviate_{type(exc).__name__}"
        return super().classify_error(exc)
