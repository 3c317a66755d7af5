"""``s3``: PUT, GET, DELETE, LIST and HEAD against an S3-compatible endpoint (boto3).

Objects are streamed both ways: uploads read from a generated, incompressible
payload (a window over one random block, different for every key) and
downloads are consumed in ``chunk_size`` pieces, so memory stays at a few
chunks per worker whatever the object size (1 KB .. 1 GB and beyond). Objects of
``multipart_threshold`` and more are uploaded in parts of ``part_size``,
``part_concurrency`` at a time, each part timed (``distributions.part``).

GET reports the time to the first byte of the body (``ttfb_ms``) and to the
last (``latency_ms``); a fraction ``verify_fraction`` of GETs recomputes the
object's CRC-32 and compares it with the one computed when it was written (a
mismatch is error class ``checksum_mismatch``). Failed requests are counted by
their S3 error code (``NoSuchKey``, ``SlowDown``, ``AccessDenied``, ...) or by
``connection_error`` / ``timeout``. Retries are off by default: a benchmark
counts errors instead of hiding them in latency.

GET, HEAD, DELETE and LIST work on a pool of ``objects`` objects written during
setup (phase ``prepare``); PUT writes keys of its own, cycling over ``objects``
keys so disk use stays bounded. DELETE consumes the pool: size it to the number
of deletes (``requests=N``).

``mode=embedded`` starts a throwaway server (:class:`benchflow.embedded.EmbeddedS3`)
with generated credentials; ``mode=server`` uses ``endpoint_url`` (null: AWS)
and boto3's own credential chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, ``~/.aws``): credentials are never part of the config.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import math
import random
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import ByteSize, Field

from drivers.base import ConfigRefused, Driver, DriverError, ServiceSettings

log = logging.getLogger("drivers.storage.s3")

MiB = 1 << 20
GiB = 1 << 30
MIN_PART = 5 * MiB  # S3's limits on multipart uploads
MAX_PART = 5 * GiB
MAX_PARTS = 10_000
MAX_SINGLE_PUT = 5 * GiB
MAX_OBJECT = 5 * (1 << 40)
_BLOCK = 4 * MiB  # the random block every payload is a window of
_PREPARE_THREADS = 8  # objects written at once while preparing the pool
# Writing the pool is set-up, not measurement: a transient error there (a loaded server's
# 500 or reset) is retried rather than failing the trial. Measured requests keep
# `service.retries` (0 by default), so every error of the window is counted.
_PREPARE_RETRIES = 3


class S3Settings(ServiceSettings):
    op: Literal["put", "get", "delete", "list", "head"] = "put"
    object_size: ByteSize = Field(ByteSize(MiB), description="1KB, 64MiB, 1GB, ... (B..5TiB)")
    objects: int = Field(64, ge=1, description="pool size (get/head/delete/list), key space (put)")
    multipart_threshold: ByteSize = Field(ByteSize(64 * MiB), description="multipart from here")
    part_size: ByteSize = Field(ByteSize(16 * MiB))
    part_concurrency: int = Field(4, ge=1, le=64)
    chunk_size: ByteSize = Field(ByteSize(MiB), description="read/stream granularity")
    verify_fraction: float = Field(0.1, ge=0, le=1, description="share of GETs checksummed")
    list_max_keys: int = Field(1000, ge=1, le=1000)
    endpoint_url: str | None = Field(None, description="mode=server; null: AWS")
    region: str = "us-east-1"
    profile: str | None = Field(None, description="mode=server: an AWS profile")
    bucket: str | None = Field(None, description="null: a temporary bucket, removed after")
    prefix: str = Field("benchflow", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
    addressing_style: Literal["path", "virtual", "auto"] = "path"
    payload_signing: bool = Field(False, description="SHA-256 of every body in the signature")
    client_checksums: Literal["when_required", "when_supported"] = "when_required"
    connect_timeout_s: float = Field(5, gt=0)
    read_timeout_s: float = Field(60, gt=0)
    retries: int = Field(0, ge=0, le=10, description="retry attempts per request")
    cleanup: bool = Field(True, description="delete what the trial wrote")
    embedded_dir: str | None = Field(None, description="mode=embedded: where objects are kept")


class Payload:
    """Deterministic, incompressible object contents without holding an object in memory.

    The bytes of the object with ``offset`` are the cyclic sequence of one random
    block starting at ``offset``; any stretch is a slice of the block doubled.
    """

    def __init__(self, seed: int, block: int = _BLOCK) -> None:
        data = random.Random(seed).randbytes(block)
        self.block = block
        self._double = memoryview(data + data)

    def chunks(self, offset: int, size: int, chunk: int):
        """The object's bytes in pieces of at most ``chunk`` (memoryviews, no copies)."""
        pos, left = offset % self.block, size
        while left > 0:
            n = min(chunk, left, self.block)
            yield self._double[pos : pos + n]
            pos = (pos + n) % self.block
            left -= n

    def crc32(self, offset: int, size: int) -> int:
        crc = 0
        for piece in self.chunks(offset, size, self.block):
            crc = zlib.crc32(piece, crc)
        return crc

    def reader(self, offset: int, size: int) -> PayloadReader:
        return PayloadReader(self, offset, size)


class PayloadReader(io.RawIOBase):
    """A seekable file-like body over a :class:`Payload` window (what boto3 uploads)."""

    def __init__(self, payload: Payload, offset: int, size: int) -> None:
        self._p, self._offset, self._size, self._pos = payload, offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, min(self._size, base + pos))
        return self._pos

    def readinto(self, buf) -> int:
        n = min(len(buf), self._size - self._pos, self._p.block)
        if n <= 0:
            return 0
        start = (self._offset + self._pos) % self._p.block
        buf[:n] = self._p._double[start : start + n]
        self._pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._size - self._pos
        n = min(size, self._size - self._pos, self._p.block)
        if n <= 0:
            return b""
        start = (self._offset + self._pos) % self._p.block
        self._pos += n
        return bytes(self._p._double[start : start + n])

    def __len__(self) -> int:
        return self._size


class _Worker:
    __slots__ = ("client", "index", "n", "parts", "rng")

    def __init__(self, index: int, client, rng: random.Random, parts) -> None:
        self.index, self.client, self.rng, self.parts = index, client, rng, parts
        self.n = 0  # requests done by this worker


class S3Driver(Driver):
    name = "s3"
    family = "storage"
    description = "S3 PUT/GET/DELETE/LIST/HEAD (boto3), streamed objects, multipart, checksums"
    Settings = S3Settings
    size_unit = "bytes"
    throughput_basis = "size"
    client_library = "boto3"

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

    @classmethod
    def headline(cls, settings: S3Settings) -> Literal["requests", "size"]:
        return "size" if settings.op in ("put", "get") else "requests"

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
        if s.op == "delete" and run.clients > 1:
            raise ConfigRefused(
                "clients", run.clients, "op=delete takes objects from one pool: use clients=1"
            )

    # -- setup ---------------------------------------------------------------------
    def setup(self) -> None:
        s = self.settings
        if s.mode == "embedded":
            from benchflow.embedded import EmbeddedS3

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
        if s.op != "put":
            self._prepare_pool(
                self._client(
                    pool=_PREPARE_THREADS + s.part_concurrency,
                    retries=max(s.retries, _PREPARE_RETRIES),
                )
            )

    def _client(self, pool: int, retries: int | None = None):
        import boto3
        from botocore.config import Config

        s = self.settings
        config = Config(
            region_name=s.region,
            connect_timeout=s.connect_timeout_s,
            read_timeout=s.read_timeout_s,
            retries={"max_attempts": s.retries if retries is None else retries, "mode": "standard"},
            max_pool_connections=max(10, pool),
            s3={
                "addressing_style": s.addressing_style,
                "payload_signing_enabled": s.payload_signing,
            },
            request_checksum_calculation=s.client_checksums,
            response_checksum_validation=s.client_checksums,
        )
        session = (
            boto3.session.Session(profile_name=s.profile) if s.profile else boto3.session.Session()
        )
        return session.client("s3", endpoint_url=self.endpoint_url, config=config, **self._creds)

    def _ensure_bucket(self, client) -> None:
        s = self.settings
        if self.bucket is None:
            self.bucket = f"benchflow-{self.trial.trial_id[:16]}"
        try:
            if s.bucket is None or s.mode == "embedded":
                kwargs: dict[str, Any] = {"Bucket": self.bucket}
                if s.region != "us-east-1":  # AWS wants the region said outside us-east-1
                    kwargs["CreateBucketConfiguration"] = {"LocationConstraint": s.region}
                try:
                    client.create_bucket(**kwargs)
                    self._made_bucket = s.bucket is None
                except Exception as exc:
                    if self.classify_error(exc) not in (
                        "BucketAlreadyOwnedByYou",
                        "BucketAlreadyExists",
                    ):
                        raise
            # Proves the credentials and the bucket before any load runs.
            client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
        except Exception as exc:
            raise DriverError(
                f"S3 bucket {self.bucket!r} at {self.endpoint_url or 'AWS'}: {_describe(exc)}",
                self.classify_error(exc),
            ) from None

    def _pool_key(self, i: int) -> str:
        return f"{self.base}/pool/{i:07d}"

    def _offset(self, key_index: int) -> int:
        # A different window of the block for every key: no two objects are alike.
        return (key_index * 2_654_435_761) % self.payload.block

    def _prepare_pool(self, client) -> None:
        s = self.settings
        parts = ThreadPoolExecutor(s.part_concurrency, thread_name_prefix="bf-s3-prep")
        t_ops = ThreadPoolExecutor(
            min(_PREPARE_THREADS, s.objects), thread_name_prefix="bf-s3-pool"
        )
        worker = _Worker(-1, client, random.Random(0), parts)
        with self.trial.phase("prepare") as figures:
            try:
                list(
                    t_ops.map(
                        lambda i: self._upload(worker, self._pool_key(i), i, None), range(s.objects)
                    )
                )
            except Exception as exc:
                raise DriverError(
                    f"writing the object pool failed: {_describe(exc)}", self.classify_error(exc)
                ) from None
            finally:
                t_ops.shutdown()
                parts.shutdown()
            figures["objects"] = float(s.objects)
            figures["bytes"] = float(s.objects * self.size)
        figures["MiB_per_s"] = (
            figures["bytes"] / MiB / figures["seconds"] if figures["seconds"] else 0.0
        )
        if s.op == "get" and s.verify_fraction > 0:
            self._crc = [self.payload.crc32(self._offset(i), self.size) for i in range(s.objects)]

    # -- workers -------------------------------------------------------------------
    def open_worker(self, worker: int) -> _Worker:
        s = self.settings
        multipart = s.op == "put" and self.size >= s.multipart_threshold
        parts = (
            ThreadPoolExecutor(s.part_concurrency, thread_name_prefix=f"bf-s3-w{worker}")
            if multipart
            else None
        )
        rng = random.Random(self.trial.run.seed * 1_000_003 + worker)
        return _Worker(worker, self._client(pool=s.part_concurrency + 2), rng, parts)

    def close_worker(self, state: _Worker) -> None:
        if state.parts is not None:
            state.parts.shutdown(wait=False, cancel_futures=True)
        state.client.close()

    def operation(self, ctx) -> int:
        w: _Worker = ctx.state
        s = self.settings
        op = s.op
        w.n += 1
        if op == "put":
            i = ((w.n - 1) * self.trial.run.concurrency + w.index) % s.objects
            key = f"{self.base}/put/{i:07d}"
            return self._upload(w, key, i + s.objects, ctx)
        if op == "get":
            i = w.rng.randrange(s.objects)
            return self._download(w, i, ctx)
        if op == "head":
            w.client.head_object(Bucket=self.bucket, Key=self._pool_key(w.rng.randrange(s.objects)))
            return 0
        if op == "list":
            w.client.list_objects_v2(
                Bucket=self.bucket, Prefix=f"{self.base}/pool/", MaxKeys=s.list_max_keys
            )
            return 0
        # delete: the next object of the pool (a shared counter: next() is atomic)
        i = next(self._delete_next)
        if i >= s.objects:
            raise DriverError(
                f"no objects left to delete: the pool has {s.objects}; raise service.objects "
                "or bound the trial with requests=N",
                "pool_exhausted",
            )
        w.client.delete_object(Bucket=self.bucket, Key=self._pool_key(i))
        return 0

    def _upload(self, w: _Worker, key: str, key_index: int, ctx) -> int:
        s, size, off = self.settings, self.size, self._offset(key_index)
        if size < s.multipart_threshold:
            w.client.put_object(
                Bucket=self.bucket, Key=key, Body=self.payload.reader(off, size), ContentLength=size
            )
            return size
        part = int(s.part_size)
        n_parts = math.ceil(size / part)
        up = w.client.create_multipart_upload(Bucket=self.bucket, Key=key)
        upload_id = up["UploadId"]

        def one(p: int) -> dict[str, Any]:
            start = p * part
            length = min(part, size - start)
            t0 = time.perf_counter_ns()
            r = w.client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=p + 1,
                Body=self.payload.reader(off + start, length),
                ContentLength=length,
            )
            if ctx is not None:
                ctx.observe("part", time.perf_counter_ns() - t0)
            return {"PartNumber": p + 1, "ETag": r["ETag"]}

        try:
            done = list(w.parts.map(one, range(n_parts)))
            w.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
            )
        except BaseException:
            with contextlib.suppress(Exception):  # the original failure is what matters
                w.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        return size

    def _download(self, w: _Worker, i: int, ctx) -> int:
        s = self.settings
        resp = w.client.get_object(Bucket=self.bucket, Key=self._pool_key(i))
        body = resp["Body"]
        verify = s.verify_fraction > 0 and w.rng.random() < s.verify_fraction
        crc, got = 0, 0
        try:
            for chunk in body.iter_chunks(int(s.chunk_size)):
                if not got:
                    ctx.first_byte()
                got += len(chunk)
                if verify:
                    crc = zlib.crc32(chunk, crc)
        finally:
            body.close()
        if got != self.size:
            raise DriverError(f"short read: {got} of {self.size} B", "short_read")
        if verify:
            if crc != self._crc[i]:
                raise DriverError(
                    f"checksum mismatch on {self._pool_key(i)}: crc32 {crc:08x}, "
                    f"written {self._crc[i]:08x}",
                    "checksum_mismatch",
                )
            with self._lock:
                self._verified += 1
        return got

    def measure_start(self) -> None:
        with self._lock:
            self._verified = 0

    def measure_end(self) -> dict[str, float]:
        out = {"s3.object_bytes": float(self.size)}
        if self.settings.op == "get":
            out["s3.verified_gets"] = float(self._verified)
        if self.settings.op == "put" and self.size >= self.settings.multipart_threshold:
            out["s3.parts_per_object"] = float(math.ceil(self.size / self.settings.part_size))
        return out

    def classify_error(self, exc: BaseException) -> str:
        if isinstance(exc, DriverError):
            return exc.error_class
        from botocore import exceptions as bx

        if isinstance(exc, bx.ClientError):
            code = str(exc.response.get("Error", {}).get("Code", "") or "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code.isdigit() or not code:  # HEAD responses have no body to name the error
                code = {403: "AccessDenied", 404: "NotFound"}.get(
                    status or int(code or 0), f"HTTP{code or status}"
                )
            return code
        if isinstance(exc, bx.ConnectTimeoutError | bx.ReadTimeoutError):
            return "timeout"
        if isinstance(
            exc, bx.EndpointConnectionError | bx.ConnectionClosedError | bx.ConnectionError
        ):
            return "connection_error"
        if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
            return "NoCredentials"
        if isinstance(exc, bx.ProfileNotFound):
            return "ProfileNotFound"
        return super().classify_error(exc)

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

    def _cleanup(self) -> None:
        client = self._client(pool=4)
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.base}/"):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
        if self._made_bucket:
            client.delete_bucket(Bucket=self.bucket)

    def __getstate__(self):
        # Client processes get the endpoint and credentials, not the server object.
        state = dict(self.__dict__)
        state.update(_server=None, _lock=None, _delete_next=None)
        return state

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._delete_next = itertools.count()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
