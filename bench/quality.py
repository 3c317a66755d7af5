"""The ``qa`` quality benchmark's own cost: what the harness adds to each question
(request, checkpoint record, token count) over an endpoint with a known answer
time, what scoring a set costs (EM, F1, bootstrap intervals), and whether
questions are asked in parallel at ``concurrency`` > 1.

The endpoint is the calibration server of ``bench/sse_server.py`` (no model):
each non-streamed completion of one token takes 20 ms. Then the CPU stand-in,
Gemma 3 270M on llama.cpp, answers the shipped set: what a small model scores."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from bench.common import Row, Workspace, check

S = "quality"
ORDER = 70
ANSWER_MS = 20.0
N = 400  # questions
CATEGORIES = ("copy", "context", "arithmetic", "fact", "conversation")


def _dataset(path: Path) -> Path:
    """N questions; the calibration server answers "tok", right for two in three."""
    with open(path, "w") as f:
        for i in range(N):
            item = {
                "id": f"b{i:04d}",
                "question": f"Repeat the words: word {i}",
                "answer": "word" if i % 3 == 0 else "tok",
                "category": CATEGORIES[i % len(CATEGORIES)],
            }
            f.write(json.dumps(item) + "\n")
    return path


def _raw_p50_ms(url: str, n: int) -> float:
    """p50 latency of a plain aiohttp loop asking the same endpoint, one at a time."""
    import asyncio
    import statistics
    import time

    import aiohttp

    async def run() -> list[float]:
        out = []
        async with aiohttp.ClientSession() as session:
            for i in range(n):
                body = {"model": "synthetic", "prompt": f"Question: {i}\nAnswer:", "max_tokens": 1}
                t = time.perf_counter()
                async with session.post(url + "/v1/completions", json=body) as resp:
                    await resp.json()
                out.append((time.perf_counter() - t) * 1e3)
        return out

    return statistics.median(asyncio.run(run()))


def rows(ws: Workspace) -> list[Row]:
    return calibration_rows(ws) + llamacpp_rows(ws)


def llamacpp_rows(ws: Workspace) -> list[Row]:
    """What the CPU stand-in (Gemma 3 270M on llama.cpp) scores on the shipped set."""
    from benchflow.servers import free_port, http_ready
    from drivers.base import RunSettings, TrialContext
    from drivers.inference import launchers

    data = Path(tempfile.mkdtemp(prefix="bench-qa-llama-"))
    gguf = launchers.gguf_model(data)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    trial = TrialContext("bench", RunSettings(1, 1, 1, 0, None), data, data)
    server = launchers.start(
        launchers.llamacpp(gguf, "gemma-3-270m", "127.0.0.1", port, {}),
        trial,
        lambda: http_ready("127.0.0.1", port, "/v1/models"),
        120,
    )
    o = [
        "service=qa",
        f"service.endpoint={url}",
        "service.model=gemma-3-270m",
        "service.api=completions",
        "service.max_tokens=8",
        "warmup_s=0",
        "tracking.upload=false",
    ]
    try:
        m, _, _ = ws.trial(*o, f"data_dir={data}")
    finally:
        server.stop()
    q = m["quality"]
    how = ws.how(*o).replace(url, "http://LLAMACPP:PORT")
    label = "qa: Gemma 3 270M (llama.cpp, completions, few-shot) on the shipped set"
    out = [
        Row(S, f"{label}: exact-match accuracy", q["accuracy"], "", how=how),
        Row(S, f"{label}: 95% bootstrap CI, low", q["accuracy_ci_low"], "", how=how),
        Row(S, f"{label}: 95% bootstrap CI, high", q["accuracy_ci_high"], "", how=how),
    ]
    for cat in CATEGORIES:
        out.append(Row(S, f"{label}: {cat}", q[f"category.{cat}.accuracy"], "", how=how))
    out.append(Row(S, f"{label}: p50 latency per question", m["latency_ms"]["p50"], "ms", how=how))
    return out


def calibration_rows(ws: Workspace) -> list[Row]:
    from benchflow.servers import ServerProcess, free_port, http_ready

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "bench.sse_server", "--port", str(port)]
    cmd += ["--ttft-ms", str(ANSWER_MS), "--itl-ms", "0"]
    logs = Path(tempfile.mkdtemp(prefix="bench-qa-"))
    server = ServerProcess("calibration", cmd, logs, cwd=Path(__file__).resolve().parents[1])
    data = _dataset(ws.dir / "qa-bench.jsonl")
    base = [
        "service=qa",
        f"service.endpoint={url}",
        "service.model=synthetic",
        "service.api=completions",
        "service.max_tokens=1",
        f"service.dataset={data}",
        "warmup_s=0",
        "tracking.upload=false",
        f"data_dir={ws.dir / 'data'}",
    ]
    try:
        server.wait_ready(lambda: http_ready("127.0.0.1", port, "/v1/models"), 30)
        m1, meta1, _ = ws.trial(*base, "concurrency=1")
        m8, _, _ = ws.trial(*base, "concurrency=8")
        raw = _raw_p50_ms(url, N) - ANSWER_MS
    finally:
        server.stop()
    how1 = ws.how(*base[:-1], "concurrency=1").replace(url, "http://CALIBRATION:PORT")
    how1 = how1.replace(str(data), f"QA{N}.jsonl")  # generated by bench/quality.py
    assert abs(m1["quality"]["accuracy"] - 2 / 3) < 0.01, m1["quality"]  # scored as built
    overhead = m1["latency_ms"]["p50"] - ANSWER_MS
    speedup = m8["throughput"]["value"] / m1["throughput"]["value"]
    return [
        Row(
            S,
            f"qa: harness time per question over a {ANSWER_MS:g} ms answer (p50 latency − "
            f"{ANSWER_MS:g} ms; request, checkpoint, tokens), concurrency 1",
            overhead,
            "ms",
            "<= 3",
            check(overhead, "<=", 3),
            how1,
        ),
        Row(
            S,
            f"plain aiohttp loop, same endpoint: time per request over the {ANSWER_MS:g} ms "
            "(p50 − answer time; the server's own overshoot is in both)",
            raw,
            "ms",
            how=f"bench/quality.py: {N} sequential POSTs",
        ),
        Row(
            S,
            f"qa: scoring {N} answers (EM, F1, 2000-resample bootstrap CIs overall and "
            f"per {len(CATEGORIES)} categories)",
            meta1["timings_s"]["quality"],
            "s",
            "<= 2",
            check(meta1["timings_s"]["quality"], "<=", 2),
            how1,
        ),
        Row(
            S,
            "qa: questions/s at concurrency 8 ÷ at concurrency 1 (answers in parallel)",
            speedup,
            "x",
            ">= 5",
            check(speedup, ">=", 5),
            how1.replace("concurrency=1", "concurrency=8"),
        ),
    ]
