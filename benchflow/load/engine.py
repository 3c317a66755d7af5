"""The load engine: runs a driver's operation in closed or open loop.

Closed loop keeps ``concurrency`` requests in flight. Open loop starts requests
at the intended times of a :class:`~benchflow.load.schedule.Schedule`, with at
most ``concurrency`` in flight; when all are busy the next request starts late
and its latency, measured from the intended time, shows it.

Sync drivers run on ``concurrency`` threads; async drivers on one event loop.
Each request records intended, start, first-byte and end times
(``time.perf_counter_ns`` relative to the phase's window start).

A phase never hangs on a dead SUT: when requests have been in flight for
``stall_timeout_s`` and none has completed in that time, the phase is abandoned
and the requests still in flight are counted as timeouts.

A phase with a :class:`~benchflow.load.precision.PrecisionGoal`
(``duration_s=auto``) is scheduled for ``max_s`` and looks at its latency
histogram every ``CHECK_EVERY_S``: once ``min_s`` has passed and every judged
percentile's interval is within ±rel, no request starts any more (the schedule is
closed), the window ends there and the requests in flight drain as usual. With
``clients>1`` each client shard sends its histogram to the coordinator instead, which
judges the merged one and names the common instant every shard's window ends at
(benchflow.load.clients).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import selectors
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from benchflow.load.mix import Mix
from benchflow.load.precision import CHECK_EVERY_S, PrecisionGoal
from benchflow.load.precision import judge as judge_precision
from benchflow.load.recorder import Recorder, Recording
from benchflow.load.schedule import Schedule, Stage

log = logging.getLogger("benchflow.load")

pc = time.perf_counter_ns

# Sleep until this close to a deadline, then yield-spin: time.sleep alone
# overshoots by ~0.1 ms here, the default asyncio loop by ~0.5 ms.
_SPIN_NS = 250_000
# select() takes microsecond timeouts (epoll only milliseconds) but is limited to
# FD_SETSIZE descriptors; above this many workers use the default loop.
_SELECT_MAX_WORKERS = 512


class RequestContext:
    """Handed to every ``operation`` call; one per worker, reused between requests."""

    __slots__ = (
        "_buf",
        "cls",
        "first_byte_ns",
        "intended_ns",
        "item",
        "seq",
        "state",
        "worker",
    )

    def __init__(self, worker: int, state: Any, buf) -> None:
        self.worker = worker
        self.state = state  # whatever the driver's open_worker() returned
        self.seq = 0  # the request's index in its phase (per worker in closed loop)
        self.first_byte_ns = 0
        # When the request was meant to start (perf_counter_ns); equals its start in
        # closed loop. Drivers judging user-facing SLOs measure from here.
        self.intended_ns = 0
        # The request's class in a mix (``mix=``; None without one) and, when replaying a
        # trace, its record (benchflow.workload.trace.TraceRequest; None otherwise).
        self.cls: str | None = None
        self.item: Any = None
        self._buf = buf

    def first_byte(self) -> None:
        """Mark the arrival of the first byte/token of the response."""
        if not self.first_byte_ns:
            self.first_byte_ns = pc()

    def observe(self, name: str, value_ns: int) -> None:
        """Record a driver-specific duration (e.g. an inter-token gap) into histogram ``name``."""
        self._buf.observe(name, int(value_ns))


@dataclass(frozen=True)
class Phase:
    name: str  # "warmup" or "measure"
    concurrency: int
    duration_s: float | None = None  # bounded by time ...
    requests: int | None = None  # ... or by a count (takes precedence)
    rate: float | None = None  # None: closed loop (or stages / a trace: open loop)
    arrival: Literal["constant", "poisson", "gamma"] = "poisson"
    burstiness: float = 1.0  # gamma arrivals: CV² of the gaps = 1 / burstiness
    stages: tuple[Stage, ...] = ()  # open loop in consecutive stages (duration_s: their sum)
    trace: Any = None  # benchflow.workload.trace.TraceConfig: replay its offsets
    shard: tuple[int, int] = (0, 1)  # (i, n): a client shard's share of a trace
    mix: tuple[tuple[str, float], ...] = ()  # request classes and their weights
    seed: int = 0
    stream: int = 0  # independent schedule stream (phase, client shard)
    start_wall_ns: int | None = None  # start at this wall-clock time (multi-client alignment)
    # duration_s=auto: end once the percentiles are known well enough (duration_s = max_s)
    precision: PrecisionGoal | None = None

    @property
    def open_loop(self) -> bool:
        rated = bool(self.stages) and self.stages[0].rate is not None
        return self.rate is not None or rated or self.trace is not None


def sleep_until(deadline_ns: int) -> None:
    while True:
        dt = deadline_ns - pc()
        if dt <= 0:
            return
        time.sleep((dt - _SPIN_NS) / 1e9 if dt > _SPIN_NS else 0)


async def asleep_until(deadline_ns: int) -> None:
    while True:
        dt = deadline_ns - pc()
        if dt <= 0:
            return
        await asyncio.sleep((dt - _SPIN_NS) / 1e9 if dt > _SPIN_NS else 0)


def error_class(driver, exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    return driver.classify_error(exc)


class Engine:
    """Runs phases of load against one driver with a fixed pool of workers."""

    def __init__(self, driver, concurrency: int, stall_timeout_s: float = 60.0) -> None:
        self.driver = driver
        self.concurrency = concurrency
        self.stall_timeout_s = stall_timeout_s
        self.is_async = inspect.iscoroutinefunction(driver.operation)
        self.recorder: Recorder | None = None  # the running phase's, for progress bars

    def run(self, phases: list[Phase], before=None) -> list[Recording]:
        """Run ``phases`` in order; ``before(i)`` is called just before phase ``i`` starts.

        Workers (``driver.open_worker``) are opened once, before the first phase,
        so connection set-up is never measured.
        """
        if self.is_async:
            return self._run_async(phases, before)
        states = [self.driver.open_worker(w) for w in range(self.concurrency)]
        try:
            out = []
            for i, phase in enumerate(phases):
                if before:
                    before(i)
                out.append(self._run_threads(phase, states))
            return out
        finally:
            for s in states:
                self.driver.close_worker(s)

    # -- threads -----------------------------------------------------------------
    def _run_threads(self, phase: Phase, states: list) -> Recording:
        window_ns, sched, quota, mix = _plan(phase)
        gates = _Gates.of(phase)
        rec = self.recorder = _recorder(window_ns, sched, mix, gates, self.concurrency)
        names = mix.names if mix else None
        flush_every = rec.flush_every
        t0 = _start(phase)
        rec.recording.wall_start_s = time.time() - (pc() - t0) / 1e9
        deadline = _Deadline(t0 + window_ns if window_ns else None)
        abandoned = threading.Event()
        inflight: dict[int, int] = {}
        op, drv = self.driver.operation, self.driver

        def worker(w: int) -> None:
            buf = rec.buffer()
            ctx = RequestContext(w, states[w], buf)
            add, n, flushed = buf.add, 0, 0
            lane = mix.stream(w) if mix and sched is None else None  # closed loop
            while True:
                if sched is not None:
                    slot = sched.take()
                    if slot is None:
                        return
                    intended = t0 + slot[1]
                    sleep_until(intended)
                    if deadline.at is not None and intended >= deadline.at:
                        return  # the window ended early (duration_s=auto)
                    ctx.seq, ctx.item = slot[0], slot[2]
                    cls = mix.class_of(slot[0]) if mix else 0
                    start = pc()
                else:
                    if gates is not None and not gates.open(w, pc() - t0):
                        wake = gates.next_open(w, pc() - t0)
                        if wake is None:
                            return  # no later stage needs this worker
                        sleep_until(t0 + wake)
                        continue
                    if quota is not None and not quota.take():
                        return
                    cls = next(lane) if lane is not None else 0
                    start = intended = pc()
                    if deadline.at is not None and start >= deadline.at:
                        return
                    ctx.seq = n
                if names:
                    ctx.cls = names[cls]
                ctx.first_byte_ns = 0
                ctx.intended_ns = intended
                inflight[w] = start
                try:
                    size = op(ctx)
                    code = 0
                except Exception as exc:  # the driver's failure is data, not a crash
                    size, code = 0, rec.code_of(error_class(drv, exc))
                stop = pc()
                del inflight[w]
                if abandoned.is_set():
                    return
                fb = ctx.first_byte_ns
                fb = fb - t0 if fb else 0
                add(intended - t0, start - t0, fb, stop - t0, size or 0, code, cls)
                n += 1
                if n % flush_every == 0 or rec.flush_gen != flushed:
                    flushed = rec.flush_gen
                    rec.flush(buf)

        threads = [
            threading.Thread(target=worker, args=(w,), name=f"bf-worker-{w}", daemon=True)
            for w in range(self.concurrency)
        ]
        for t in threads:
            t.start()
        watch = _StallWatch(rec, inflight, self.stall_timeout_s)
        check = _PrecisionCheck(phase.precision, rec, t0, deadline, sched, threads=True)
        while alive := [t for t in threads if t.is_alive()]:
            alive[0].join(0.05)
            check.poll()
            if watch.stalled():
                # Threads cannot be interrupted: leave them (daemons) and stop recording.
                abandoned.set()
                watch.count_inflight_as_timeouts()
                break
        out = rec.finish()
        check.done()
        _raise_schedule_error(sched)
        return out

    # -- asyncio -----------------------------------------------------------------
    def _run_async(self, phases: list[Phase], before) -> list[Recording]:
        if self.concurrency <= _SELECT_MAX_WORKERS:
            loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
        else:
            loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(self._async_main(phases, before))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _async_main(self, phases: list[Phase], before) -> list[Recording]:
        states = [await _maybe_await(self.driver.open_worker(w)) for w in range(self.concurrency)]
        try:
            out = []
            for i, phase in enumerate(phases):
                if before:
                    await asyncio.get_running_loop().run_in_executor(None, before, i)
                out.append(await self._run_async_phase(phase, states))
            return out
        finally:
            for s in states:
                await _maybe_await(self.driver.close_worker(s))

    async def _run_async_phase(self, phase: Phase, states: list) -> Recording:
        window_ns, sched, quota, mix = _plan(phase)
        gates = _Gates.of(phase)
        rec = self.recorder = _recorder(window_ns, sched, mix, gates, self.concurrency)
        names = mix.names if mix else None
        if phase.start_wall_ns is not None:
            await asleep_until(pc() + max(0, phase.start_wall_ns - time.time_ns()))
        t0 = _start(phase)
        rec.recording.wall_start_s = time.time() - (pc() - t0) / 1e9
        deadline = _Deadline(t0 + window_ns if window_ns else None)
        op, drv = self.driver.operation, self.driver
        inflight: dict[int, int] = {}
        bufs = [rec.buffer() for _ in range(self.concurrency)]
        ctxs = [RequestContext(w, states[w], bufs[w]) for w in range(self.concurrency)]

        async def one(w: int, intended: int, seq: int, item=None, lane: int = 0) -> None:
            ctx, buf = ctxs[w], bufs[w]
            ctx.first_byte_ns = 0
            ctx.intended_ns = intended
            ctx.seq, ctx.item = seq, item
            cls = mix.class_of(seq, lane) if mix else 0
            if names:
                ctx.cls = names[cls]
            start = inflight[w] = pc()
            try:
                size = await op(ctx)
                code = 0
            except Exception as exc:
                size, code = 0, rec.code_of(error_class(drv, exc))
            finally:
                inflight.pop(w, None)
            stop = pc()
            fb = ctx.first_byte_ns
            fb = fb - t0 if fb else 0
            buf.add(intended - t0, start - t0, fb, stop - t0, size or 0, code, cls)
            if len(buf) >= rec.flush_every:
                rec.flush(buf)

        async def closed(w: int) -> None:
            n = 0
            while True:
                if gates is not None and not gates.open(w, pc() - t0):
                    wake = gates.next_open(w, pc() - t0)
                    if wake is None:
                        return  # no later stage needs this worker
                    await asleep_until(t0 + wake)
                    continue
                if quota is not None and not quota.take():
                    return
                now = pc()
                if deadline.at is not None and now >= deadline.at:
                    return
                await one(w, now, n, None, w)
                n += 1
                if n % 1024 == 0:  # an operation that never suspends would starve the
                    await asyncio.sleep(0)  # loop: the stall watch and the precision check

        async def dispatch() -> None:
            free: asyncio.Queue[int] = asyncio.Queue()
            for w in range(self.concurrency):
                free.put_nowait(w)
            running: set[asyncio.Task] = set()

            async def run_slot(w: int, intended: int, seq: int, item) -> None:
                try:
                    await one(w, intended, seq, item)
                finally:
                    free.put_nowait(w)

            try:
                while (slot := sched.take()) is not None:
                    intended = t0 + slot[1]
                    await asleep_until(intended)
                    if deadline.at is not None and intended >= deadline.at:
                        break  # the window ended early (duration_s=auto)
                    w = await free.get()  # all workers busy: this request starts late
                    task = asyncio.ensure_future(run_slot(w, intended, slot[0], slot[2]))
                    running.add(task)
                    task.add_done_callback(running.discard)
                while running:
                    await asyncio.wait(set(running))
            finally:
                for t in running:
                    t.cancel()

        if sched is None:
            tasks = {asyncio.ensure_future(closed(w)) for w in range(self.concurrency)}
        else:
            tasks = {asyncio.ensure_future(dispatch())}
        watch = _StallWatch(rec, inflight, self.stall_timeout_s)
        check = _PrecisionCheck(phase.precision, rec, t0, deadline, sched, threads=False)
        pending = tasks
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.05)
            check.poll()
            if pending and watch.stalled():
                watch.count_inflight_as_timeouts()
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                break
        out = rec.finish()
        check.done()
        _raise_schedule_error(sched)
        return out


class _Deadline:
    """When the phase stops starting requests (perf ns; None: bounded by a count).
    Moved earlier when a duration_s=auto phase reaches its precision."""

    __slots__ = ("at",)

    def __init__(self, at: int | None) -> None:
        self.at = at


class _PrecisionCheck:
    """Ends a duration_s=auto phase once its percentiles are known well enough.

    On a client shard (clients>1: ``goal.remote`` set, benchflow.load.clients) it does
    not judge: every ``CHECK_EVERY_S`` it sends its latency histogram to the
    coordinator, which judges the shards' merged histograms, and once the coordinator's
    stop comes it ends the window at the common instant the stop names (moving the
    deadline there, a little in the future) exactly as a local stop ends it now."""

    def __init__(self, goal, rec: Recorder, t0: int, deadline: _Deadline, sched, threads: bool):
        self.goal, self.rec, self.t0, self.deadline, self.sched = goal, rec, t0, deadline, sched
        self.threads = threads
        self.every_ns = int(CHECK_EVERY_S * 1e9)
        self.next_ns = t0 + int(goal.min_s * 1e9) - self.every_ns if goal else 0
        self.stopped = False
        self.remote = getattr(goal, "remote", None)
        self.closing = False  # remote stop: close the schedule once its instant has passed

    def poll(self) -> None:
        if self.goal is None:
            return
        if self.remote is not None:
            self._poll_remote()
            return
        if self.stopped:
            return
        now = pc()
        if now < self.next_ns:
            return
        self.next_ns = now + self.every_ns
        self._flush()
        if now - self.t0 < self.goal.min_s * 1e9 or (
            self.deadline.at is not None and now >= self.deadline.at
        ):
            return  # too early, or the phase is over anyway (max_s: done() records it)
        r = self.rec.recording
        with self.rec._lock:  # no fold meanwhile: each request is in or out of the window
            reached, ivs = judge_precision(r.hist["latency"], self.goal)
            if not reached:
                return
            now = pc()
            elapsed = now - self.t0
            self.deadline.at = now
            r.window_ns = elapsed
            r.stop_by, r.stop_at_ns, r.stop_samples = "precision", elapsed, r.hist["latency"].count
            r.stop_widths = {name: iv.rel_half_width for name, iv in ivs.items()}
        self.stopped = True
        if self.sched is not None:
            self.sched.close()
        n = r.stop_samples
        log.info(
            "precision reached after %.1f s (%d samples): measured phase ended", elapsed / 1e9, n
        )

    def _flush(self) -> None:
        if self.threads:
            self.rec.flush_gen += 1  # each worker flushes after its current request
        else:
            self.rec.flush_all()  # one thread: nothing appends meanwhile

    def _poll_remote(self) -> None:
        """A client shard: send snapshots, and end the window where the coordinator says."""
        now = pc()
        if self.stopped:
            if self.closing and now >= self.deadline.at:
                self.closing = False
                if self.sched is not None:
                    self.sched.close()
            return
        stop = self.remote.stop()
        if stop is not None:
            self._stop_at(*stop)
            return
        if now < self.next_ns:
            return
        self.next_ns = now + self.every_ns
        self._flush()
        if self.deadline.at is not None and now >= self.deadline.at:
            return  # the phase is over anyway (max_s)
        with self.rec._lock:  # a consistent snapshot: no fold meanwhile
            snap = self.rec.recording.hist["latency"].to_dict()
        self.remote.send(snap, now - self.t0)

    def _stop_at(self, wall_ns: int, samples: int, widths: dict) -> None:
        """End the window at ``wall_ns`` (this process's wall clock) — or now, if that
        instant has passed already (the window is then the actual one, a little longer)."""
        now = pc()
        asked = now + (wall_ns - time.time_ns())  # the instant on the perf clock
        r = self.rec.recording
        with self.rec._lock:  # no fold meanwhile: each request is in or out of the window
            if self.deadline.at is not None and asked >= self.deadline.at:
                return  # at or after max_s: the phase ends there (done() records it)
            at = max(asked, now)
            self.deadline.at = at
            r.window_ns = at - self.t0
            r.stop_by, r.stop_at_ns, r.stop_samples = "precision", at - self.t0, samples
            r.stop_widths = dict(widths)
        self.stopped = self.closing = True
        self.remote.acted(at - asked, at - self.t0)
        log.info(
            "precision reached (judged over all clients, %d samples): measured phase ends "
            "after %.3f s",
            samples,
            (at - self.t0) / 1e9,
        )
        self._poll_remote()  # an instant already past: close the schedule now

    def done(self) -> None:
        """After the phase: one that ended on its own ran to max_s (or stalled)."""
        r = self.rec.recording
        if self.goal is not None and not self.stopped:
            r.stop_by, r.stop_at_ns, r.stop_samples = "max_s", r.window_ns, r.hist["latency"].count
            _, ivs = judge_precision(r.hist["latency"], self.goal)
            r.stop_widths = {name: iv.rel_half_width for name, iv in ivs.items()}


class _StallWatch:
    """Detects a phase that stopped making progress (a dead or hung SUT)."""

    def __init__(self, rec: Recorder, inflight: dict[int, int], timeout_s: float) -> None:
        self.rec, self.inflight, self.timeout_ns = rec, inflight, int(timeout_s * 1e9)
        self.last_done, self.last_change = -1, pc()

    def stalled(self) -> bool:
        now, done = pc(), self.rec.done()
        if done != self.last_done:
            self.last_done, self.last_change = done, now
            return False
        oldest = min(self.inflight.values(), default=now)
        return now - self.last_change > self.timeout_ns and now - oldest > self.timeout_ns

    def count_inflight_as_timeouts(self) -> None:
        n = len(self.inflight)
        log.warning(
            "no request completed for %.0f s with %d in flight: phase abandoned, "
            "in-flight requests counted as timeouts",
            self.timeout_ns / 1e9,
            n,
        )
        self.rec.recording.add_failure("timeout", n)
        self.rec.recording.abandoned = True


class _Quota:
    """A shared count of requests left (count-bounded closed-loop phases)."""

    def __init__(self, n: int) -> None:
        self.left = n
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True


def _raise_schedule_error(sched: Schedule | None) -> None:
    """A trace that broke off mid-phase fails the trial, naming its file and line (and
    a trace's reader stops, whatever ended the phase)."""
    if sched is None:
        return
    sched.release()
    if sched.error is not None:
        raise sched.error


def _start(phase: Phase) -> int:
    """The phase's t0 on this process's perf clock.

    With a shared wall-clock start (several clients), a client that is late
    still counts from the shared start, so the windows of all clients coincide
    and a late start shows as lag, not as a shifted window.
    """
    if phase.start_wall_ns is None:
        return pc()
    sleep_until(pc() + max(0, phase.start_wall_ns - time.time_ns()))
    return pc() - max(0, time.time_ns() - phase.start_wall_ns)


def _plan(phase: Phase) -> tuple[int, Schedule | None, _Quota | None, Mix | None]:
    """Window length (ns, 0 when count-bounded or replaying a trace), open-loop
    schedule, closed-loop quota, and the mix's class chooser."""
    by_count = phase.requests is not None
    sched = quota = None
    if phase.open_loop:
        sched = Schedule(
            phase.rate,
            phase.arrival,
            phase.seed,
            duration_s=None if by_count else phase.duration_s,
            count=phase.requests,
            stream=phase.stream,
            burstiness=phase.burstiness,
            stages=phase.stages,
            trace=phase.trace,
            shard=phase.shard,
        )
    elif by_count:
        quota = _Quota(phase.requests)
    if phase.stages and not by_count:  # rate or concurrency stages: their sum
        window_ns = round(sum(s.duration_s for s in phase.stages) * 1e9)
    elif by_count or phase.duration_s is None:  # a count, or a whole trace
        window_ns = 0
    else:
        window_ns = int(phase.duration_s * 1e9)
    mix = Mix(phase.mix, phase.seed, phase.stream) if phase.mix else None
    return window_ns, sched, quota, mix


def _recorder(
    window_ns: int, sched: Schedule | None, mix: Mix | None, gates=None, workers: int = 1
) -> Recorder:
    if gates is not None:
        stages = gates.starts_ns
    else:
        stages = sched.stage_starts_ns if sched is not None and window_ns else ()
    return Recorder(window_ns, mix.names if mix else (), stages, workers)


class _Gates:
    """Closed-loop stages: in stage k only workers ``w < concurrency_k`` send requests;
    the others wait for a stage that needs them."""

    def __init__(self, stages: tuple[Stage, ...]) -> None:
        self.starts_ns, t = [], 0.0
        for st in stages:
            self.starts_ns.append(round(t * 1e9))
            t += st.duration_s
        self.limits = [st.concurrency for st in stages]

    @classmethod
    def of(cls, phase: Phase) -> _Gates | None:
        if phase.stages and phase.stages[0].concurrency is not None:
            return cls(phase.stages)
        return None

    def _stage(self, t_ns: int) -> int:
        k = 0
        while k + 1 < len(self.starts_ns) and self.starts_ns[k + 1] <= t_ns:
            k += 1
        return k

    def open(self, w: int, t_ns: int) -> bool:
        return w < self.limits[self._stage(t_ns)]

    def next_open(self, w: int, t_ns: int) -> int | None:
        """When worker ``w`` is next needed (ns from the phase start); None: never."""
        for k in range(self._stage(t_ns) + 1, len(self.starts_ns)):
            if w < self.limits[k]:
                return self.starts_ns[k]
        return None


async def _maybe_await(x):
    if inspect.isawaitable(x):
        return await x
    return x
