"""``fileio``: sequential or random reads and writes on one file, like fio's psync engine.

Each worker has its own file descriptor and buffer; ``pread``/``pwrite`` at an
offset. Sequential workers share one cursor (the file is read or written front
to back, wrapping around); random workers draw block offsets from the seed.
The figures are MiB/s (headline), IOPS, and latency per block.
"""

from __future__ import annotations

import itertools
import os
import random
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field

from drivers.base import ConfigRefused, Driver, ServiceSettings

_FILL_CHUNK = 8 << 20


class FileIOSettings(ServiceSettings):
    dir: str = Field(..., description="directory for the test file")
    file_size_mb: float = Field(256, gt=0)
    block_size_kb: float = Field(1024, gt=0)
    pattern: Literal["seq", "rand"] = "seq"
    op: Literal["read", "write"] = "read"
    fsync: Literal["never", "each", "end"] = "never"
    keep_file: bool = False


class FileIODriver(Driver):
    name = "fileio"
    family = "storage"
    description = "sequential/random file reads and writes (pread/pwrite), MiB/s and IOPS"
    Settings = FileIOSettings
    size_unit = "bytes"
    throughput_basis = "size"

    settings: FileIOSettings

    def __init__(self, settings: FileIOSettings, trial) -> None:
        super().__init__(settings, trial)
        self.block = int(settings.block_size_kb * 1024)
        self.nblocks = max(1, int(settings.file_size_mb * (1 << 20)) // self.block)
        self.path: Path | None = None
        self._cursor = itertools.count()

    @classmethod
    def check(cls, settings: FileIOSettings, run) -> None:
        super().check(settings, run)

        if settings.block_size_kb * 1024 > settings.file_size_mb * (1 << 20):
            raise ConfigRefused(
                "service.block_size_kb", settings.block_size_kb, "must not exceed file_size_mb"
            )

    def setup(self) -> None:
        s = self.settings
        d = Path(s.dir)
        d.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="benchflow-", suffix=".dat", dir=d)
        self.path = Path(name)
        size = self.nblocks * self.block
        with self.trial.phase("prepare") as figures:
            # Reads need data on disk (not a sparse hole); writes get a preallocated file.
            chunk = random.Random(self.trial.run.seed).randbytes(min(_FILL_CHUNK, size))
            written = 0
            while written < size:
                written += os.write(fd, chunk[: size - written])
            os.fsync(fd)
            os.close(fd)
            figures["bytes"] = size
        self.trial.notes.append(
            "fileio reads go through the page cache: the file was just written, so a read "
            "trial of a file smaller than free memory measures cached reads"
        )

    def open_worker(self, worker: int):
        fd = os.open(self.path, os.O_RDWR)
        buf = bytearray(random.Random(worker).randbytes(self.block))
        rng = random.Random(self.trial.run.seed * 1_000_003 + worker)
        return fd, buf, rng

    def close_worker(self, state) -> None:
        fd = state[0]
        if self.settings.op == "write" and self.settings.fsync == "end":
            os.fsync(fd)
        os.close(fd)

    def operation(self, ctx) -> int:
        fd, buf, rng = ctx.state
        if self.settings.pattern == "seq":
            blk = next(self._cursor) % self.nblocks
        else:
            blk = rng.randrange(self.nblocks)
        off = blk * self.block
        if self.settings.op == "read":
            n = os.preadv(fd, [buf], off)
        else:
            n = os.pwrite(fd, buf, off)
            if self.settings.fsync == "each":
                os.fsync(fd)
        return n

    def teardown(self) -> None:
        if self.path and not self.settings.keep_file:
            self.path.unlink(missing_ok=True)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cursor"] = None  # each client process keeps its own cursor
        return state

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self._cursor = itertools.count()
