"""The object pool GET, HEAD, LIST and DELETE work on, written during setup."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

from drivers.base import DriverError
from drivers.storage.s3.errors import _describe
from drivers.storage.s3.operations import _Worker
from drivers.storage.s3.settings import MiB

_PREPARE_THREADS = 8  # objects written at once while preparing the pool
# Writing the pool is set-up, not measurement: a transient error there (a loaded server's
# 500 or reset) is retried rather than failing the trial. Measured requests keep
# `service.retries` (0 by default), so every error of the window is counted.
_PREPARE_RETRIES = 3


class ObjectPool:
    """Pool keys and their contents: a base of :class:`~drivers.storage.s3.driver.S3Driver`,
    which writes the pool with the ``_upload`` that measured PUTs use (phase ``prepare``)."""

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
        if (s.op == "get" or s.mixed) and s.verify_fraction > 0:
            self._crc = [self.payload.crc32(self._offset(i), self.size) for i in range(s.objects)]
