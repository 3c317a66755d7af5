"""The ``s3`` driver class: config checks, setup, workers, the window's figures, teardown.

Its bases bring the rest, one module each: the endpoint (clients, bucket,
clean-up), the object pool, the requests, error classes. What the driver
measures is the package's docstring (:mod:`drivers.storage.s3`).
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from benchflow.workload.keys import AccessConfig, KeyChooser
from drivers.base import ConfigRefused, Driver
from drivers.storage.s3.endpoint import Endpoint
from drivers.storage.s3.errors import ErrorClassifier, _describe
from drivers.storage.s3.keys import WriteSpace, key_figures
from drivers.storage.s3.operations import Operations, _Worker
from drivers.storage.s3.payload import Payload
from drivers.storage.s3.pool import _PREPARE_RETRIES, _PREPARE_THREADS, ObjectPool
from drivers.storage.s3.settings import (
    MAX_OBJECT,
    MAX_PART,
    MAX_PARTS,
    MAX_SINGLE_PUT,
    MIN_PART,
    S3Settings,
)

log = logging.getLogger("drivers.storage.s3")


class S3Driver(Endpoint, ObjectPool, Operations, ErrorClassifier, Driver):
    name = "s3"
    family = "storage"
    description = "S3 PUT/GET/DELETE/LIST/HEAD (boto3), streamed objects, multipart, checksums"
    Settings = S3Settings
    size_unit = "bytes"
    throughput_basis = "size"
    client_library = "boto3"
    # With a mix each request does its class's operation (docs/drivers.md, "Mixes and
    # skewed keys in the storage drivers").
    mix_classes = ("get", "put", "list", "delete", "head")

    settings: S3Settings

    def __init__(self, settings: S3Settings, trial) -> None:
        super().__init__(settings, trial)
        self.payload = Payload(trial.run.seed)
        self.size = int(settings.object_size)
        self.bucket = settings.bucket
        self.base = f"{settings.prefix}/{trial.trial_id[:12]}"
        self.endpoint_url = settings.endpoint_url
        self._creds: dict[str, str] = {}  # mode=embedded: the generated credentials
        self._server = None
        self._made_bucket = False
        self._crc: list[int] = []  # the pool's CRC-32s, by index
        self._verified = 0
        self._lock = threading.Lock()
        self._delete_next = itertools.count()
        self.access = trial.run.access or AccessConfig()  # None from older call sites
        # the pool and the operations a mixed trial needs (settings.mixed, read by the
        # helpers that see only the settings); travels with the settings to client shards
        settings._mixed = bool(getattr(trial.run, "mix", ()))
        self._skewed = self.access.distribution != "uniform"
        self._space: WriteSpace | None = None  # a mix's puts and deletes, per process
        self._workers: list[_Worker] = []

    @classmethod
    def headline(cls, settings: S3Settings) -> Literal["requests", "size"]:
        return "size" if settings.op in ("put", "get") else "requests"

    @classmethod
    def headline_for(cls, settings: S3Settings, run) -> Literal["requests", "size"]:
        # A mix moves bytes in GETs and PUTs and none in HEAD, LIST, DELETE: no one
        # byte rate stands for it. Each class's MiB/s is in its own figures.
        if run is not None and run.mix:
            return "requests"
        return cls.headline(settings)

    # -- config ------------------------------------------------------------------
    @classmethod
    def check(cls, settings: S3Settings, run) -> None:
        super().check(settings, run)
        s = settings
        size = int(s.object_size)
        if not 1 <= size <= MAX_OBJECT:
            raise ConfigRefused(
                "service.object_size", s.object_size, "from 1 B to 5 TiB (S3's largest object)"
            )
        if size >= s.multipart_threshold:
            if not MIN_PART <= s.part_size <= MAX_PART:
                raise ConfigRefused(
                    "service.part_size", s.part_size, "from 5 MiB to 5 GiB (S3's part limits)"
                )
            parts = math.ceil(size / s.part_size)
            if parts > MAX_PARTS:
                raise ConfigRefused(
                    "service.part_size",
                    s.part_size,
                    f"{parts} parts for a {size} B object; S3 allows 10000: at least "
                    f"{math.ceil(size / MAX_PARTS)} B",
                )
        elif size > MAX_SINGLE_PUT:
            raise ConfigRefused(
                "service.multipart_threshold",
                s.multipart_threshold,
                "objects over 5 GiB must be multipart: lower the threshold",
            )
        if s.chunk_size < 1:
            raise ConfigRefused("service.chunk_size", s.chunk_size, "at least 1 B")
        if s.mode == "embedded":
            for key in ("endpoint_url", "profile"):
                if getattr(s, key):
                    raise ConfigRefused(f"service.{key}", getattr(s, key), "only for mode=server")
        elif s.embedded_dir:
            raise ConfigRefused("service.embedded_dir", s.embedded_dir, "only for mode=embedded")
        if s.op == "delete" and run.clients > 1 and not run.mix:
            raise ConfigRefused(
                "clients", run.clients, "op=delete takes objects from one pool: use clients=1"
            )

    # -- setup ---------------------------------------------------------------------
    def setup(self) -> None:
        s = self.settings
        if s.mode == "embedded":
            from benchflow.sut.embedded import EmbeddedS3

            with self.trial.phase("server_start"):
                self._server = EmbeddedS3(
                    logs_dir=self.trial.logs_dir, data_dir=s.embedded_dir, region=s.region
                ).start()
            self.endpoint_url = self._server.endpoint_url
            self._creds = {
                "aws_access_key_id": self._server.access_key,
                "aws_secret_access_key": self._server.secret_key,
            }
        self._ensure_bucket(self._client(pool=1))
        if self._skewed and not s.mixed and s.op in ("list", "delete"):
            what = "lists the pool" if s.op == "list" else "deletes the pool in order"
            self.trial.notes.append(
                f"s3: op={s.op} {what}, it picks no object: access.distribution does not apply"
            )
        # A mix's GET, HEAD and LIST read the pool (its puts and deletes have a space of
        # their own, keys.WriteSpace); which classes it draws is not known here.
        if s.op != "put" or s.mixed:
            self._prepare_pool(
                self._client(
                    pool=_PREPARE_THREADS + s.part_concurrency,
                    retries=max(s.retries, _PREPARE_RETRIES),
                )
            )

    # -- workers -------------------------------------------------------------------
    def open_worker(self, worker: int) -> _Worker:
        s = self.settings
        multipart = (s.op == "put" or s.mixed) and self.size >= s.multipart_threshold
        parts = (
            ThreadPoolExecutor(s.part_concurrency, thread_name_prefix=f"bf-s3-w{worker}")
            if multipart
            else None
        )
        rng = random.Random(self.trial.run.seed * 1_000_003 + worker)
        # one key stream per worker; the hot objects are the same for all
        keys = (
            KeyChooser(s.objects, self.access, self.trial.run.seed, stream=worker)
            if self._skewed
            else None
        )
        w = _Worker(worker, self._client(pool=s.part_concurrency + 2), rng, parts, keys)
        self._workers.append(w)
        return w

    def _write_space(self) -> WriteSpace:
        """This process's write space for a mix's puts and deletes (made at first use:
        client processes each make their own)."""
        if self._space is None:
            with self._lock:
                if self._space is None:
                    self._space = WriteSpace(self.settings.objects, secrets.token_hex(4))
        return self._space

    def close_worker(self, state: _Worker) -> None:
        if state.parts is not None:
            state.parts.shutdown(wait=False, cancel_futures=True)
        state.client.close()

    def measure_start(self) -> None:
        with self._lock:
            self._verified = 0
        for w in self._workers:  # between the phases: no request is in flight
            w.hits = {}
        if self._space is not None:
            self._space.redirects = self._space.missing_deletes = 0

    def measure_end(self) -> dict[str, float]:
        s = self.settings
        out = {"s3.object_bytes": float(self.size)}
        # Counted where the requests ran: with clients>1, in processes of their own.
        if (s.op == "get" or s.mixed) and self._workers:
            out["s3.verified_gets"] = float(self._verified)
        if (s.op == "put" or s.mixed) and self.size >= s.multipart_threshold:
            out["s3.parts_per_object"] = float(math.ceil(self.size / s.part_size))
        # Which objects the window's requests touched, per class.
        hits: dict = {}
        for w in self._workers:
            for cls, counts in w.hits.items():
                hits.setdefault(cls, type(counts)()).update(counts)
        figures, detail = key_figures(hits)
        out.update(figures)
        if detail:
            self.trial.custom["s3.keys"] = detail
        space = self._space
        if space is not None:
            out["s3.mix.put_key_redirects"] = float(space.redirects)
            out["s3.mix.missing_deletes"] = float(space.missing_deletes)
            out["s3.mix.live_objects"] = float(space.live)
            if space.missing_deletes:
                self.trial.notes.append(
                    f"s3: {space.missing_deletes} of the mix's deletes found no object its "
                    "puts had written and deleted a key holding none (S3 answers it as any "
                    "delete): give put at least delete's weight"
                )
        return out

    def sut_pids(self) -> list[int]:
        return self._server.pids() if self._server is not None else []

    def teardown(self) -> None:
        try:
            if self._server is None and self.settings.cleanup and self.bucket:
                self._cleanup()
        except Exception as exc:
            log.warning("could not clean up %s/%s: %s", self.bucket, self.base, _describe(exc))
        finally:
            if self._server is not None:
                self._server.stop()  # its directory (every object) goes with it
                self._server = None

    def __getstate__(self):
        # Client processes get the endpoint and credentials, not the server object.
        state = dict(self.__dict__)
        state.update(_server=None, _lock=None, _delete_next=None, _space=None, _workers=[])
        return state

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._delete_next = itertools.count()
