"""``fileio``: sequential or random reads and writes on one file, like fio's psync engine.

Each worker (``concurrency`` threads) has its own file descriptor and buffer and
does ``pread``/``pwrite`` of ``block_size_kb`` at an offset. Sequential workers
share one cursor (the file is read or written front to back, wrapping around);
random workers draw block offsets from the seed: uniformly, or by the trial's
access law (``access.distribution=zipfian``, ``access.theta``: fio's
``random_distribution=zipf:theta``; hotspot, latest) through one
:class:`~benchflow.workload.keys.KeyChooser` per worker over the file's blocks.
With a mix (``mix={read: 0.7, write: 0.3}``) each request reads or writes as its
class says (``op`` is then unused), like fio's ``rw=randrw`` with ``rwmixread=70``.
The figures are MiB/s (headline; reads and writes both move blocks), IOPS
(``rates.requests_per_s``) and latency per block.

Whether a figure measures the device or the page cache is stated, not guessed:

- ``direct=true`` opens the file with ``O_DIRECT`` (aligned buffers, block sizes
  a multiple of 4 KiB): the page cache is bypassed. A filesystem that refuses
  ``O_DIRECT`` (some FUSE and network filesystems) fails the trial with error
  class ``direct_io_unsupported``, naming the filesystem.
- Otherwise reads go through the page cache. ``drop_cache=true`` (default)
  evicts this file's pages just before the measured window with
  ``posix_fadvise(DONTNEED)`` (works unprivileged, unlike ``drop_caches``), and
  the share of the file resident in the cache is measured (``mincore``) at the
  start and the end of the window (``extra.fileio.cached_fraction_*``); the
  trial's notes say whether the result is a cached, uncached or mixed one.
- ``exceed_page_cache=true`` makes the file larger than ``page_cache_budget_mb``
  (default: this machine's or container's memory), so it cannot all stay cached.
- Writes without ``fsync`` or ``direct`` land in the page cache (and say so).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import itertools
import logging
import mmap
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np
import psutil
from pydantic import Field

from benchflow.workload.keys import AccessConfig, KeyChooser
from drivers.base import ConfigRefused, Driver, DriverError, ServiceSettings

log = logging.getLogger("drivers.storage.fileio")

_FILL_CHUNK = 8 << 20
_ALIGN = 4096  # O_DIRECT: offsets, sizes and buffers aligned to the logical block (<= 4 KiB)
_EXCEED_FACTOR = 1.25  # exceed_page_cache: the file is this much larger than the budget


class FileIOSettings(ServiceSettings):
    dir: str = Field(..., description="directory for the test file")
    file_name: str | None = Field(
        None, description="a fixed file name in dir (reused if big enough, kept); null: a temp file"
    )
    file_size_mb: float = Field(256, gt=0)
    block_size_kb: float = Field(1024, gt=0)
    pattern: Literal["seq", "rand"] = "seq"
    op: Literal["read", "write"] = "read"
    fsync: Literal["never", "each", "end"] = "never"
    direct: bool = Field(False, description="O_DIRECT: bypass the page cache")
    drop_cache: bool = Field(True, description="evict the file's cached pages before the window")
    page_cache_budget_mb: float | None = Field(
        None, gt=0, description="memory the page cache may use; null: this machine's/container's"
    )
    exceed_page_cache: bool = Field(False, description="make the file larger than the budget")
    keep_file: bool = False


class FileIODriver(Driver):
    name = "fileio"
    family = "storage"
    description = "sequential/random file reads and writes (pread/pwrite, O_DIRECT), MiB/s and IOPS"
    Settings = FileIOSettings
    size_unit = "bytes"
    throughput_basis = "size"
    mix_classes = ("read", "write")  # each request's own op (fio's rw=randrw, rwmixread)

    settings: FileIOSettings

    def __init__(self, settings: FileIOSettings, trial) -> None:
        super().__init__(settings, trial)
        self.block = int(settings.block_size_kb * 1024)
        self.budget_mb = settings.page_cache_budget_mb or memory_limit_mb()
        size_mb = settings.file_size_mb
        if settings.exceed_page_cache:
            size_mb = max(size_mb, self.budget_mb * _EXCEED_FACTOR)
        self.nblocks = max(1, int(size_mb * (1 << 20)) // self.block)
        self.path: Path | None = None
        self._cursor = itertools.count()
        self._temp = settings.file_name is None
        self._cached_start: float | None = None
        self.access = trial.run.access or AccessConfig()  # None from older call sites
        # What the requests did (read, write): a mix is known only from its requests,
        # and the final fsync and the page-cache note follow what was done.
        self._done: set[str] = set()

    @property
    def file_bytes(self) -> int:
        return self.nblocks * self.block

    @classmethod
    def check(cls, settings: FileIOSettings, run) -> None:
        super().check(settings, run)
        if settings.block_size_kb * 1024 > settings.file_size_mb * (1 << 20):
            raise ConfigRefused(
                "service.block_size_kb", settings.block_size_kb, "must not exceed file_size_mb"
            )
        if settings.direct and (settings.block_size_kb * 1024) % _ALIGN:
            raise ConfigRefused(
                "service.block_size_kb",
                settings.block_size_kb,
                "direct=true needs a multiple of 4 KiB (O_DIRECT alignment)",
            )
        if settings.file_name is not None and (
            "/" in settings.file_name or settings.file_name in ("", ".", "..")
        ):
            raise ConfigRefused(
                "service.file_name", settings.file_name, "a plain file name (no directories)"
            )
        access = run.access or AccessConfig()
        if access.distribution != "uniform" and settings.pattern == "seq":
            # a shared cursor walks the file in order: there is no offset to draw
            raise ConfigRefused(
                "access.distribution",
                access.distribution,
                "fileio draws offsets only with service.pattern=rand (seq walks the file "
                "front to back)",
            )

    # -- setup -------------------------------------------------------------------
    def setup(self) -> None:
        s = self.settings
        d = Path(s.dir)
        d.mkdir(parents=True, exist_ok=True)
        if s.file_name is None:
            fd, name = tempfile.mkstemp(prefix="benchflow-", suffix=".dat", dir=d)
            self.path = Path(name)
        else:
            self.path = d / s.file_name
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        size = self.file_bytes
        with self.trial.phase("prepare") as figures:
            # Reads need data on disk (not a sparse hole); writes get a preallocated file.
            have = os.fstat(fd).st_size
            written = 0
            if have < size:
                chunk = random.Random(self.trial.run.seed).randbytes(min(_FILL_CHUNK, size))
                written = have
                while written < size:
                    written += os.pwrite(fd, chunk[: size - written], written)
                os.fsync(fd)
                written -= have
            os.close(fd)
            figures["bytes"] = float(written)
        if s.direct:
            self._probe_direct()
        self.trial.extra["fileio.file_mb"] = size / (1 << 20)
        self.trial.extra["fileio.page_cache_budget_mb"] = self.budget_mb
        self.trial.extra["fileio.direct"] = 1.0 if s.direct else 0.0

    def _probe_direct(self) -> None:
        """Open and read one block with O_DIRECT: a refusal becomes a clear error."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECT)
            try:
                buf = mmap.mmap(-1, self.block)
                os.preadv(fd, [buf], 0)
            finally:
                os.close(fd)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            fs = filesystem_of(self.path)
            raise DriverError(
                f"direct I/O (O_DIRECT) refused by the {fs} filesystem holding {self.path.parent} "
                f"({os.strerror(exc.errno)}): use direct=false (page cache) or a dir on a "
                "filesystem that supports it",
                "direct_io_unsupported",
            ) from None

    # -- workers -----------------------------------------------------------------
    def open_worker(self, worker: int):
        flags = os.O_RDWR | (os.O_DIRECT if self.settings.direct else 0)
        fd = os.open(self.path, flags)
        # An anonymous mapping is page-aligned, as O_DIRECT requires.
        buf = mmap.mmap(-1, self.block)
        buf.write(random.Random(worker).randbytes(self.block))
        # pick() is the block index of the worker's next request
        if self.settings.pattern == "seq":
            pick = self._next_seq_block
        elif self.access.distribution != "uniform":
            # one stream per worker; every worker shares the same hot blocks
            pick = KeyChooser(self.nblocks, self.access, self.trial.run.seed, stream=worker).next
        else:  # uniform: the same blocks as before the access law existed
            rng = random.Random(self.trial.run.seed * 1_000_003 + worker)
            pick = functools.partial(rng.randrange, self.nblocks)
        return fd, buf, pick

    def _next_seq_block(self) -> int:
        return next(self._cursor) % self.nblocks

    def close_worker(self, state) -> None:
        fd, buf, _ = state
        if self._did("write") and self.settings.fsync == "end":
            os.fsync(fd)
        os.close(fd)
        buf.close()

    def operation(self, ctx) -> int:
        fd, buf, pick = ctx.state
        off = pick() * self.block
        op = ctx.cls or self.settings.op
        self._done.add(op)
        if op == "read":
            n = os.preadv(fd, [buf], off)
        else:
            n = os.pwritev(fd, [buf], off)
            if self.settings.fsync == "each":
                os.fsync(fd)
        return n

    # -- the page cache around the window ------------------------------------------
    def measure_start(self) -> None:
        s = self.settings
        fd = os.open(self.path, os.O_RDONLY)
        try:
            # Warm-up's dirty pages are written back now, not during the window (and
            # dirty pages could not be dropped).
            os.fsync(fd)
            if s.direct:
                return
            if s.drop_cache:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            self._cached_start = cached_fraction(fd, self.file_bytes)
        finally:
            os.close(fd)

    def measure_end(self) -> dict[str, float]:
        s = self.settings
        out: dict[str, float] = {}
        fd = os.open(self.path, os.O_RDONLY)
        try:
            if self._did("write") and s.fsync == "end":
                # The closing fsync happens after the window; its time is reported apart.
                t0 = time.perf_counter()
                os.fsync(fd)
                out["fileio.end_fsync_s"] = time.perf_counter() - t0
            end = None if s.direct else cached_fraction(fd, self.file_bytes)
        finally:
            os.close(fd)
        if s.direct:
            self.trial.notes.append(
                "fileio: direct I/O (O_DIRECT): the page cache was bypassed; the result is uncached"
            )
            return {**out, "fileio.cached_fraction_start": 0.0, "fileio.cached_fraction_end": 0.0}
        start = self._cached_start
        self.trial.notes.append(self._cache_note(start, end, out.get("fileio.end_fsync_s")))
        if end is not None:
            out["fileio.cached_fraction_end"] = end
        if start is not None:
            out["fileio.cached_fraction_start"] = start
        return out

    def _did(self, op: str) -> bool:
        """Whether the trial's requests did ``op``: those of this process, or, when
        they all ran in client processes (``clients>1``), what ``service.op`` says."""
        return op in self._done if self._done else self.settings.op == op

    def _cache_note(self, start: float | None, end: float | None, end_fsync: float | None) -> str:
        s = self.settings
        size_mb = self.file_bytes / (1 << 20)
        fits = size_mb <= self.budget_mb
        where = f"file {size_mb:.0f} MiB, page-cache budget {self.budget_mb:.0f} MiB"
        if start is not None and end is not None:
            where += f"; cached {start:.0%} at the window's start, {end:.0%} at its end"
        reads = self._did("read")
        if self._did("write"):
            if s.fsync == "each":
                writes = "buffered writes with fsync after each: device-bound"
            else:
                writes = (
                    f"buffered writes (fsync={s.fsync}) land in the page cache: the result "
                    "is cached, not the device's speed"
                )
            if reads:  # a mix: its reads may find what its writes left in the cache
                return (
                    f"fileio: reads and writes mixed: {writes}; reads may be served from "
                    f"the page cache the writes filled ({where})"
                )
            if s.fsync == "each":
                return f"fileio: {writes} ({where})"
            tail = (
                f"; the final fsync took {end_fsync:.2f} s after the window"
                if end_fsync is not None
                else ""
            )
            return f"fileio: {writes} ({where}){tail}"
        if start is None or end is None:
            verdict = "cache state unknown (mincore failed)"
        elif start >= 0.9:
            verdict = "cached: the file was in the page cache when the window started"
        elif end <= 0.1:
            verdict = "uncached: the page cache held almost none of the file"
        else:
            verdict = "mixed: part of the reads were served from the page cache"
            if fits:
                verdict += (
                    " (the file fits in the page-cache budget: exceed_page_cache=true or "
                    "direct=true give uncached figures)"
                )
        return f"fileio: buffered reads, {verdict} ({where})"

    def teardown(self) -> None:
        if self.path and self._temp and not self.settings.keep_file:
            self.path.unlink(missing_ok=True)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cursor"] = None  # each client process keeps its own cursor
        return state

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self._cursor = itertools.count()


# -- facts about this machine ------------------------------------------------------
def memory_limit_mb() -> float:
    """The memory the page cache can use at most: the machine's, or the container's limit."""
    total = psutil.virtual_memory().total
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total / (1 << 20)


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding ``path`` (e.g. ext4, tmpfs, fuse.sshfs)."""
    best, fstype = "", "unknown"
    target = str(path.resolve())
    for part in psutil.disk_partitions(all=True):
        mp = part.mountpoint
        if (target == mp or target.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
            best, fstype = mp, part.fstype
    return fstype


_libc = None


def cached_fraction(fd: int, size: int) -> float | None:
    """The share of the first ``size`` bytes of ``fd`` resident in the page cache (mincore)."""
    global _libc
    if size <= 0:
        return 0.0
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            _libc.mmap.restype = ctypes.c_void_p
            _libc.mmap.argtypes = [
                ctypes.c_void_p,
                ctypes.c_size_t,
                ctypes.c_int,
                ctypes.c_int,
                ctypes.c_int,
                ctypes.c_long,
            ]
            _libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
            _libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
            vec = (ctypes.c_ubyte * pages)()
            if _libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
                return None
            # Bit 0 of each byte: the page is resident.
            return float((np.frombuffer(vec, dtype=np.uint8) & 1).mean())
        finally:
            _libc.munmap(ctypes.c_void_p(addr), size)
    except (OSError, AttributeError):
        return None
