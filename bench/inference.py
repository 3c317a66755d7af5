"""The inference drivers against reference clients, side by side in one run
(issue: inference servers), on the CPU stand-ins:

- ``triton`` driver vs ``perf_analyzer`` (tritonclient 2.47.0's binary) on the same
  PyTriton model at concurrency 1, 2 and 4: throughput ≥ 90% of perf_analyzer's,
  p50 within 10%; and the HTTP client's own CPU per request, tritonclient's asyncio
  client against the driver's prebuilt request;
- ``openai`` driver vs a minimal raw streaming client (the ``openai`` package, one
  request at a time) on llama.cpp: TTFT and inter-token latency within 10%;
- the same comparison on a calibration stream with known timing (bench/sse_server.py),
  and the harness's own CPU cost per streamed token at full speed, in µs (and the
  raw client's).
"""

from __future__ import annotations

import csv
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import Row, Workspace, check, llamacpp_stand_in

S = "inference"
ORDER = 40
PA_VERSION = "2.47.0"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))


def perf_analyzer() -> tuple[Path, dict[str, str]]:
    """The perf_analyzer binary scripts/install-standins.sh put in the cache, and its env."""
    from drivers.inference.launchers import cache_dir

    root = cache_dir() / "tools" / f"perf_analyzer-{PA_VERSION}"
    binary = root / "bin" / "perf_analyzer"
    if not binary.exists():
        raise FileNotFoundError(f"{binary} (run scripts/install-standins.sh)")
    lib = root / "nvidia" / "cuda_runtime" / "lib"
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(lib), env.get("LD_LIBRARY_PATH")]))
    return binary, env


def run_perf_analyzer(url: str, model: str, concurrency: int) -> dict[str, float]:
    """One perf_analyzer measurement (HTTP, batch 1, 4 s windows until 3 agree)."""
    binary, env = perf_analyzer()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pa.csv"
        cmd = [
            str(binary),
            "-m",
            model,
            "-u",
            url,
            "-i",
            "http",
            "-b",
            "1",
            "--concurrency-range",
            str(concurrency),
            "--measurement-interval",
            "4000",
            # A shared 2-core machine rarely gives three windows within 10% of each
            # other; 30% still excludes a warm-up window.
            "--stability-percentage",
            "30",
            "--max-trials",
            "10",
            "-f",
            str(out),
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"perf_analyzer failed: {proc.stdout[-600:]}{proc.stderr[-600:]}")
        (row,) = list(csv.DictReader(out.open()))
    # Its server-side summary of the last window: how often the dynamic batcher paired
    # requests, which at concurrency 2 decides the throughput more than any client.
    inferences = re.findall(r"Inference count: (\d+)", proc.stdout)
    executions = re.findall(r"Execution count: (\d+)", proc.stdout)
    return {
        "throughput": float(row["Inferences/Second"]),
        "p50_ms": float(row["p50 latency"]) / 1e3,
        "items_per_execution": (
            int(inferences[-1]) / int(executions[-1])
            if inferences and executions and int(executions[-1])
            else None
        ),
    }


def triton_rows(ws: Workspace) -> list[Row]:
    from drivers.base import RunSettings, TrialContext
    from drivers.inference.triton import TritonDriver, TritonSettings

    out: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        # The harness's own launcher starts the stand-in (and stops it with SIGINT).
        settings = TritonSettings(
            name="pytriton", driver="triton", model="matmul", launcher="pytriton"
        )
        trial = TrialContext("bench", RunSettings(1, 1, 1, 0, None), Path(tmp), Path(tmp))
        driver = TritonDriver(settings, trial)
        driver._launch()
        url = driver.url
        try:
            for c in (1, 2, 4):
                o = [
                    "service=pytriton",
                    "service.mode=server",
                    f"service.endpoint={url}",
                    f"concurrency={c}",
                    "duration_s=10",
                    "warmup_s=2",
                ]

                def driver_run(o=o) -> dict[str, float]:
                    m = ws.trial(*o)[0]
                    return {
                        "throughput": m["throughput"]["value"],
                        "p50_ms": m["latency_ms"]["p50"],
                        "items_per_execution": m["extra"].get("triton.items_per_execution"),
                    }

                # The PyTriton model's own compute time drifts by ±30% between minutes
                # here: the two take turns, and each keeps its best run (and its p50).
                pa = mine = {"throughput": 0.0}
                for r in range(ROUNDS):
                    for ref in (True, False) if r % 2 == 0 else (False, True):
                        got = run_perf_analyzer(url, "matmul", c) if ref else driver_run()
                        if ref and got["throughput"] > pa["throughput"]:
                            pa = got
                        elif not ref and got["throughput"] > mine["throughput"]:
                            mine = got
                ours, p50 = mine["throughput"], mine["p50_ms"]
                ratio = ours / pa["throughput"]
                dp50 = p50 / pa["p50_ms"] - 1
                how = (
                    f"{ws.how(*o)}  vs  perf_analyzer -m matmul -i http -b 1 "
                    f"--concurrency-range {c} --stability-percentage 30 "
                    f"(best of {ROUNDS} turns each)"
                )
                out += [
                    Row(
                        S,
                        f"triton driver / perf_analyzer infer/s, concurrency {c}",
                        ratio * 100,
                        "%",
                        ">= 90",
                        check(ratio, ">=", 0.9),
                        how,
                    ),
                    Row(
                        S,
                        f"  same: driver infer/s (perf_analyzer {pa['throughput']:.0f})",
                        ours,
                        "infer/s",
                        how=how,
                    ),
                    Row(
                        S,
                        f"  same: p50 vs perf_analyzer's ({pa['p50_ms']:.2f} ms)",
                        dp50 * 100,
                        "%",
                        "within ±10",
                        abs(dp50) <= 0.10,
                        how,
                    ),
                    Row(
                        S,
                        "  same: items per execution on the server (dynamic batching), "
                        f"driver's run (perf_analyzer's: {_fmt(pa['items_per_execution'])})",
                        mine["items_per_execution"],
                        "items",
                        how=how,
                    ),
                ]
            a, lean = _triton_client_cpu(url)
            how = "bench/inference.py:_triton_client_cpu: 2,000 requests each, one connection"
            out += [
                Row(
                    S,
                    "triton HTTP client CPU per request, tritonclient's asyncio client",
                    a,
                    "µs",
                    how=how,
                ),
                Row(
                    S,
                    "  same, the driver's prebuilt request on its own connection",
                    lean,
                    "µs",
                    how=how,
                ),
            ]
        finally:
            driver.teardown()
    return out


def _triton_client_cpu(url: str, n: int = 2_000) -> tuple[float, float]:
    """Client CPU µs per inference at concurrency 1 (one batch-1 request of the matmul
    model): tritonclient.http.aio, and triton_http's prebuilt request."""
    import asyncio

    import numpy as np
    import tritonclient.http as th
    import tritonclient.http.aio as aio

    from drivers.inference.triton_http import InferConnection, build_request

    x = th.InferInput("x", [1, 64], "FP32")
    x.set_data_from_numpy(np.random.default_rng(0).random((1, 64), np.float32), binary_data=True)
    y = th.InferRequestedOutput("y", binary_data=True)

    async def timed(call) -> float:
        for _ in range(200):  # warm-up
            await call()
        c0 = time.process_time()
        for _ in range(n):
            await call()
        return (time.process_time() - c0) / n * 1e6

    async def both() -> tuple[float, float]:
        client = aio.InferenceServerClient(url, conn_limit=1)
        try:
            a = await timed(lambda: client.infer("matmul", [x], outputs=[y]))
        finally:
            await client.close()
        host, _, port = url.rpartition(":")
        conn = InferConnection(host, int(port), 10)
        request = build_request(url, "matmul", "", [x], [y])
        try:
            lean = await timed(lambda: conn.infer(*request))
        finally:
            conn.close()
        return a, lean

    return asyncio.run(both())


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


# -- the openai driver vs the openai package ------------------------------------
def raw_openai(url: str, model: str, texts: list[str], max_tokens: int) -> dict[str, list[float]]:
    """One request at a time with the `openai` package: TTFT, gaps, CPU time per token."""
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    ttft, itl = [], []
    tokens = 0
    cpu0 = time.process_time()
    for text in texts:
        t0 = time.perf_counter()
        last = None
        stream = client.completions.create(
            model=model,
            prompt=text,
            max_tokens=max_tokens,
            stream=True,
            temperature=0.0,
            extra_body={"min_tokens": max_tokens},
        )
        for chunk in stream:
            now = time.perf_counter()
            if chunk.choices and chunk.choices[0].text:
                if last is None:
                    ttft.append((now - t0) * 1e3)
                else:
                    itl.append((now - last) * 1e3)
                last = now
                tokens += 1
    cpu = time.process_time() - cpu0
    client.close()
    return {"ttft": ttft, "itl": itl, "cpu_us_per_token": [cpu / tokens * 1e6]}


def driver_cpu_per_token(url: str, model: str, max_tokens: int, requests: int) -> float:
    """The openai driver on the load engine, in this process: CPU µs per streamed token."""
    from benchflow.load.engine import Engine, Phase
    from drivers.base import RunSettings, TrialContext
    from drivers.inference.openai import OpenAIDriver, OpenAISettings

    s = OpenAISettings.model_validate(
        {
            "name": "stream",
            "driver": "openai",
            "mode": "server",
            "endpoint": url,
            "model": model,
            "tokenizer": None,
            "max_tokens": max_tokens,
            "prompts": {"input_tokens": 8, "count": 50},
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        d = OpenAIDriver(s, TrialContext("b", RunSettings(1, 1, 1, 0, None), Path(tmp), Path(tmp)))
        d.setup()
        cpu0 = time.process_time()
        (rec,) = Engine(d, 1).run([Phase("measure", 1, requests=requests)])
        cpu = time.process_time() - cpu0
        d.teardown()
    return cpu / rec.size_ok * 1e6


def compare_rows(ws, label, url, model, overrides, texts_for_round, max_tokens, rounds):
    """Alternate the raw client and a driver trial (raw, trial, raw, trial, ...) so drift
    on a shared machine hits both; TTFT and ITL p50 of each, compared."""
    raw: dict[str, list[float]] = {"ttft": [], "itl": []}
    ours: dict[str, list[float]] = {"ttft": [], "itl": []}
    for rnd in range(rounds):
        r = raw_openai(url, model, texts_for_round(rnd), max_tokens)
        raw["ttft"] += r["ttft"]
        raw["itl"] += r["itl"]
        m, _, _ = ws.trial(*overrides, f"seed={rnd}")
        ours["ttft"].append(m["distributions"]["ttft"]["p50"])
        ours["itl"].append(m["distributions"]["itl"]["p50"])
    how = (
        f"{ws.how(*overrides)}  vs  openai.OpenAI().completions.create(stream=True), one at a time"
    )
    out = []
    for key, name in (("ttft", "TTFT"), ("itl", "inter-token latency")):
        ref = statistics.median(raw[key])
        mine = statistics.median(ours[key])
        diff = mine / ref - 1
        out += [
            Row(
                S,
                f"{label}: driver {name} p50 vs raw openai client's ({ref:.1f} ms)",
                diff * 100,
                "%",
                "within ±10",
                abs(diff) <= 0.10,
                how,
            ),
            Row(S, f"  same: driver {name} p50", mine, "ms", how=how),
        ]
    return out


def llama_rows(ws: Workspace) -> list[Row]:
    with llamacpp_stand_in("bench-llama-") as (url, gguf, _):
        return _llama_rows(ws, url, gguf)


def _llama_rows(ws: Workspace, url: str, gguf: Path) -> list[Row]:
    from drivers.inference import prompts

    tok = prompts.load_tokenizer(str(gguf))
    n, out_tokens, in_tokens = 8, 24, 32
    o = [
        "service=llamacpp",
        "service.mode=server",
        f"service.endpoint={url}",
        f"service.tokenizer={gguf}",
        f"service.max_tokens={out_tokens}",
        f"service.prompts.input_tokens={in_tokens}",
        "service.prompts.count=100",
        f"requests={n}",
        "warmup_s=0",
    ]

    def texts(rnd: int) -> list[str]:
        # Seeds apart from the driver's keep llama.cpp's prompt cache from helping either.
        ps = prompts.synthetic(n, in_tokens, out_tokens, 0, 0, 100 + rnd, tok)
        return [p.text for p in ps]

    return compare_rows(ws, "llama.cpp", url, "gemma-3-270m", o, texts, out_tokens, 3)


def stream_rows(ws: Workspace) -> list[Row]:
    """A calibration stream with known timing (bench/sse_server.py): both clients against
    the truth, and their CPU cost per token at full speed."""
    import sys

    from benchflow.sut.servers import ServerProcess, free_port, http_ready

    out: list[Row] = []
    logs = Path(tempfile.mkdtemp(prefix="bench-sse-"))
    for ttft_ms, itl_ms in ((50.0, 10.0), (0.0, 0.0)):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "bench.sse_server", "--port", str(port)]
        cmd += ["--ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms)]
        server = ServerProcess("sse", cmd, logs, cwd=Path(__file__).resolve().parents[1])
        try:
            server.wait_ready(lambda p=port: http_ready("127.0.0.1", p, "/v1/models"), 30)
            if itl_ms:
                o = [
                    "service=vllm",
                    "service.mode=server",
                    f"service.endpoint={url}",
                    "service.model=synthetic",
                    "service.tokenizer=null",
                    "service.metrics=false",
                    "service.max_tokens=32",
                    "requests=20",
                    "warmup_s=0",
                ]
                label = f"calibration stream (TTFT {ttft_ms:g} ms, ITL {itl_ms:g} ms)"
                out += compare_rows(
                    ws,
                    label,
                    url,
                    "synthetic",
                    o,
                    lambda r: [f"p{r} {i}" for i in range(20)],
                    32,
                    2,
                )
            else:
                tokens, n = 512, 20
                drv = driver_cpu_per_token(url, "synthetic", tokens, n)
                raw = raw_openai(url, "synthetic", [f"p {i}" for i in range(n)], tokens)
                how = f"bench/inference.py: {n} requests x {tokens} tokens, streamed at full speed"
                out += [
                    Row(
                        S,
                        "harness CPU per streamed token (openai driver + load engine)",
                        drv,
                        "µs",
                        how=how,
                    ),
                    Row(
                        S,
                        "  same: raw openai client CPU per streamed token",
                        raw["cpu_us_per_token"][0],
                        "µs",
                        how=how,
                    ),
                ]
        finally:
            server.stop()
    return out


def rows(ws: Workspace) -> list[Row]:
    return triton_rows(ws) + stream_rows(ws) + llama_rows(ws)
