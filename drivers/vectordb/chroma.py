"""``chroma``: Chroma through its Python client — HNSW only.

``mode=embedded``  a ``PersistentClient`` on a directory (``service.path``, or a
                   temporary one removed at teardown) inside the harness process.
``mode=server``    ``service.host`` null: benchflow launches ``chroma run`` on a
                   free loopback port (its stdout/stderr in the trial's logs) and
                   stops it at teardown; otherwise it connects to host:port.
                   Either way the client is ``HttpClient``.

Chroma maps the index settings onto its HNSW configuration (``space``,
``max_neighbors`` = M, ``ef_construction``, ``ef_search`` = ef). Vectors are
added with ``embedding_function=None`` (no embedding model), ids are the row
numbers as strings, and each carries the metadata ``{"attr": int}`` used by the
filter (``where={"attr": {"$lt": t}}``). Telemetry is off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from pydantic import Field

from benchflow.sut.servers import ServerProcess, free_port, http_ready
from drivers.base import ConfigRefused, DriverError
from drivers.vectordb.base import CollectionSettings, VectorDBDriver, ids_matrix

log = logging.getLogger("benchflow.vectordb.chroma")

SPACES = {"L2": "l2", "IP": "ip", "cosine": "cosine"}
HEARTBEAT = "/api/v2/heartbeat"


class ChromaSettings(CollectionSettings):
    host: str | None = Field(None, description="mode=server: a running server; null = launch one")
    port: int = Field(8000, ge=1, le=65535, description="mode=server with host: its port")
    ssl: bool = False
    path: str | None = Field(None, description="embedded: the store directory; null = temporary")
    ingest_batch: int = Field(1000, ge=1, description="vectors per add() call")


class ChromaDriver(VectorDBDriver):
    name = "chroma"
    description = (
        "Chroma (HNSW): embedded PersistentClient, or HttpClient to a launched/given server"
    )
    Settings = ChromaSettings
    index_types = ("HNSW",)
    client_library = "chromadb"
    supports_clients = True
    name_rule = (
        r"^[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]$",
        "3 to 512 characters: letters, digits, '.', '_', '-'; starting and ending "
        "with a letter or digit",
    )
    local_only = ("data", "server", "client", "collection")

    settings: ChromaSettings

    @classmethod
    def check(cls, settings: ChromaSettings, run) -> None:
        super().check(settings, run)
        if settings.mode == "embedded" and settings.host is not None:
            raise ConfigRefused(
                "service.host", settings.host, "embedded mode has no host; use mode=server"
            )

    # -- connecting ------------------------------------------------------------------
    def connect(self) -> None:
        import chromadb

        s = self.settings
        self.client = self.collection = None
        # httpx logs every request at INFO: under load that is a log line per query,
        # which costs time in the measured loop and floods the trial's log.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self._tmp: str | None = None
        cs = chromadb.Settings(anonymized_telemetry=False, allow_reset=False)
        if s.mode == "embedded":
            if s.path:
                self.path = str(Path(s.path).expanduser())
            else:
                self._tmp = self.path = tempfile.mkdtemp(prefix="bf-chroma-")
            self.client = chromadb.PersistentClient(path=self.path, settings=cs)
            return
        if s.host is None:
            self._launch()
        else:
            self.host, self.port = s.host, s.port
            if not s.ssl and not http_ready(self.host, self.port, HEARTBEAT, s.request_timeout_s):
                raise DriverError(
                    f"no Chroma server answers at http://{self.host}:{self.port}{HEARTBEAT}",
                    "connection_refused",
                )
        self.client = self._http_client()

    def _launch(self) -> None:
        s = self.settings
        self._tmp = self.path = tempfile.mkdtemp(prefix="bf-chroma-server-")
        self.host, self.port = "127.0.0.1", free_port()
        cmd = [_chroma_exe(), "run", "--path", self.path, "--host", self.host]
        cmd += ["--port", str(self.port)]
        self.server = ServerProcess(
            "chroma", cmd, self.trial.logs_dir, env={"ANONYMIZED_TELEMETRY": "False"}
        )
        self.server.wait_ready(
            lambda: http_ready(self.host, self.port, HEARTBEAT), s.ready_timeout_s
        )

    def _http_client(self):
        import chromadb

        s = self.settings
        client = chromadb.HttpClient(
            host=self.host,
            port=self.port,
            ssl=s.ssl,
            settings=chromadb.Settings(anonymized_telemetry=False),
        )
        # chromadb's HTTP session has no timeout at all; a hung server would hang
        # the recall pass and the teardown (the load itself has the stall watchdog).
        session = getattr(getattr(client, "_server", None), "_session", None)
        if session is not None:
            import httpx

            session.timeout = httpx.Timeout(s.request_timeout_s)
        return client

    # -- the collection ----------------------------------------------------------------
    def existing(self) -> tuple[int, int] | None:
        from chromadb.errors import NotFoundError

        try:
            col = self.client.get_collection(self.collection_name)
        except (NotFoundError, ValueError):
            return None
        self.collection = col
        got = col.get(limit=1, include=["embeddings"])
        emb = got.get("embeddings")
        dim = len(emb[0]) if emb is not None and len(emb) else 0
        return dim, col.count()

    def create(self, dim: int) -> None:
        ix, sp = self.settings.index, self.settings.search
        hnsw = {
            "space": SPACES[ix.metric],
            "max_neighbors": ix.M,
            "ef_construction": ix.ef_construction,
            "ef_search": sp.ef,
        }
        self.collection = self.client.create_collection(
            self.collection_name,
            embedding_function=None,
            configuration={"hnsw": hnsw},
            metadata={"created_by": "benchflow"},
        )

    def insert(self, start: int, vectors: np.ndarray, attr: np.ndarray) -> None:
        # Chroma caps one add() call; split what is bigger than its limit.
        step = min(len(vectors), self.client.get_max_batch_size())
        for i in range(0, len(vectors), step):
            v = vectors[i : i + step]
            self.collection.add(
                ids=[str(start + i + j) for j in range(len(v))],
                embeddings=v,
                metadatas=[{"attr": int(a)} for a in attr[i : i + step]],
            )

    def apply_search_params(self) -> None:
        t = self.settings.filter.threshold
        self.where = None if t is None else {"attr": {"$lt": t}}
        want = self.settings.search.ef
        have = ((self.collection.configuration or {}).get("hnsw") or {}).get("ef_search")
        if have == want:
            return
        # Only a reused collection gets here. Chroma reads ef_search when it loads a
        # collection's index: a changed value reaches an index that is already
        # loaded only after a reload (measured: modify() alone leaves the recall as
        # it was, in process and on a server).
        if self.settings.mode != "embedded":
            raise DriverError(
                f"collection {self.collection_name!r} was built with ef_search={have}; a "
                f"running Chroma server applies another ef only after it reloads the "
                f"collection. Use service.search.ef={have}, or service.if_exists=drop",
                "collection_mismatch",
            )
        self.collection.modify(configuration={"hnsw": {"ef_search": want}})
        self._reopen()

    def _reopen(self) -> None:
        """Drop this process's Chroma system and open the store again (a fresh load)."""
        import chromadb
        from chromadb.api.shared_system_client import SharedSystemClient

        SharedSystemClient.clear_system_cache()
        cs = chromadb.Settings(anonymized_telemetry=False, allow_reset=False)
        self.client = chromadb.PersistentClient(path=self.path, settings=cs)
        self.collection = self.client.get_collection(self.collection_name)

    def __setstate__(self, state: dict) -> None:
        # A client process (clients=N): make its HTTP client now, while the parent
        # waits for every client to be ready, not inside the first timed phase
        # (creating one takes a second or more on a busy machine).
        self.__dict__.update(state)
        if self.settings.mode == "server":
            self.client = self._http_client()

    def open_worker(self, worker: int):
        if self.settings.mode == "embedded":
            return self.collection  # one in-process client; its calls are thread-safe
        return self.client.get_collection(self.collection_name)

    def search(self, state, queries: np.ndarray, k: int) -> np.ndarray:
        res = state.query(query_embeddings=queries, n_results=k, where=self.where, include=[])
        return ids_matrix([[int(i) for i in row] for row in res["ids"]], k)

    def count(self) -> int:
        return self.collection.count()

    def engine_figures(self) -> dict[str, float]:
        if self.settings.mode == "embedded" or self.server is not None:
            return {"disk_mb": _du_mb(self.path)}
        return {}

    def drop(self) -> None:
        if self.client is not None:
            self.client.delete_collection(self.collection_name)
        self.collection = None

    def disconnect(self) -> None:
        self.collection = None
        if self.client is not None and self.settings.mode == "embedded":
            # The embedded system is cached per path; release it before removing the files.
            from chromadb.api.shared_system_client import SharedSystemClient

            SharedSystemClient.clear_system_cache()
        self.client = None
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def classify_error(self, exc: BaseException) -> str:
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            return "timeout"
        if isinstance(exc, httpx.ConnectError):
            return "connection_refused"
        if isinstance(exc, httpx.TransportError):
            return "connection_lost"
        from chromadb.errors import ChromaError

        if isinstance(exc, ChromaError):
            return f"chroma_{exc.name()}" if hasattr(exc, "name") else "chroma_error"
        return super().classify_error(exc)


def _chroma_exe() -> str:
    """The ``chroma`` command next to this Python (a venv), else on PATH."""
    here = Path(sys.executable).with_name("chroma")
    if here.exists():
        return str(here)
    found = shutil.which("chroma")
    if not found:
        raise DriverError(
            "the `chroma` command is not installed (pip install 'benchflow[vectordb]')",
            "server_missing",
        )
    return found


def _du_mb(path: str) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, f)).st_size
    return total / 2**20
