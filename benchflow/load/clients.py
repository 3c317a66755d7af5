"""``clients=N``: N load-generator processes whose recordings merge into one result.

Concurrency, rate and request counts are totals, split between the clients;
each client draws its own schedule stream from the seed (the superposition of
independent Poisson streams is Poisson at the summed rate). The driver, after
setup(), is sent to every client by pickling, so connections belong in
``open_worker``. All clients start each phase at the same wall-clock time; if
one fails, the others finish and the failure is recorded in the result.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import pickle
import threading
import time
from dataclasses import replace

from benchflow.load.engine import Engine, Phase
from benchflow.load.recorder import Recording

log = logging.getLogger("benchflow.load.clients")

READY_TIMEOUT_S = 120
START_MARGIN_S = 0.3  # between "all ready" and the first phase
PHASE_GAP_S = 0.5  # between phases, for the previous one to drain


def split(total: int, n: int, i: int) -> int:
    return total // n + (1 if i < total % n else 0)


def shard_phases(phases: list[Phase], n: int, i: int, start_ns: int) -> list[Phase]:
    out, t = [], start_ns
    for ph in phases:
        out.append(
            replace(
                ph,
                concurrency=split(ph.concurrency, n, i),
                rate=None if ph.rate is None else ph.rate / n,
                requests=None if ph.requests is None else split(ph.requests, n, i),
                stream=ph.stream * 1000 + i,
                start_wall_ns=t,
            )
        )
        t += int(((ph.duration_s or 0) + PHASE_GAP_S) * 1e9)
    return out


def _child(conn, payload: bytes, stall_timeout_s: float) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        driver = pickle.loads(payload)
        conn.send(("ready", None))
        phases = conn.recv()
        engine = Engine(driver, phases[0].concurrency, stall_timeout_s)
        conn.send(("done", engine.run(phases)))
    except BaseException as exc:  # report, never hang the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_clients(
    driver, phases: list[Phase], clients: int, stall_timeout_s: float, before=None
) -> list[Recording]:
    """Run ``phases`` on ``clients`` processes; returns one merged Recording per phase."""
    try:
        payload = pickle.dumps(driver)
    except Exception as exc:
        raise TypeError(
            f"driver {driver.name} cannot be sent to client processes ({exc}); "
            "keep connections in open_worker() or use clients=1"
        ) from None
    ctx = mp.get_context("spawn")
    procs, conns = [], []
    for _ in range(clients):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_child, args=(child, payload, stall_timeout_s), daemon=True)
        p.start()
        procs.append(p)
        conns.append(parent)
    failed: dict[int, str] = {}
    for i, c in enumerate(conns):
        if not c.poll(READY_TIMEOUT_S):
            failed[i] = "did not start"
            continue
        kind, msg = c.recv()
        if kind != "ready":
            failed[i] = msg
    if len(failed) == clients:
        _reap(procs)
        raise RuntimeError("every client process failed: " + "; ".join(failed.values()))
    start = time.time_ns() + int(START_MARGIN_S * 1e9)
    shards = {i: shard_phases(phases, clients, i, start) for i in range(clients)}
    for i, c in enumerate(conns):
        if i not in failed:
            c.send(shards[i])
    timer = None
    if before:
        timer = threading.Thread(target=_call_before, args=(before, shards[0]), daemon=True)
        timer.start()
    merged: list[Recording | None] = [None] * len(phases)
    for i, c in enumerate(conns):
        if i in failed:
            continue
        try:
            kind, data = c.recv()
        except EOFError:
            kind, data = "error", f"client process exited (code {procs[i].exitcode})"
        if kind == "error":
            failed[i] = data
            continue
        for j, rec in enumerate(data):
            merged[j] = rec if merged[j] is None else merged[j].merge(rec)
    _reap(procs)
    if timer:
        timer.join()
    if len(failed) == clients:
        raise RuntimeError("every client process failed: " + "; ".join(failed.values()))
    for j, rec in enumerate(merged):
        rec.clients = clients
        rec.failed_clients = [f"client {i}: {m}" for i, m in sorted(failed.items())]
        merged[j] = rec
    for i, msg in failed.items():
        log.warning("client %d failed: %s", i, msg)
    return merged  # type: ignore[return-value]


def _call_before(before, phases: list[Phase]) -> None:
    for i, ph in enumerate(phases):
        time.sleep(max(0.0, (ph.start_wall_ns - time.time_ns()) / 1e9))
        before(i)


def _reap(procs) -> None:
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join(5)
