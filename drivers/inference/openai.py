"""``openai``: vLLM and every OpenAI-compatible server (llama.cpp, SGLang, TGI, ...).

One request = one POST to ``/v1/completions`` (``batch`` prompts in it) or
``/v1/chat/completions`` (one conversation), streamed or not. Per request it
records, on the engine's clock:

- TTFT: first content token − intended start (``ttfb_ms``, and ``distributions.ttft``);
- every inter-token gap between content chunks (``distributions.itl``);
- TPOT: (last token − first token) / (output tokens − 1) (``distributions.tpot``);
- end-to-end latency (``latency_ms``, from the intended start: no coordinated omission).

It returns the request's output tokens, so the headline throughput is output
tokens/s; ``rates.requests_per_s`` is requests/s. With SLOs
(``service.slo.ttft_ms``/``tpot_ms``/``e2e_ms``) the requests that met all of them
are ``distributions.slo_met`` and ``extra.goodput.requests_per_s``.

Tokens are counted from the server's ``usage`` when it sends it (in the last
streamed chunk with ``stream_options.include_usage``), else with the model's
tokenizer when one is local (``service.tokenizer``), else as content chunks;
the result's ``notes`` say which, and ``extra.tokens.by_*`` how many requests
each method counted.

Errors by class: ``http_<status>``, ``timeout``, ``connection_refused``,
``connection_lost``, ``truncated`` (the stream ended before its end: no
``[DONE]``/finish reason, or ``stop`` before ``max_tokens`` with ``ignore_eos``),
``stream_error`` (an error object in the stream), ``bad_response``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from benchflow.sut.servers import free_port
from drivers.base import ConfigRefused, Driver, DriverError, ServiceSettings
from drivers.inference import launchers, prompts
from drivers.inference.launchers import ContainerSettings
from drivers.inference.server_metrics import MetricsWatch

log = logging.getLogger("benchflow.drivers.openai")
pc = time.perf_counter_ns


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SloSettings(_Strict):
    """Service-level objectives; a request meets them when all the set ones hold."""

    ttft_ms: float | None = Field(None, gt=0, description="first token, from the intended start")
    tpot_ms: float | None = Field(None, gt=0, description="mean time per output token")
    e2e_ms: float | None = Field(None, gt=0, description="whole request, from the intended start")

    def any(self) -> bool:
        return any(v is not None for v in (self.ttft_ms, self.tpot_ms, self.e2e_ms))


class PromptSettings(_Strict):
    source: Literal["synthetic", "dataset"] = "synthetic"
    input_tokens: int = Field(128, ge=1, description="synthetic prompt length")
    range_ratio: float = Field(
        0.0, ge=0, lt=1, description="lengths uniform in [n(1-r), n(1+r)], input and output"
    )
    prefix_tokens: int = Field(0, ge=0, description="a prefix shared by all prompts (0: none)")
    count: int = Field(1000, ge=1, description="prompts prepared; requests cycle through them")
    path: str | None = Field(None, description="dataset: a local JSONL file")
    output_len: Literal["max_tokens", "dataset"] = Field(
        "max_tokens", description="dataset: ask for the reference answer's length"
    )


class OpenAISettings(ServiceSettings):
    endpoint: str | None = Field(None, description="mode=server: http://host:port")
    launcher: Literal["vllm", "llamacpp"] | None = None
    model: str = Field(..., min_length=1, description="the model name sent in requests")
    model_path: str | None = Field(None, description="vllm: weights to serve (default: model)")
    engine: dict[str, Any] = Field(default_factory=dict, description="server flags")
    container: ContainerSettings = Field(default_factory=ContainerSettings)
    api: Literal["completions", "chat"] = "completions"
    stream: bool = True
    stream_usage: bool = Field(True, description="ask for usage in the stream")
    max_tokens: int = Field(64, ge=1)
    ignore_eos: bool = True
    ignore_eos_param: Literal["ignore_eos", "min_tokens", "both"] = "ignore_eos"
    temperature: float | None = Field(0.0, ge=0)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    prompt_lists: bool = Field(True, description="the server takes several prompts per request")
    tokenizer: str | None = "auto"
    prompts: PromptSettings = Field(default_factory=PromptSettings)
    slo: SloSettings = Field(default_factory=SloSettings)
    api_key: str | None = None
    health_path: str = "/health"
    metrics: bool = Field(False, description="scrape the server's Prometheus /metrics")
    metrics_prefix: str = "vllm:"
    metrics_interval_s: float = Field(1.0, gt=0)
    ready_timeout_s: float = Field(600, gt=0)
    request_timeout_s: float = Field(300, gt=0)
    connect_timeout_s: float = Field(10, gt=0)


@dataclass
class _Worker:
    session: aiohttp.ClientSession


class OpenAIDriver(Driver):
    name = "openai"
    family = "inference"
    description = "OpenAI-compatible completions/chat (vLLM, llama.cpp, ...): TTFT, ITL, tokens/s"
    Settings = OpenAISettings
    batch_meaning = "prompts per /v1/completions request"
    size_unit = "tokens"
    throughput_basis = "size"
    client_library = "aiohttp"

    settings: OpenAISettings

    @classmethod
    def check(cls, settings: OpenAISettings, run) -> None:
        super().check(settings, run)
        s = settings
        if s.mode == "server" and not s.endpoint:
            raise ConfigRefused("service.endpoint", None, "mode=server needs http://host:port")
        if s.mode == "embedded" and s.launcher is None:
            raise ConfigRefused(
                "service.launcher", None, "mode=embedded needs vllm or llamacpp (or mode=server)"
            )
        if run.batch > 1 and s.api == "chat":
            raise ConfigRefused(
                "batch", run.batch, "api=chat takes one conversation per request; use batch=1"
            )
        if run.batch > 1 and not s.prompt_lists:
            raise ConfigRefused(
                "batch",
                run.batch,
                f"service {s.name} takes one prompt per request (prompt_lists=false); use batch=1",
            )
        if s.prompts.source == "dataset":
            if not s.prompts.path:
                raise ConfigRefused(
                    "service.prompts.path", None, "prompts.source=dataset needs a JSONL file"
                )
            if not Path(s.prompts.path).expanduser().is_file():
                raise ConfigRefused(
                    "service.prompts.path", s.prompts.path, "no such file (a local JSONL file)"
                )
        if s.prompts.prefix_tokens and s.prompts.source == "dataset":
            raise ConfigRefused(
                "service.prompts.prefix_tokens", s.prompts.prefix_tokens, "synthetic prompts only"
            )

    def __init__(self, settings: OpenAISettings, trial) -> None:
        super().__init__(settings, trial)
        self.server = None
        self.base_url = ""
        self.pool: list[prompts.Prompt] = []
        self.tokenizer: prompts.Tokenizer | None = None
        self._tokenizer_from: str | None = None  # what loaded it (client processes reload)
        self.method = "chunks"
        self._counter = itertools.count()
        self._watch: MetricsWatch | None = None
        self._reset_counters()

    # -- set-up ---------------------------------------------------------------------
    def setup(self) -> None:
        s = self.settings
        tokenizer_hint = s.model_path or s.model
        if s.mode == "server":
            self.base_url = s.endpoint.rstrip("/")
        else:
            host, port = "127.0.0.1", free_port()
            self.base_url = f"http://{host}:{port}"
            container = s.container.build(self.trial)
            if s.launcher == "llamacpp":
                with self.trial.phase("model") as fig:
                    path = (
                        Path(s.model_path)
                        if s.model_path
                        else launchers.gguf_model(self.trial.data_dir)
                    )
                    fig["size_mb"] = path.stat().st_size / 2**20
                tokenizer_hint = str(path)
                launch = launchers.llamacpp(path, s.model, host, port, s.engine)
                ready = self._models_ready  # llama.cpp has no /health
            else:
                launch = launchers.vllm(
                    s.model_path or s.model, host, port, s.model if s.model_path else None, s.engine
                )
                ready = self._health_ready
            with self.trial.phase("server_start"):
                self.server = launchers.start(
                    launch, self.trial, ready, s.ready_timeout_s, container
                )
        self._check_model()
        with self.trial.phase("prompts") as fig:
            self.tokenizer = prompts.load_tokenizer(s.tokenizer, tokenizer_hint)
            self._tokenizer_from = tokenizer_hint
            self.pool = self._prompts()
            fig["prompts"] = len(self.pool)
            fig["input_tokens_mean"] = sum(p.input_tokens for p in self.pool) / len(self.pool)
        self.method = self._probe_method()
        self.trial.notes.append(f"output tokens counted from: {self.method}")
        if not s.stream:
            self.trial.notes.append("not streamed: no TTFT or inter-token figures")

    def _prompts(self) -> list[prompts.Prompt]:
        s, p = self.settings, self.settings.prompts
        seed = self.trial.run.seed
        if p.source == "dataset":
            return prompts.dataset(
                p.path, p.count, s.max_tokens, p.output_len, seed, self.tokenizer
            )
        return prompts.synthetic(
            p.count,
            p.input_tokens,
            s.max_tokens,
            p.range_ratio,
            p.prefix_tokens,
            seed,
            self.tokenizer,
        )

    def _get(self, path: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base_url + path, headers=self._headers())
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def _health_ready(self) -> bool:
        try:
            return self._get(self.settings.health_path, 2)[0] == 200
        except OSError:
            return False

    def _models_ready(self) -> bool:
        try:
            return self._get("/v1/models", 2)[0] == 200
        except OSError:
            return False

    def _check_model(self) -> None:
        """Refuse a model the server does not serve (before any load is sent)."""
        try:
            status, body = self._get("/v1/models", 10)
        except OSError as exc:
            raise DriverError(
                f"no OpenAI-compatible server answers at {self.base_url} ({exc})",
                "connection_refused",
            ) from None
        if status != 200:
            log.warning("GET /v1/models answered %d; model name not checked", status)
            return
        try:
            served = [m["id"] for m in json.loads(body)["data"]]
        except (ValueError, KeyError, TypeError):
            return
        if self.settings.model not in served:
            raise DriverError(
                f"service.model = {self.settings.model!r} is not served at {self.base_url}; "
                f"it serves: {', '.join(served) or '(nothing)'}",
                "unknown_model",
            )

    def _probe_method(self) -> str:
        """Which counting method this server allows: one tiny request decides."""
        s = self.settings
        body = self._body(self.pool[:1], max_tokens=2)
        req = urllib.request.Request(
            self.base_url + self._path(),
            data=json.dumps(body).encode(),
            headers={**self._headers(), "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=s.request_timeout_s) as resp:
                raw = resp.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise DriverError(
                f"the probe request failed: HTTP {exc.code}: {detail}", f"http_{exc.code}"
            ) from None
        except OSError as exc:
            raise DriverError(f"the probe request failed: {exc}", "connection_lost") from None
        has_usage = '"completion_tokens"' in raw
        if has_usage:
            return "usage"
        return "tokenizer" if self.tokenizer is not None else "chunks"

    # -- requests -------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        key = self.settings.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _path(self) -> str:
        return "/v1/chat/completions" if self.settings.api == "chat" else "/v1/completions"

    def _body(self, group: list[prompts.Prompt], max_tokens: int | None = None) -> dict:
        s = self.settings
        n = max_tokens or max(p.output_tokens for p in group)
        body: dict[str, Any] = {"model": s.model, "max_tokens": n, "stream": s.stream}
        if s.api == "chat":
            p = group[0]
            body["messages"] = list(p.messages or ({"role": "user", "content": p.text},))
        else:
            body["prompt"] = group[0].text if len(group) == 1 else [p.text for p in group]
        if s.temperature is not None:
            body["temperature"] = s.temperature
        if s.ignore_eos and max_tokens is None:
            if s.ignore_eos_param in ("ignore_eos", "both"):
                body["ignore_eos"] = True
            if s.ignore_eos_param in ("min_tokens", "both"):
                body["min_tokens"] = n
        if s.stream and s.stream_usage:
            body["stream_options"] = {"include_usage": True}
        body.update(s.extra_body)
        return body

    def _take(self) -> list[prompts.Prompt]:
        b, pool = self.trial.run.batch, self.pool
        i = next(self._counter) * b
        return [pool[(i + k) % len(pool)] for k in range(b)]

    async def open_worker(self, worker: int) -> _Worker:
        s = self.settings
        # One keep-alive connection per worker, like a real client; no total
        # timeout on the connector (the request's own timeout bounds it).
        conn = aiohttp.TCPConnector(limit=1, force_close=False, enable_cleanup_closed=True)
        timeout = aiohttp.ClientTimeout(total=s.request_timeout_s, sock_connect=s.connect_timeout_s)
        return _Worker(aiohttp.ClientSession(connector=conn, timeout=timeout))

    async def close_worker(self, state: _Worker) -> None:
        if state is not None:
            await state.session.close()

    async def operation(self, ctx) -> int:
        s = self.settings
        group = self._take()
        body = self._body(group)
        sent = pc()
        async with ctx.state.session.post(
            self.base_url + self._path(), json=body, headers=self._headers()
        ) as resp:
            if resp.status != 200:
                detail = (await resp.read())[:300].decode(errors="replace")
                raise DriverError(f"HTTP {resp.status}: {detail}", f"http_{resp.status}")
            if s.stream:
                tokens, first, last, texts, usage = await self._read_stream(
                    resp, ctx, len(group), body["max_tokens"]
                )
            else:
                tokens, first, last, texts, usage = await self._read_whole(resp)
        end = pc()
        n_out = self._count(tokens, texts, usage)
        if usage and usage.get("prompt_tokens"):
            self._in_tokens += int(usage["prompt_tokens"])
        per_choice = n_out / len(group)
        tpot = (last - first) / (per_choice - 1) if first and per_choice > 1 else None
        if tpot is not None:
            ctx.observe("tpot", int(tpot))
        intended = ctx.intended_ns or sent
        if first:
            ctx.observe("ttft", first - intended)
        if s.slo.any() and self._meets_slo(first, tpot, end, intended):
            ctx.observe("slo_met", end - intended)
        return n_out

    async def _read_stream(self, resp, ctx, n_choices: int, max_tokens: int):
        """Read SSE lines; timestamps are taken as each line arrives, before parsing."""
        chat = self.settings.api == "chat"
        first = last = 0
        prev = [0] * n_choices
        chunks = [0] * n_choices
        finish: list[str | None] = [None] * n_choices
        texts: list[list[str]] = [[] for _ in range(n_choices)]
        usage = None
        done = False
        observe = ctx.observe
        try:
            async for line in resp.content:
                now = pc()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    done = True
                    break
                try:
                    obj = json.loads(payload)
                except ValueError:
                    raise DriverError(
                        f"unparsable stream chunk: {payload[:120]!r}", "bad_response"
                    ) from None
                if "error" in obj:
                    raise DriverError(f"error in stream: {obj['error']!r:.300}", "stream_error")
                if obj.get("usage"):
                    usage = obj["usage"]
                for ch in obj.get("choices") or ():
                    i = ch.get("index", 0)
                    if i >= n_choices:
                        continue
                    text = (ch.get("delta") or {}).get("content") if chat else ch.get("text")
                    if text:
                        if not first:
                            first = now
                            ctx.first_byte()
                        if prev[i]:
                            observe("itl", now - prev[i])
                        prev[i] = last = now
                        chunks[i] += 1
                        texts[i].append(text)
                    if ch.get("finish_reason"):
                        finish[i] = ch["finish_reason"]
        except aiohttp.ClientPayloadError as exc:
            raise DriverError(
                f"stream cut after {sum(chunks)} chunks: {exc}", "truncated"
            ) from None
        except (aiohttp.ServerDisconnectedError, ConnectionResetError) as exc:
            cls = "truncated" if first else "connection_lost"
            raise DriverError(f"connection lost mid-stream: {exc}", cls) from None
        if not done and not all(finish):
            raise DriverError(
                f"stream ended before its end ({sum(chunks)} chunks, no [DONE])", "truncated"
            )
        if not all(finish) and first:
            raise DriverError("stream ended without a finish reason", "truncated")
        if self.settings.ignore_eos and "stop" in finish:
            raise DriverError(
                f"stopped before max_tokens={max_tokens} although ignore_eos is set", "truncated"
            )
        return chunks, first, last, texts, usage

    async def _read_whole(self, resp):
        try:
            obj = await resp.json(content_type=None)
        except (ValueError, aiohttp.ContentTypeError) as exc:
            raise DriverError(f"response is not JSON: {exc}", "bad_response") from None
        chat = self.settings.api == "chat"
        choices = obj.get("choices") or []
        texts = [
            [(c.get("message") or {}).get("content") or "" if chat else c.get("text") or ""]
            for c in choices
        ]
        return [1 if t[0] else 0 for t in texts], 0, 0, texts, obj.get("usage")

    def _count(self, chunks: list[int], texts: list[list[str]], usage: dict | None) -> int:
        if usage and usage.get("completion_tokens") is not None:
            self._by["usage"] += 1
            return int(usage["completion_tokens"])
        if self.tokenizer is not None:
            self._by["tokenizer"] += 1
            return sum(len(self.tokenizer.encode("".join(t))) for t in texts)
        self._by["chunks"] += 1
        return sum(chunks)

    def _meets_slo(self, first: int, tpot: float | None, end: int, intended: int) -> bool:
        slo = self.settings.slo
        if slo.ttft_ms is not None and (not first or (first - intended) / 1e6 > slo.ttft_ms):
            return False
        if slo.tpot_ms is not None and tpot is not None and tpot / 1e6 > slo.tpot_ms:
            return False
        return not (slo.e2e_ms is not None and (end - intended) / 1e6 > slo.e2e_ms)

    def classify_error(self, exc: BaseException) -> str:
        if isinstance(exc, aiohttp.ClientConnectorError):
            if isinstance(exc.os_error, ConnectionRefusedError):
                return "connection_refused"
            return "connection_failed"
        if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | OSError):
            return "connection_lost"  # e.g. a reset on a keep-alive connection
        if isinstance(exc, aiohttp.ClientPayloadError):
            return "truncated"
        if isinstance(exc, aiohttp.ClientResponseError):
            return f"http_{exc.status}"
        if isinstance(exc, asyncio.TimeoutError):
            return "timeout"
        return super().classify_error(exc)

    # -- the measured window ----------------------------------------------------------
    def _reset_counters(self) -> None:
        self._by = {"usage": 0, "tokenizer": 0, "chunks": 0}
        self._in_tokens = 0

    def measure_start(self) -> None:
        self._reset_counters()
        s = self.settings
        if s.metrics:
            self._watch = MetricsWatch(
                self.base_url + "/metrics", s.metrics_prefix, s.metrics_interval_s
            )
            self._watch.start()

    def measure_end(self) -> dict[str, float]:
        out: dict[str, float] = {}
        counted = sum(self._by.values())
        if counted:  # counters of this process (clients=1); client processes keep theirs
            out.update({f"tokens.by_{k}": float(v) for k, v in self._by.items() if v})
            if self._in_tokens:
                out["tokens.input_per_request"] = self._in_tokens / counted
        if self._watch is not None:
            out.update(self._watch.stop())
            self._watch = None
        return out

    def summarize(self, recording) -> dict[str, float]:
        out: dict[str, float] = {}
        elapsed = recording.elapsed_s()
        if recording.ok:
            out["tokens.output_per_request"] = recording.size_ok / recording.ok
        if self.settings.slo.any() and elapsed > 0:
            good = recording.hist.get("x.slo_met")
            n_good = good.count if good is not None else 0
            out["goodput.requests_per_s"] = n_good / elapsed
            out["goodput.fraction"] = n_good / recording.total if recording.total else 0.0
        return out

    def sut_pids(self) -> list[int]:
        return [self.server.pid] if self.server else []

    def teardown(self) -> None:
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        if self.server is not None:
            self.server.stop()

    def __getstate__(self):
        # Client processes get the endpoint and the prompts, not the server handle.
        state = dict(self.__dict__)
        state["server"] = None
        state["_watch"] = None
        state["_counter"] = None
        state["tokenizer"] = None  # native objects do not pickle: reloaded below
        return state

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        if self.method == "tokenizer":
            self.tokenizer = prompts.load_tokenizer(self.settings.tokenizer, self._tokenizer_from)
        # Each client process starts at a different point of the prompt pool.
        self._counter = itertools.count((os.getpid() * 7919) % max(1, len(self.pool)))
