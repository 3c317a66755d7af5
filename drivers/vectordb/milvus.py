"""``milvus``: Milvus through pymilvus' ``MilvusClient``.

``mode=embedded``  milvus-lite: ``MilvusClient("<dir>/milvus.db")`` runs a
                   Milvus-compatible gRPC server inside the harness process (the
                   ``.db`` path is a directory). For correctness — the same API,
                   filters and recall — not for Milvus performance figures: each
                   search pays a Python engine's cost (RECIPES.md).
``mode=server``    ``service.uri`` (``http://host:19530``): a Milvus standalone or
                   cluster — the distributed configuration — or any server that
                   speaks its protocol (``milvus-lite server`` too). A token, if
                   needed, comes from the environment variable named by
                   ``service.token_env``, never from the config.

Index mapping: Flat → ``FLAT``, IVF → ``IVF_FLAT`` (``nlist``; search ``nprobe``),
HNSW → ``HNSW`` (``M``, ``efConstruction``; search ``ef``); metric ``L2``,
``IP``, ``COSINE``. The schema is ``id`` INT64 primary key, ``vec`` FLOAT_VECTOR,
``attr`` INT64 (filter ``attr < t``). Build = flush, wait until every row is
indexed, load.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from pydantic import Field

from drivers.base import ConfigRefused, DriverError
from drivers.vectordb.base import CollectionSettings, VectorDBDriver, ids_matrix

log = logging.getLogger("benchflow.vectordb.milvus")

INDEX_TYPES = {"Flat": "FLAT", "IVF": "IVF_FLAT", "HNSW": "HNSW"}
METRICS = {"L2": "L2", "IP": "IP", "cosine": "COSINE"}
MAX_TOPK = 16384  # Milvus' limit on k (limit + offset)


def _quiet_unimplemented(record: logging.LogRecord) -> bool:
    """pymilvus probes calls milvus-lite's in-process server does not implement (it
    copes); the server would log each probe as an error with a traceback."""
    return "Method not implemented" not in record.getMessage()


class MilvusSettings(CollectionSettings):
    uri: str | None = Field(None, description="mode=server: http://host:19530")
    token_env: str | None = Field(
        None, description="mode=server: environment variable holding the token (user:password)"
    )
    path: str | None = Field(None, description="embedded: milvus-lite directory; null = temporary")
    db_name: str = "default"
    build_timeout_s: float = Field(600, gt=0, description="waiting for the index to be built")
    ingest_batch: int = Field(1000, ge=1, description="rows per insert() call")


class MilvusDriver(VectorDBDriver):
    name = "milvus"
    description = "Milvus via MilvusClient: milvus-lite embedded, or a server/cluster by URI"
    Settings = MilvusSettings
    client_library = "pymilvus"
    supports_clients = True
    max_k = MAX_TOPK
    build_step = "flush, wait for the index, load"
    name_rule = (
        r"^[A-Za-z_][A-Za-z0-9_]{0,254}$",
        "letters, digits and '_', starting with a letter or '_', at most 255 characters",
    )
    local_only = ("data", "server", "client")

    settings: MilvusSettings

    @classmethod
    def check(cls, settings: MilvusSettings, run) -> None:
        super().check(settings, run)
        s, ix, sp = settings, settings.index, settings.search
        if s.mode == "server" and not s.uri:
            raise ConfigRefused("service.uri", None, "mode=server needs http://host:19530")
        if s.mode == "embedded" and s.uri:
            raise ConfigRefused("service.uri", s.uri, "embedded mode has no URI; use mode=server")
        if ix.type == "HNSW" and sp.ef < sp.k:
            raise ConfigRefused("service.search.ef", sp.ef, f"Milvus needs ef >= k ({sp.k})")
        if s.token_env and s.token_env not in os.environ and s.mode == "server":
            raise ConfigRefused(
                "service.token_env", s.token_env, "no such environment variable is set"
            )

    # -- connecting ------------------------------------------------------------------
    def connect(self) -> None:
        s = self.settings
        self._tmp: str | None = None
        if s.mode == "embedded":
            logging.getLogger("grpc._server").addFilter(_quiet_unimplemented)
            root = Path(s.path).expanduser() if s.path else Path(self._make_tmp())
            root.mkdir(parents=True, exist_ok=True)
            self.uri = str(root / "milvus.db")
        else:
            self.uri = s.uri
        self.client = self._client()

    def _make_tmp(self) -> str:
        self._tmp = tempfile.mkdtemp(prefix="bf-milvus-")
        return self._tmp

    def _client(self):
        from pymilvus import MilvusClient

        s = self.settings
        token = os.environ.get(s.token_env, "") if s.token_env else ""
        try:
            return MilvusClient(
                uri=self.uri, token=token, db_name=s.db_name, timeout=s.request_timeout_s
            )
        except Exception as exc:
            raise DriverError(
                f"cannot connect to Milvus at {self.uri}: {exc}", "connection_refused"
            ) from exc

    # -- the collection ----------------------------------------------------------------
    def existing(self) -> tuple[int, int] | None:
        name = self.collection_name
        if not self.client.has_collection(name):
            return None
        desc = self.client.describe_collection(name)
        dim = 0
        for f in desc.get("fields", []):
            params = f.get("params") or {}
            if "dim" in params:
                dim = int(params["dim"])
        self.client.load_collection(name)
        return dim, self._row_count()

    def create(self, dim: int) -> None:
        from pymilvus import DataType

        ix = self.settings.index
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("attr", DataType.INT64)
        params = {}
        if ix.type == "HNSW":
            params = {"M": ix.M, "efConstruction": ix.ef_construction}
        elif ix.type == "IVF":
            params = {"nlist": ix.nlist}
        index_params = self.client.prepare_index_params()
        index_params.add_index(
            field_name="vec",
            index_type=INDEX_TYPES[ix.type],
            metric_type=METRICS[ix.metric],
            params=params,
        )
        self.client.create_collection(
            self.collection_name, schema=schema, index_params=index_params
        )

    def insert(self, start: int, vectors: np.ndarray, attr: np.ndarray) -> None:
        rows = [
            {"id": start + i, "vec": v, "attr": int(a)}
            for i, (v, a) in enumerate(zip(vectors, attr, strict=True))
        ]
        res = self.client.insert(self.collection_name, rows)
        n = res.get("insert_count", len(rows)) if isinstance(res, dict) else len(rows)
        if n != len(rows):
            raise DriverError(f"Milvus inserted {n} of {len(rows)} rows", "ingest_incomplete")

    def build(self) -> None:
        name, c = self.collection_name, self.client
        c.flush(name)
        # As VectorDBBench does: compact the flushed segments, wait for the index on
        # every row, then reload, so the load measures the built index and never a
        # segment still searched by brute force while its index is being built.
        job = c.compact(name)
        deadline = time.monotonic() + self.settings.build_timeout_s
        while str(c.get_compaction_state(job)) not in ("Completed", "CompactionState.Completed"):
            self._check_deadline(deadline, "compaction")
            time.sleep(0.5)
        while True:
            info = c.describe_index(name, "vec") or {}
            pending = int(info.get("pending_index_rows", 0) or 0)
            total, indexed = info.get("total_rows"), info.get("indexed_rows")
            if pending == 0 and (total is None or indexed is None or indexed >= total):
                break
            self._check_deadline(deadline, f"index ({indexed} of {total} rows)")
            time.sleep(0.5)
        if self.settings.mode == "embedded":
            self._drain_milvus_lite()
        c.release_collection(name)
        c.load_collection(name)

    def _check_deadline(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise DriverError(
                f"Milvus {what} not done after {self.settings.build_timeout_s:.0f} s",
                "build_timeout",
            )

    def _drain_milvus_lite(self) -> None:
        """milvus-lite builds the indexes of flushed segments in a background thread,
        yet reports every index finished at once; wait for that thread (through its
        in-process engine: there is no API call for it)."""
        try:
            from milvus_lite.server_manager import server_manager_instance

            entry = server_manager_instance._servers.get(os.path.abspath(self.uri))
            db = entry[1]
            col = db.get_collection(self.collection_name, database_name=self.settings.db_name)
            col._wait_for_bg(timeout=self.settings.build_timeout_s)
        except Exception as exc:  # another milvus-lite: go on without the wait, say so
            log.warning("could not wait for milvus-lite's background indexing: %s", exc)
            self.trial.notes.append(
                f"milvus-lite background indexing not awaited ({type(exc).__name__})"
            )

    def apply_search_params(self) -> None:
        ix, sp = self.settings.index, self.settings.search
        params = {}
        if ix.type == "HNSW":
            params = {"ef": sp.ef}
        elif ix.type == "IVF":
            params = {"nprobe": sp.nprobe}
        self.search_params = {"metric_type": METRICS[ix.metric], "params": params}
        t = self.settings.filter.threshold
        self.expr = "" if t is None else f"attr < {t}"

    def open_worker(self, worker: int):
        return self._client()  # one gRPC channel per worker

    def close_worker(self, state) -> None:
        if state is not None:
            state.close()

    def search(self, state, queries: np.ndarray, k: int) -> np.ndarray:
        res = state.search(
            self.collection_name,
            data=queries,
            limit=k,
            filter=self.expr,
            search_params=self.search_params,
            output_fields=[],
        )
        return ids_matrix([[hit["id"] for hit in hits] for hits in res], k)

    def _row_count(self) -> int:
        return int(self.client.get_collection_stats(self.collection_name)["row_count"])

    def count(self) -> int:
        return self._row_count()

    def drop(self) -> None:
        if self.client is not None:
            self.client.drop_collection(self.collection_name)

    def disconnect(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
            self.client = None
        if self.settings.mode == "embedded":
            # milvus-lite keeps one in-process server per path until told otherwise.
            try:
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(self.uri)
            except ImportError:
                pass
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def classify_error(self, exc: BaseException) -> str:
        from pymilvus.exceptions import MilvusException

        if isinstance(exc, MilvusException):
            text = str(exc).lower()
            if "deadline" in text or "timeout" in text:
                return "timeout"
            if "unavailable" in text or "connect" in text:
                return "connection_lost"
            return f"milvus_{exc.code}"
        return super().classify_error(exc)
