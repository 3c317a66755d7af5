"""The measured requests: one per ``service.op`` (put, get, head, list, delete)."""

from __future__ import annotations

import contextlib
import math
import random
import time
import zlib
from typing import Any

from drivers.base import DriverError


class _Worker:
    __slots__ = ("client", "index", "n", "parts", "rng")

    def __init__(self, index: int, client, rng: random.Random, parts) -> None:
        self.index, self.client, self.rng, self.parts = index, client, rng, parts
        self.n = 0  # requests done by this worker


class Operations:
    """The requests: a base of :class:`~drivers.storage.s3.driver.S3Driver`, whose
    ``payload``, pool keys (``_pool_key``, ``_offset``) and CRCs (``_crc``) they use."""

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
