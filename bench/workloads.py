"""Workload shapes (issue 18, docs/workloads.md): how faithfully a trace is replayed, what
a mix and skewed keys cost the engine, and the memory of replaying a long trace.

- Trace replay fidelity: a generated trace (Poisson times) replayed at 1,000 and 10,000
  requests/s against ``noop`` (the engine alone), and at 1,000/s against the ``sleep``
  server over loopback HTTP; the figures are the p50/p99 of |sent − intended|, the
  recorded dispatch lag (a request never leaves early: ``sleep_until`` waits for its time).
- Engine ceiling: ``noop`` closed loop, one worker, plain against a 3-class mix with
  Zipfian keys drawn per request (``service.keys``): the ratio of their ops/s (aim ≥ 90 %),
  each the median of 3 trials run alternately.
- Memory: a 10,000,000-line trace (CSV, generated here) taken slot by slot through the
  engine's schedule, as a replay does; peak RSS growth of the process (aim: bounded).
"""

from __future__ import annotations

import gc
import statistics
import time

import psutil

from bench.common import Row, Workspace, check

S = "workloads"
ORDER = 45
BIG_TRACE = 10_000_000
CEILING_PAIRS = 3


def _replay(ws: Workspace, rate: int, service: list[str], seconds: int = 5) -> tuple[dict, list]:
    from benchflow.workload.trace import generate_trace

    path = ws.dir / f"trace-{rate}.jsonl"
    generate_trace(path, requests=rate * seconds, rate=rate, seed=1)
    o = [*service, f"trace.path={path}", "warmup_s=1", "tracking.upload=false"]
    m, _, _ = ws.trial(*o, timeout=900)
    return m, o


def rows(ws: Workspace) -> list[Row]:
    out: list[Row] = []
    for rate, service in (
        (1_000, ["service=noop", "concurrency=8"]),
        (10_000, ["service=noop", "concurrency=8"]),
        (1_000, ["service=sleep", "service.service_ms=1", "concurrency=64"]),
    ):
        m, o = _replay(ws, rate, service)
        lag = m["load"]["dispatch_lag_ms"]
        name = service[0].split("=")[1]
        out += [
            Row(
                S,
                f"trace replay at {rate:,}/s ({name}): |sent - intended| p50",
                lag["p50"],
                "ms",
                "",
                None,
                ws.how(*o),
            ),
            Row(
                S,
                "  same: p99",
                lag["p99"],
                "ms",
                "< 2" if rate == 1_000 else "",
                check(lag["p99"], "<", 2.0) if rate == 1_000 else None,
                ws.how(*o),
            ),
        ]

    base = ["service=noop", "concurrency=1", "duration_s=5", "warmup_s=1", "tracking.upload=false"]
    shaped_o = [
        *base,
        "mix={read: 0.5, update: 0.3, scan: 0.2}",
        "access.distribution=zipfian",
        "service.keys=1000000",
    ]
    # Interleaved pairs, the median of each: a 2-core VM's speed drifts by tens of
    # percent between seconds, more than the difference measured.
    plains, shapeds = [], []
    for _ in range(CEILING_PAIRS):
        plains.append(ws.trial(*base)[0]["throughput"]["value"])
        shapeds.append(ws.trial(*shaped_o)[0]["throughput"]["value"])
    plain, shaped = statistics.median(plains), statistics.median(shapeds)
    ratio = shaped / plain
    out += [
        Row(S, "noop ceiling, plain (median of 3)", plain, "ops/s", "", None, ws.how(*base)),
        Row(
            S,
            "noop ceiling, 3-class mix + Zipfian keys (median of 3)",
            shaped,
            "ops/s",
            "",
            None,
            ws.how(*shaped_o),
        ),
        Row(
            S,
            "  ratio to plain",
            ratio * 100,
            "%",
            ">= 90",
            check(ratio, ">=", 0.9),
            ws.how(*shaped_o),
        ),
    ]
    out.append(_memory(ws))
    return out


def _memory(ws: Workspace) -> Row:
    from benchflow.load.schedule import Schedule
    from benchflow.workload.trace import TraceConfig

    path = ws.dir / "big.csv"
    with path.open("w") as f:  # offsets 0.1 ms apart: 10,000 requests/s for 1,000 s
        f.write("offset_s,input_length,output_length\n")
        for start in range(0, BIG_TRACE, 100_000):
            f.write("".join(f"{i / 10_000:.4f},128,16\n" for i in range(start, start + 100_000)))
    gc.collect()
    proc = psutil.Process()
    before = proc.memory_info().rss
    peak, n, t0 = before, 0, time.perf_counter()
    sched = Schedule(None, "poisson", 0, trace=TraceConfig(path=str(path), format="csv"))
    while sched.take() is not None:
        n += 1
        if n % 500_000 == 0:
            peak = max(peak, proc.memory_info().rss)
    peak = max(peak, proc.memory_info().rss)
    grew = (peak - before) / 2**20
    took = time.perf_counter() - t0
    return Row(
        S,
        f"replaying a {n:,}-line trace: peak RSS growth ({took:.0f} s to read)",
        grew,
        "MiB",
        "< 64 (streamed)",
        check(grew, "<", 64),
        "python -m bench workloads",
    )
