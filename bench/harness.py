"""The harness's own figures (issue: the trial pipeline): engine ceiling, accuracy
against a known service time, and per-trial overhead."""

from __future__ import annotations

import json

from bench.common import Row, Workspace, check

S = "harness"
ORDER = 10


def rows(ws: Workspace) -> list[Row]:
    out: list[Row] = []
    for clients in (1, 2):
        o = [
            "service=noop",
            f"clients={clients}",
            f"concurrency={clients}",
            "duration_s=5",
            "warmup_s=1",
        ]
        m, _, _ = ws.trial(*o)
        v = m["throughput"]["value"]
        target = (">= 100000", check(v, ">=", 100_000)) if clients == 1 else ("", None)
        out.append(
            Row(S, f"noop ops/s, {clients} client process(es)", v, "ops/s", *target, how=ws.how(*o))
        )

    o = [
        "service=sleep",
        "service.service_ms=5",
        "rate=200",
        "arrival=poisson",
        "concurrency=32",
        "duration_s=20",
        "warmup_s=2",
    ]
    m, _, _ = ws.trial(*o)
    p50, p99 = m["latency_ms"]["p50"], m["latency_ms"]["p99"]
    achieved = m["load"]["achieved_rate"] / 200 - 1
    out += [
        Row(
            S,
            "sleep 5 ms over HTTP, 200/s Poisson: p50",
            p50,
            "ms",
            "5.0 .. 5.5",
            5.0 <= p50 <= 5.5,
            ws.how(*o),
        ),
        Row(S, "  same: p99", p99, "ms", "< 7", check(p99, "<", 7), ws.how(*o)),
        Row(
            S,
            "  same: achieved rate vs target",
            achieved * 100,
            "%",
            "within ±1",
            abs(achieved) <= 0.01,
            ws.how(*o),
        ),
        Row(
            S, "  same: dispatch lag p99", m["load"]["dispatch_lag_ms"]["p99"], "ms", how=ws.how(*o)
        ),
    ]
    o = [
        "service=sleep",
        "service.service_ms=5",
        "rate=1000",
        "arrival=constant",
        "concurrency=32",
        "duration_s=10",
        "warmup_s=2",
    ]
    m, _, _ = ws.trial(*o)
    achieved = m["load"]["achieved_rate"] / 1000 - 1
    out += [
        Row(
            S,
            "sleep 5 ms over HTTP, 1000/s constant: achieved vs target",
            achieved * 100,
            "%",
            "within ±1",
            abs(achieved) <= 0.01,
            ws.how(*o),
        ),
        Row(S, "  same: p50", m["latency_ms"]["p50"], "ms", how=ws.how(*o)),
    ]

    o = ["service=noop", "duration_s=2", "warmup_s=1"]
    overheads, uploads = [], []
    for _ in range(3):
        _, meta, tdir = ws.trial(*o)
        overheads.append(meta["ended_at_epoch"] - meta["started_at_epoch"] - 3.0)
        uploads.append(json.loads((tdir / "upload.json").read_text())["seconds"])
    ov, up = sorted(overheads)[1], sorted(uploads)[1]
    out += [
        Row(
            S,
            "trial wall time - warm-up - measured (median of 3)",
            ov,
            "s",
            "<= 1",
            check(ov, "<=", 1.0),
            ws.how(*o),
        ),
        Row(
            S,
            "MLflow logging per trial, embedded sqlite store (median of 3)",
            up,
            "s",
            "<= 0.5",
            check(up, "<=", 0.5),
            ws.how(*o),
        ),
    ]
    return out
