"""The measured requests: put, get, head, list, delete — one per ``service.op``, or
each request's own with a mix (``ctx.cls``)."""

from __future__ import annotations

import contextlib
import math
import random
import time
import zlib
from collections import Counter
from typing import Any

from drivers.base import DriverError


class _Worker:
    __slots__ = ("client", "hits", "index", "keys", "n", "parts", "rng")

    def __init__(self, index: int, client, rng: random.Random, parts, keys=None) -> None:
        self.index, self.client, self.rng, self.parts = index, client, rng, parts
        # the access law's keys (benchflow.workload.keys.KeyChooser) when it is skewed;
        # None: uniform, drawn from ``rng`` as before the law existed (same objects)
        self.keys = keys
        self.n = 0  # requests done by this worker
        self.hits: dict[str, Counter] = {}  # class -> key index -> requests


class Operations:
    """The requests: a base of :class:`~drivers.storage.s3.driver.S3Driver`, whose
    ``payload``, pool keys (``_pool_key``, ``_offset``), CRCs (``_crc``) and a mix's
    write space (``_write_space()``, :class:`~drivers.storage.s3.keys.WriteSpace`)
    they use."""

    def operation(self, ctx) -> int:
        w: _Worker = ctx.state
        s = self.settings
        op = ctx.cls or s.op
        w.n += 1
        if op == "get":
            i = self._pool_pick(w)
            self._hit(w, op, i)
            return self._download(w, i, ctx)
        if op == "head":
            i = self._pool_pick(w)
            self._hit(w, op, i)
            w.client.head_object(Bucket=self.bucket, Key=self._pool_key(i))
            return 0
        if op == "list":
            w.client.list_objects_v2(
                Bucket=self.bucket, Prefix=f"{self.base}/pool/", MaxKeys=s.list_max_keys
            )
            return 0
        if ctx.cls is not None:
            return self._mix_put(w, ctx) if op == "put" else self._mix_delete(w)
        if op == "put":
            if w.keys is None:  # round robin: every key written in turn
                i = ((w.n - 1) * self.trial.run.concurrency + w.index) % s.objects
            else:
                i = w.keys.next()
            self._hit(w, op, i)
            key = f"{self.base}/put/{i:07d}"
            return self._upload(w, key, i + s.objects, ctx)
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

    def _pool_pick(self, w: _Worker) -> int:
        """The pool object a GET or HEAD reads: the access law's, or uniform."""
        return w.rng.randrange(self.settings.objects) if w.keys is None else w.keys.next()

    @staticmethod
    def _hit(w: _Worker, cls: str, i: int) -> None:
        counts = w.hits.get(cls)
        if counts is None:
            counts = w.hits[cls] = Counter()
        counts[i] += 1

    # -- a mix's writes: their own key space (drivers.storage.s3.keys.WriteSpace) -----
    def _mix_key(self, j: int) -> str:
        return f"{self.base}/mix/{self._space.tag}/{j:07d}"

    def _mix_put(self, w: _Worker, ctx) -> int:
        space = self._write_space()
        j = space.claim_put(None if w.keys is None else w.keys.next())
        if j is None:
            raise DriverError(
                f"all {space.n} keys of the mix's write space are held by requests in "
                "flight: raise service.objects above concurrency",
                "key_space_busy",
            )
        self._hit(w, "put", j)
        try:
            return self._upload(w, self._mix_key(j), j + self.settings.objects, ctx)
        finally:
            space.wrote(j)

    def _mix_delete(self, w: _Worker) -> int:
        space = self._write_space()
        j = space.claim_delete()
        if j is None:
            raise DriverError(
                f"all {space.n} keys of the mix's write space are held by requests in "
                "flight: raise service.objects above concurrency",
                "key_space_busy",
            )
        self._hit(w, "delete", j)
        try:
            w.client.delete_object(Bucket=self.bucket, Key=self._mix_key(j))
        finally:
            space.deleted(j)
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
