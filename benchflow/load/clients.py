"""``clients=N``: N load-generator processes whose recordings merge into one result.

Concurrency, rate and request counts are totals, split between the clients;
each client draws its own schedule stream from the seed (the superposition of
independent Poisson streams is Poisson at the summed rate). The driver, after
setup(), is sent to every client by pickling, so connections belong in
``open_worker``. All clients start each phase at the same wall-clock time; if
one fails, the others finish and the failure is recorded in the result.

Clients are local processes, or, inside a Slurm job (``launch="srun"``), one
Slurm task each, spread over the job's nodes: the coordinator listens on a
socket, ``srun --overlap`` starts :mod:`benchflow.load.shard` on every task,
and each shard connects back and speaks the same protocol as a local client.
Before the load, the coordinator measures each client's clock offset
(NTP-style, the sample with the smallest round trip) and starts each shard at
the same true instant; the offsets are reported in the result's ``extra``.

Latencies never cross clocks: each is measured on its shard's own clock, from
an intended start that shard computed, so an offset only places a shard's phase
windows. After the load the offsets are measured again; the larger of the two
uncertainties (half the best round trip) and the drift between the two readings
bound how far a shard's windows may sit from the others'
(``clients.clock_error_ms_max``; the trial judges it, results.build). Each
shard's own figures are kept beside the merged ones (``Recording.shards``).

``duration_s=auto``: while the measured phase runs, each shard sends its latency
histogram (sparse, cumulative) every ``CHECK_EVERY_S``; the coordinator keeps the
sum of the shards' latest snapshots, applies :func:`benchflow.load.precision.judge`
to it and, once precise (and ``min_s`` has passed), sends every shard the same
instant to end its window at: ``STOP_MARGIN_S`` plus twice the largest measured
round trip from now, on each shard's clock through its offset. A shard that dies is
left out of the sum (its recordings are lost whole); one that hangs before its first
snapshot leaves the phase to run to ``max_s``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import pickle
import secrets
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from multiprocessing.connection import Listener, wait

from benchflow.load.engine import Engine, Phase
from benchflow.load.precision import CHECK_EVERY_S, SnapshotSum, judge
from benchflow.load.recorder import Recording
from benchflow.network import routable_address

log = logging.getLogger("benchflow.load.clients")

READY_TIMEOUT_S = 120
START_MARGIN_S = 0.3  # between "all ready" and the first phase
PHASE_GAP_S = 0.5  # between phases, for the previous one to drain
# duration_s=auto: the common stop instant is this far ahead of the coordinator's
# decision, plus twice the largest round trip (a shard's engine looks for the stop
# every 50 ms; the margin covers that and a busy shard's delay in reading it)
STOP_MARGIN_S = 0.25


def split(total: int, n: int, i: int) -> int:
    return total // n + (1 if i < total % n else 0)


def _shard_stage(st, n: int, i: int):
    """Client i's share of a stage: a rate split evenly, a concurrency as evenly as whole
    workers allow."""
    if st.concurrency is not None:
        return replace(st, concurrency=split(st.concurrency, n, i))
    return replace(st, rate=st.rate / n)


def shard_phases(phases: list[Phase], n: int, i: int, start_ns: int) -> list[Phase]:
    out, t = [], start_ns
    for ph in phases:
        out.append(
            replace(
                ph,
                concurrency=split(ph.concurrency, n, i),
                rate=None if ph.rate is None else ph.rate / n,
                stages=tuple(_shard_stage(st, n, i) for st in ph.stages),
                shard=(i, n),
                requests=None if ph.requests is None else split(ph.requests, n, i),
                stream=ph.stream * 1000 + i,
                start_wall_ns=t,
            )
        )
        t += int(((ph.duration_s or 0) + PHASE_GAP_S) * 1e9)
    return out


def _child(conn, payload: bytes | None, stall_timeout_s: float) -> None:
    """A client: load the driver, answer clock probes, run its phases, send recordings."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        if payload is None:  # a remote shard: the driver comes over the connection
            payload = conn.recv()
        driver = pickle.loads(payload)
        conn.send(
            (
                "ready",
                {
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "procid": os.environ.get("SLURM_PROCID"),
                },
            )
        )
        while True:
            msg = conn.recv()
            if isinstance(msg, tuple) and msg and msg[0] == "clock":
                conn.send(("clock", time.time_ns()))
                continue
            phases = msg
            break
        links = []
        for j, ph in enumerate(phases):  # duration_s=auto: judged by the coordinator
            if ph.precision is not None:
                links.append(_ShardLink(conn, j))
                phases[j] = replace(ph, precision=replace(ph.precision, remote=links[-1]))
        engine = Engine(driver, phases[0].concurrency, stall_timeout_s)
        recs = engine.run(phases)
        conn.send(("done", recs, {k: v for link in links for k, v in link.info.items()}))
        _answer_clock_probes(conn)  # the coordinator reads the clocks again, then says bye
    except BaseException as exc:  # report, never hang the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _answer_clock_probes(conn) -> None:
    while True:
        try:
            if not conn.poll(60):
                return
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if isinstance(msg, tuple) and msg and msg[0] == "stop":
            continue  # a stop that came after the phase had ended anyway (stalled)
        if not (isinstance(msg, tuple) and msg and msg[0] == "clock"):
            return
        conn.send(("clock", time.time_ns()))


class _ShardLink:
    """A shard's side of the multi-client judge (precision.RemoteJudge) over its
    connection to the coordinator; used only from the engine's polling thread, while
    ``_child`` waits for the phases to end."""

    def __init__(self, conn, phase: int) -> None:
        self.conn, self.phase = conn, phase
        self.info: dict[str, float] = {}
        self.broken = False  # the coordinator is gone: the phase runs to max_s

    def send(self, snapshot: dict, elapsed_ns: int) -> None:
        if self.broken:
            return
        try:
            self.conn.send(("snap", self.phase, elapsed_ns, snapshot))
        except (OSError, EOFError):
            self.broken = True

    def stop(self):
        if self.broken:
            return None
        try:
            while self.conn.poll(0):
                msg = self.conn.recv()
                if msg[0] == "stop" and msg[1] == self.phase:
                    return msg[2], msg[3], msg[4]
                if msg[0] == "clock":
                    self.conn.send(("clock", time.time_ns()))
        except (OSError, EOFError):
            self.broken = True
        return None

    def acted(self, late_ns: int, window_ns: int) -> None:
        self.info["stop_late_ms"] = late_ns / 1e6


def resolve_launch(launch: str, clients: int, environ=os.environ) -> str:
    """``auto``: srun inside a Slurm job with a task per client, else local processes."""
    if launch != "auto":
        return launch
    in_job = environ.get("SLURM_JOB_ID") and int(environ.get("SLURM_NTASKS", "1")) >= clients
    return "srun" if in_job and clients > 1 else "local"


def _local(payload: bytes, clients: int, stall_timeout_s: float):
    ctx = mp.get_context("spawn")
    procs, conns = [], []
    for _ in range(clients):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_child, args=(child, payload, stall_timeout_s), daemon=True)
        p.start()
        procs.append(p)
        conns.append(parent)
    return procs, conns


def _srun(payload: bytes, clients: int, stall_timeout_s: float):
    """One shard per Slurm task of this job, each connecting back to a listener here."""
    if not os.environ.get("SLURM_JOB_ID"):
        raise RuntimeError("client_launch=srun needs to run inside a Slurm job")
    multi_node = int(os.environ.get("SLURM_JOB_NUM_NODES", os.environ.get("SLURM_NNODES", "1")))
    # One node: loopback; several: the address the other nodes reach this one at.
    host = routable_address() if multi_node > 1 else "127.0.0.1"
    authkey = secrets.token_bytes(16)
    listener = Listener((host, 0), authkey=authkey)
    address = f"{host}:{listener.address[1]}"
    nodes = min(multi_node, clients)
    cmd = [
        "srun",
        "--overlap",
        f"--ntasks={clients}",
        f"--nodes={nodes}",
        "--kill-on-bad-exit=0",
        "--cpus-per-task=1",
        sys.executable,
        "-m",
        "benchflow.load.shard",
        address,
        str(stall_timeout_s),
    ]
    env = {**os.environ, "BENCHFLOW_SHARD_AUTHKEY": authkey.hex()}
    step = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
    conns: list = []
    listener._listener._socket.settimeout(READY_TIMEOUT_S)
    try:
        while len(conns) < clients:
            c = listener.accept()
            c.send(payload)
            conns.append(c)
    except (OSError, TimeoutError) as exc:
        log.warning("only %d of %d shards connected: %s", len(conns), clients, exc)
    finally:
        listener.close()
    return [step], conns + [_Missing()] * (clients - len(conns))


class _Missing:
    """A shard that never connected."""

    def poll(self, timeout=None) -> bool:
        return False


class _Judge:
    """The coordinator's side of ``duration_s=auto`` with clients > 1 (module docstring):
    sums the shards' snapshots, judges the sum, sends the common stop."""

    def __init__(self, goal, phase: int, start_ns: int, clocks: dict[int, tuple[int, int]]):
        self.goal, self.phase = goal, phase
        self.start_ns = start_ns  # the phase's shared start, on this process's clock
        self.end_ns = start_ns + int(goal.max_s * 1e9)  # ... and its scheduled end
        self.offsets = {i: v[0] for i, v in clocks.items()}
        rtt = max((2 * v[1] for v in clocks.values()), default=0)
        self.margin_ns = int(STOP_MARGIN_S * 1e9) + 2 * rtt
        self.sum = SnapshotSum()
        self.fresh = False  # a snapshot came since the last judgement
        self.next_ns = 0
        # once the stop is sent: (instant on our clock, samples judged, half-widths)
        self.sent: tuple[int, int, dict[str, float | None]] | None = None

    def snapshot(self, i: int, phase: int, elapsed_ns: int, snap: dict) -> None:
        if phase == self.phase and self.sent is None:
            self.sum.put(i, snap)
            self.fresh = True

    def forget(self, i: int) -> None:
        """Shard ``i`` failed: its recordings are lost whole, so are its samples here."""
        if self.sent is None:
            self.sum.drop(i)

    def poll(self, running: dict) -> None:
        """Judge (at most every CHECK_EVERY_S / 5, after a new snapshot) and, once
        precise, send each running shard the stop."""
        if self.sent is not None or not running or not self.fresh:
            return
        now = time.time_ns()
        if now < self.next_ns or now - self.start_ns < self.goal.min_s * 1e9:
            return
        if any(i not in self.sum for i in running):
            return  # not every shard heard from yet: the sum would leave one out
        self.next_ns, self.fresh = now + int(CHECK_EVERY_S / 5 * 1e9), False
        stop = now + self.margin_ns
        if stop >= self.end_ns:
            return  # max_s ends the phase first
        reached, ivs = judge(self.sum.hist, self.goal)
        if not reached:
            return
        widths = {name: iv.rel_half_width for name, iv in ivs.items()}
        n = self.sum.hist.count
        self.sent = (stop, n, widths)
        for i, c in running.items():
            with contextlib.suppress(OSError):  # one that died: its recv fails
                c.send(("stop", self.phase, stop + self.offsets.get(i, 0), n, widths))
        log.info(
            "precision reached over %d clients after %.1f s (%d samples): the measured "
            "phase ends %.0f ms from now",
            len(running),
            (now - self.start_ns) / 1e9,
            n,
            self.margin_ns / 1e6,
        )

    def settle(self, rec: Recording, shard_recs: list[Recording]) -> None:
        """The merged recording's stop: the judge's, when every shard that finished
        ended its window at the stop; else max_s, judged on the merged histogram."""
        if (
            self.sent is not None
            and shard_recs
            and all(r.stop_by == "precision" for r in shard_recs)
        ):
            rec.stop_by, rec.stop_at_ns = "precision", rec.window_ns
            rec.stop_samples, rec.stop_widths = self.sent[1], dict(self.sent[2])
            return
        rec.stop_by, rec.stop_at_ns = "max_s", rec.window_ns
        rec.stop_samples = rec.hist["latency"].count
        _, ivs = judge(rec.hist["latency"], self.goal)
        rec.stop_widths = {name: iv.rel_half_width for name, iv in ivs.items()}


def _collect(conns, failed: dict[int, str], procs, launch: str, judge_: _Judge | None):
    """Every running client's recordings (and what it says of its stop), by index;
    meanwhile each shard's snapshots reach ``judge_``. A client that dies or fails is
    added to ``failed``; the others go on."""
    running = {i: c for i, c in enumerate(conns) if i not in failed}
    out: dict[int, tuple[list[Recording], dict]] = {}
    while running:
        ready = wait(list(running.values()), 0.05 if judge_ is not None else None)
        for c in ready:
            i = next(k for k, v in running.items() if v is c)
            try:
                msg = c.recv()
            except (EOFError, OSError):
                code = getattr(procs[i], "exitcode", None) if launch != "srun" else None
                msg = ("error", f"client process exited (code {code})")
            if msg[0] == "snap":
                if judge_ is not None:
                    judge_.snapshot(i, *msg[1:])
                continue
            del running[i]
            if msg[0] == "done":
                out[i] = (msg[1], msg[2] if len(msg) > 2 else {})
            else:
                failed[i] = msg[1]
                if judge_ is not None:
                    judge_.forget(i)
        if judge_ is not None:
            judge_.poll(running)
    return out


def clock_offsets(conns, failed: dict[int, str], probes: int = 5) -> dict[int, tuple[int, int]]:
    """Each client's clock minus ours and the reading's uncertainty (half the round
    trip), in ns: NTP-style, the probe with the least round trip.

    A client that dies meanwhile is added to ``failed``.
    """
    out = {}
    for i, c in enumerate(conns):
        if i in failed:
            continue
        best = None
        try:
            for _ in range(probes):
                t0 = time.time_ns()
                c.send(("clock",))
                _, tc = c.recv()
                t1 = time.time_ns()
                if best is None or t1 - t0 < best[0]:
                    best = (t1 - t0, tc - (t0 + t1) // 2)
        except (EOFError, OSError):  # the client died: counted as failed by the caller
            failed[i] = "client process exited before the clocks were compared"
            continue
        out[i] = (best[1], best[0] // 2)
    return out


def _shard_figures(rec: Recording) -> dict[str, float | None]:
    """One shard's own figures for a phase (for inspection; the result merges histograms)."""
    h = rec.hist["latency"]
    p50, p99 = ((h.percentile(q) / 1e6 if h.count else None) for q in (50, 99))
    return {
        "requests": rec.ok,
        "errors": sum(rec.errors.values()),
        "p50_ms": p50,
        "p99_ms": p99,
        "window_s": rec.window_s(),
    }


def run_clients(
    driver,
    phases: list[Phase],
    clients: int,
    stall_timeout_s: float,
    before=None,
    launch: str = "local",
    report: dict | None = None,
) -> list[Recording]:
    """Run ``phases`` on ``clients`` processes; returns one merged Recording per phase.

    ``launch``: "local" processes or "srun" tasks; ``report`` (the result's extra
    block) receives the clock offsets and how many hosts ran clients.
    """
    try:
        payload = pickle.dumps(driver)
    except Exception as exc:
        raise TypeError(
            f"driver {driver.name} cannot be sent to client processes ({exc}); "
            "keep connections in open_worker() or use clients=1"
        ) from None
    start_fn = _srun if launch == "srun" else _local
    procs, conns = start_fn(payload, clients, stall_timeout_s)
    failed: dict[int, str] = {}
    hosts: dict[int, dict] = {}
    for i, c in enumerate(conns):
        if not c.poll(READY_TIMEOUT_S):
            failed[i] = "did not start"
            continue
        try:
            kind, msg = c.recv()
        except EOFError:  # killed while starting: one lost client, not a lost trial
            failed[i] = "client process exited before it was ready"
            continue
        if kind != "ready":
            failed[i] = msg
        else:
            hosts[i] = msg or {}
    if len(failed) == clients:
        _reap(procs)
        raise RuntimeError("every client process failed: " + "; ".join(failed.values()))
    clocks = clock_offsets(conns, failed)
    if len(failed) == clients:
        _reap(procs)
        raise RuntimeError("every client process failed: " + "; ".join(failed.values()))
    offsets = {i: v[0] for i, v in clocks.items()}
    if report is not None and offsets:
        report["clients.clock_offset_ms_max"] = max(abs(v) for v in offsets.values()) / 1e6
        report["clients.hosts"] = float(len({h.get("host") for h in hosts.values()}))
        for i, v in offsets.items():
            report[f"clients.{i}.clock_offset_ms"] = v / 1e6
    start = time.time_ns() + int(START_MARGIN_S * 1e9)
    # each client waits for the shared instant on its own clock
    shards = {
        i: shard_phases(phases, clients, i, start + int(offsets.get(i, 0))) for i in range(clients)
    }
    for i, c in enumerate(conns):
        if i not in failed:
            try:
                c.send(shards[i])
            except OSError:
                failed[i] = "client process exited before it got its schedule"
    ours = shard_phases(phases, clients, 0, start)  # on this process's clock
    timer = None
    if before:
        timer = threading.Thread(target=_call_before, args=(before, ours), daemon=True)
        timer.start()
    goals = [j for j, ph in enumerate(phases) if ph.precision is not None]
    judge_ = None
    if goals:  # duration_s=auto: the measured phase
        judge_ = _Judge(
            phases[goals[-1]].precision, goals[-1], ours[goals[-1]].start_wall_ns, clocks
        )
    got = _collect(conns, failed, procs, launch, judge_)
    merged: list[Recording | None] = [None] * len(phases)
    own: dict[int, dict] = {}  # each shard's figures in the last (measured) phase
    for i in sorted(got):
        data, said = got[i]
        last = data[-1]
        own[i] = {**_shard_figures(last), **said}
        if last.window_ns:  # where its window ended: on our clock, from the shared start
            start_here = last.wall_start_s * 1e9 - offsets.get(i, 0)
            own[i]["window_end_ms"] = (start_here - ours[-1].start_wall_ns + last.window_ns) / 1e6
        if last.stop_by is not None:
            own[i]["stop_by"] = last.stop_by
        for j, rec in enumerate(data):
            merged[j] = rec if merged[j] is None else merged[j].merge(rec)
    if judge_ is not None and merged[judge_.phase] is not None:
        judge_.settle(merged[judge_.phase], [got[i][0][judge_.phase] for i in sorted(got)])
    after = clock_offsets(conns, dict(failed))  # again, now the load is over
    for i, c in enumerate(conns):
        if i not in failed:
            with contextlib.suppress(OSError, EOFError):  # gone already: reaped below
                c.send(("bye",))
    _reap(procs)
    if timer:
        timer.join()
    if len(failed) == clients:
        raise RuntimeError("every client process failed: " + "; ".join(failed.values()))
    table = []
    for i in range(clients):
        row = {"client": i, **{k: hosts.get(i, {}).get(k) for k in ("host", "procid")}}
        if i in clocks:
            row["clock_offset_ms"] = clocks[i][0] / 1e6
            err = clocks[i][1]
            if i in after:
                row["clock_drift_ms"] = (after[i][0] - clocks[i][0]) / 1e6
                err = max(err, after[i][1]) + abs(after[i][0] - clocks[i][0])
            row["clock_error_ms"] = err / 1e6
        row.update(own.get(i, {}))
        row["state"] = "failed" if i in failed else "ok"
        if i in failed:
            row["reason"] = failed[i]
        table.append(row)
    for j, rec in enumerate(merged):
        rec.clients = clients
        rec.failed_clients = [f"client {i}: {m}" for i, m in sorted(failed.items())]
        rec.shards = table
        merged[j] = rec
    for i, msg in failed.items():
        log.warning("client %d failed: %s", i, msg)
    if report is not None:
        report["clients.failed"] = float(len(failed))
        # each shard ran 1/clients of the load; a failed one's recordings are lost whole
        report["clients.lost_share"] = len(failed) / clients
        errs = [r["clock_error_ms"] for r in table if "clock_error_ms" in r]
        if errs:
            report["clients.clock_error_ms_max"] = max(errs)
        for r in table:
            for k in ("requests", "p50_ms", "p99_ms", "clock_error_ms"):
                if r.get(k) is not None:
                    report[f"clients.{r['client']}.{k}"] = float(r[k])
        if judge_ is not None:  # duration_s=auto: how closely the shards' windows ended
            ends = {r["client"]: r["window_end_ms"] for r in table if "window_end_ms" in r}
            for i, v in ends.items():
                report[f"clients.{i}.window_end_ms"] = float(v)
            if ends:
                report["clients.window_end_spread_ms"] = max(ends.values()) - min(ends.values())
            late = [r["stop_late_ms"] for r in table if "stop_late_ms" in r]
            if late:  # a shard that read the stop after its instant ended then
                report["clients.stop_late_ms_max"] = max(late)
    return merged  # type: ignore[return-value]


def _call_before(before, phases: list[Phase]) -> None:
    for i, ph in enumerate(phases):
        time.sleep(max(0.0, (ph.start_wall_ns - time.time_ns()) / 1e9))
        before(i)


def _reap(procs) -> None:
    for p in procs:
        if isinstance(p, subprocess.Popen):  # the srun step of remote shards
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            continue
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join(5)
