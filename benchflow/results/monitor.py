"""Host, SUT-process and GPU sampling while a trial runs (1 s by default).

Figures (all sampled every ``interval_s``):

- ``host.cpu_util``: busy fraction of all cores (0–1); ``host.ram_mb``: used memory.
- ``sut.cpu_util``: CPU of the SUT's process tree as a fraction of all cores;
  ``sut.ram_mb``: its summed RSS. For an in-process SUT the tree is this process.
- ``harness.cpu_util`` / ``harness.ram_mb``: the load generator (this process and
  its client processes), to tell a saturated client from a saturated server.
- ``gpu.util`` (mean over visible GPUs, 0–1) and ``gpu.mem_mb`` (sum) via NVML;
  no NVML or no GPU means no GPU figures, never an error.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

log = logging.getLogger("benchflow.monitor")

FIELDS = (
    "host.cpu_util",
    "host.ram_mb",
    "sut.cpu_util",
    "sut.ram_mb",
    "harness.cpu_util",
    "harness.ram_mb",
    "gpu.util",
    "gpu.mem_mb",
)


class _Tree:
    """CPU time and RSS of a set of process trees, differenced between samples."""

    def __init__(self, roots: Callable[[], list[int]]) -> None:
        self.roots = roots
        self.prev: dict[int, float] = {}

    def sample(self, dt: float, ncpu: int) -> tuple[float | None, float | None]:
        procs: dict[int, psutil.Process] = {}
        for pid in self.roots():
            try:
                root = psutil.Process(pid)
                procs[pid] = root
                for child in root.children(recursive=True):
                    procs[child.pid] = child
            except psutil.Error:
                continue
        if not procs:
            return None, None
        busy, rss, now = 0.0, 0, {}
        for pid, p in procs.items():
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    cpu = t.user + t.system
                    rss += p.memory_info().rss
            except psutil.Error:
                continue
            now[pid] = cpu
            if pid in self.prev:
                busy += max(0.0, cpu - self.prev[pid])
        first = not self.prev
        self.prev = now
        util = None if first or dt <= 0 else busy / (dt * ncpu)
        return util, rss / 2**20


class _Gpus:
    def __init__(self) -> None:
        self.handles = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            count = pynvml.nvmlDeviceGetCount()
            idx = range(count)
            if visible and all(v.strip().isdigit() for v in visible.split(",")):
                idx = [int(v) for v in visible.split(",") if int(v) < count]
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in idx]
        except Exception as exc:  # no NVML library, no driver, no device
            log.debug("no GPU metrics: %s", exc)

    def sample(self) -> tuple[float | None, float | None]:
        if not self.handles:
            return None, None
        try:
            utils = [self.nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100 for h in self.handles]
            mem = [self.nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20 for h in self.handles]
        except Exception as exc:
            log.debug("GPU sample failed: %s", exc)
            return None, None
        return sum(utils) / len(utils), sum(mem)


@dataclass
class Sample:
    t: float  # wall clock, seconds since the epoch
    values: dict[str, float | None] = field(default_factory=dict)
    # the SUT's own figures (the driver's server_sample(): queue length, cache use)
    server: dict[str, float] = field(default_factory=dict)


class Monitor:
    """Samples in a background thread from :meth:`start` to :meth:`stop`."""

    def __init__(
        self,
        interval_s: float = 1.0,
        sut_pids: Callable[[], list[int]] | None = None,
        harness_pids: Callable[[], list[int]] | None = None,
        gpu: bool = True,
        server: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        self.interval_s = interval_s
        self._server = server
        me = os.getpid()
        self._sut = _Tree(lambda: (sut_pids() if sut_pids else []) or [me])
        self._harness = _Tree(harness_pids or (lambda: [me]))
        self.sut_in_process = sut_pids is None
        self._gpu_enabled = gpu
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ncpu = psutil.cpu_count() or 1

    def start(self) -> Monitor:
        self._gpus = _Gpus() if self._gpu_enabled else None
        psutil.cpu_percent(None)  # prime the host counter
        self._last = time.monotonic()
        self._sample_once()  # baseline for the process trees
        self.samples.clear()
        self._thread = threading.Thread(target=self._loop, name="bf-monitor", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._sample_once()
            except Exception as exc:  # a failed sample is a gap, not a failed trial
                log.debug("monitor sample failed: %s", exc)

    def _sample_once(self) -> None:
        now = time.monotonic()
        dt, self._last = now - self._last, now
        vm = psutil.virtual_memory()
        sut_cpu, sut_rss = self._sut.sample(dt, self.ncpu)
        h_cpu, h_rss = self._harness.sample(dt, self.ncpu)
        g_util, g_mem = self._gpus.sample() if self._gpus else (None, None)
        server: dict[str, float] = {}
        if self._server is not None:
            try:
                server = {k: float(v) for k, v in self._server().items() if v is not None}
            except Exception as exc:  # a SUT that does not answer now: a gap in its series
                log.debug("server sample failed: %s", exc)
        self.samples.append(
            Sample(
                time.time(),
                {
                    "host.cpu_util": psutil.cpu_percent(None) / 100,
                    "host.ram_mb": (vm.total - vm.available) / 2**20,
                    "sut.cpu_util": sut_cpu,
                    "sut.ram_mb": sut_rss,
                    "harness.cpu_util": h_cpu,
                    "harness.ram_mb": h_rss,
                    "gpu.util": g_util,
                    "gpu.mem_mb": g_mem,
                },
                server,
            )
        )

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread:
            self._thread.join(self.interval_s + 5)
        return self.samples

    @staticmethod
    def summarize(samples: list[Sample], start: float, end: float) -> dict[str, dict[str, float]]:
        """min/avg/max of each figure over samples taken inside [start, end] (wall s)."""
        out: dict[str, dict[str, float]] = {}
        inside = [s for s in samples if start <= s.t <= end + 0.5]
        for name in FIELDS:
            vals = [s.values[name] for s in inside if s.values.get(name) is not None]
            if vals:
                out[name] = {"min": min(vals), "avg": sum(vals) / len(vals), "max": max(vals)}
        return out
