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

Workload shapes (docs/drivers.md, "Workload shapes for LLM servers"):

- a trace (``trace.path=``): each request's prompt is built from its record's
  ``hash_ids`` (``prompts.block_tokens`` words a block; requests sharing leading
  blocks share byte-identical prefixes) cut to its ``input_length``, and asks for
  its ``output_length`` tokens;
- a mix (``mix={chat: 0.8, summarize: 0.2}``): ``classes.<name>`` may set the class's
  ``model`` (or LoRA adapter), ``api``, ``input_tokens`` and ``max_tokens``;
- ``prompts.input_dist``/``output_dist``: lengths drawn per prompt from the trial's
  seed (fixed, uniform, normal, lognormal, empirical); ``extra.lengths.*`` sums them up;
- ``sessions.turns``: one request is a conversation whose turns resend the history
  (``drivers/inference/sessions.py``), with ``distributions.turn<k>.ttft``; where the
  server says how many prompt tokens it found cached, ``extra.prefix_cache.hit_rate``;
  ``sessions.dataset``: the conversations' user turns come from a JSONL file
  (ShareGPT or OpenAI messages; ``drivers/inference/conversations.py``), the history
  holds the server's own answers, and the dataset's answers set each turn's
  ``max_tokens``.

Errors by class: ``http_<status>``, ``timeout``, ``connection_refused``,
``connection_lost``, ``truncated`` (the stream ended before its end: no
``[DONE]``/finish reason, or ``stop`` before ``max_tokens`` with ``ignore_eos``),
``stream_error`` (an error object in the stream), ``bad_response``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import json
import logging
import os
import time
import urllib.error
import urllib.request
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from benchflow.sut.servers import free_port
from benchflow.workload.lengths import LengthConfig, LengthSampler
from benchflow.workload.lengths import summarize as summarize_lengths
from benchflow.workload.prompts import prompt_for, synthetic_prompt
from drivers.base import ConfigRefused, Driver, DriverError, ServiceSettings
from drivers.inference import launchers, prompts
from drivers.inference.conversations import ConversationError, index_conversations
from drivers.inference.launchers import ContainerSettings
from drivers.inference.server_metrics import MetricsWatch
from drivers.inference.sessions import (
    DatasetSessions,
    Groups,
    SessionSettings,
    answer_budget,
    history_text,
)

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
    input_dist: LengthConfig | None = Field(
        None, description="synthetic input lengths (null: input_tokens and range_ratio)"
    )
    output_dist: LengthConfig | None = Field(
        None, description="synthetic max_tokens per prompt (null: max_tokens and range_ratio)"
    )
    block_tokens: int = Field(
        512, ge=1, description="trace replay: words per hash block (Mooncake's: 512)"
    )


class ClassSettings(_Strict):
    """A request class of a mix (``mix={chat: 0.8, summarize: 0.2}``); unset keys: the
    service's own."""

    model: str | None = Field(None, description="the model (or LoRA adapter) name sent")
    input_tokens: int | None = Field(None, ge=1, description="synthetic prompt length (mean)")
    max_tokens: int | None = Field(None, ge=1)
    api: Literal["completions", "chat"] | None = None


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
    classes: dict[str, ClassSettings] = Field(default_factory=dict)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
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


@dataclass
class _Plan:
    """How requests of one class (or of no class) are made."""

    model: str
    api: str
    max_tokens: int  # a trace request without an output length asks for this many
    pool: list[prompts.Prompt]
    counter: Any = None  # itertools.count over the pool (rebuilt in client processes)

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.api == "chat" else "/v1/completions"


@functools.lru_cache(maxsize=8192)
def trace_text(hash_ids: tuple[int, ...], total: int | None, block_tokens: int, seed: int) -> str:
    """A trace request's prompt: its blocks' text (shared blocks: byte-identical prefixes).

    Cached: a trace's requests share blocks and often whole ``hash_ids``, so the text
    is joined once per distinct request, not per replay (and a warm-up replays the
    trace's start again).
    """
    return prompt_for(hash_ids, block_tokens=block_tokens, seed=seed, total_tokens=total)


class OpenAIDriver(Driver):
    name = "openai"
    family = "inference"
    description = "OpenAI-compatible completions/chat (vLLM, llama.cpp, ...): TTFT, ITL, tokens/s"
    Settings = OpenAISettings
    batch_meaning = "prompts per /v1/completions request"
    size_unit = "tokens"
    throughput_basis = "size"
    client_library = "aiohttp"
    # any name; service.classes.<name> may give it its own model, api and lengths
    mix_classes = "any"

    settings: OpenAISettings

    def server_sample(self) -> dict[str, float]:
        """The server's gauges (vLLM: requests running and waiting, KV-cache use) from
        the last scrape of ``/metrics`` (``service.metrics``), during the measured window."""
        watch = self._watch
        return dict(watch.latest) if watch is not None else {}

    @classmethod
    def inactive_keys(cls, settings) -> tuple[str, ...]:
        """The workload-shape settings left at "off" (see ``Driver.inactive_keys``)."""
        p, out = settings.prompts, []
        if p.input_dist is None:
            out.append("prompts.input_dist")
        if p.output_dist is None:
            out.append("prompts.output_dist")
        if p.block_tokens == PromptSettings.model_fields["block_tokens"].default:
            out.append("prompts.block_tokens")
        if settings.sessions == SessionSettings():
            out.append("sessions")
        if settings.sessions.dataset is None:  # as before the key existed: same hashes
            out.append("sessions.dataset")
        if settings.sessions.max_turns is None:
            out.append("sessions.max_turns")
        return tuple(out)

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
        for name, c in s.classes.items():
            if run.batch > 1 and c.api == "chat":
                raise ConfigRefused(
                    f"service.classes.{name}.api", "chat", "one conversation per request: batch=1"
                )
        if run.batch > 1 and s.sessions.active:
            raise ConfigRefused(
                "batch", run.batch, "service.sessions: one conversation per request; use batch=1"
            )
        cls._check_dataset(s.sessions)
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

    @staticmethod
    def _check_dataset(ss: SessionSettings) -> None:
        """``sessions.dataset``: the file is read (indexed) here, so a missing file or a
        malformed line exits 2 before any trial (the index is cached for setup)."""
        if ss.dataset is None:
            if ss.max_turns is not None:
                raise ConfigRefused(
                    "service.sessions.max_turns",
                    ss.max_turns,
                    "caps a dataset's conversations: set service.sessions.dataset too "
                    "(synthetic sessions: service.sessions.turns)",
                )
            return
        if ss.turns != 1:
            raise ConfigRefused(
                "service.sessions.turns",
                ss.turns,
                "1 with service.sessions.dataset: its conversations give the turns "
                "(cap them with service.sessions.max_turns)",
            )
        try:
            found = index_conversations(ss.dataset)
        except ConversationError as exc:
            raise ConfigRefused(
                "service.sessions.dataset",
                ss.dataset,
                f"{exc} (a JSONL file, one conversation a line: ShareGPT 'conversations' "
                "or OpenAI 'messages'; a relative path is taken from the working directory)",
            ) from None
        if not len(found):
            raise ConfigRefused(
                "service.sessions.dataset",
                ss.dataset,
                f"no conversation with a user turn in it ({found.skipped} skipped, "
                f"{found.lines} lines)",
            )

    def __init__(self, settings: OpenAISettings, trial) -> None:
        super().__init__(settings, trial)
        self.server = None
        self.base_url = ""
        self.pool: list[prompts.Prompt] = []
        self.tokenizer: prompts.Tokenizer | None = None
        self._tokenizer_from: str | None = None  # what loaded it (client processes reload)
        self.method = "chunks"
        self._plan: _Plan | None = None  # requests without a class (or of an unlisted one)
        self._plans: dict[str, _Plan] = {}  # service.classes
        self._groups: Groups | None = None
        self._sessions = itertools.count()
        self._dataset: DatasetSessions | None = None  # sessions.dataset
        self._measuring = False  # measured sessions take the order from its start
        self._conv_measured = itertools.count()
        self._conv_warm = itertools.count()  # warm-up sessions: from the order's end
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
            self._plan = _Plan(s.model, s.api, s.max_tokens, self.pool, itertools.count())
            for name, c in s.classes.items():
                pool = self.pool
                if c.input_tokens is not None or c.max_tokens is not None:
                    # A pool of its own where its lengths differ, seeded apart (by
                    # its name) so that two classes' prompts differ too.
                    salt = zlib.crc32(name.encode())
                    pool = self._prompts(c.input_tokens, c.max_tokens, salt)
                self._plans[name] = _Plan(
                    c.model or s.model,
                    c.api or s.api,
                    c.max_tokens or s.max_tokens,
                    pool,
                    itertools.count(),
                )
            if s.sessions.shared_prefix_groups:
                self._groups = Groups(s.sessions, self.trial.run.seed)
            fig["prompts"] = len(self.pool)
            fig["input_tokens_mean"] = sum(p.input_tokens for p in self.pool) / len(self.pool)
            if s.sessions.dataset is not None:
                self._open_dataset(fig)
        if self._dataset is None:  # a dataset's turns are not the pool's prompts
            self._record_lengths()
        self.method = self._probe_method()
        self.trial.notes.append(f"output tokens counted from: {self.method}")
        if not s.stream:
            self.trial.notes.append("not streamed: no TTFT or inter-token figures")

    def _prompts(
        self, input_tokens: int | None = None, max_tokens: int | None = None, salt: int = 0
    ) -> list[prompts.Prompt]:
        """The prompt pool; ``input_tokens``/``max_tokens``: a class's own means."""
        s, p = self.settings, self.settings.prompts
        seed = self.trial.run.seed + salt
        n_out = max_tokens or s.max_tokens
        if p.source == "dataset":
            return prompts.dataset(p.path, p.count, n_out, p.output_len, seed, self.tokenizer)
        return prompts.synthetic(
            p.count,
            input_tokens or p.input_tokens,
            n_out,
            p.range_ratio,
            p.prefix_tokens,
            seed,
            self.tokenizer,
            in_lengths=_draw(p.input_dist, input_tokens, seed, 0, p.count),
            out_lengths=_draw(p.output_dist, max_tokens, seed, 1, p.count),
        )

    def _open_dataset(self, fig: dict[str, float]) -> None:
        """``sessions.dataset``: its index (cached since validation), the trial's order
        of its conversations, and its lineage: ``custom.sessions.dataset.*`` (path,
        sha256, lines, conversations, user turns, skipped) and ``extra.sessions.dataset.*``."""
        try:
            self._dataset = DatasetSessions(self.settings.sessions, self.trial.run.seed)
        except ConversationError as exc:
            raise DriverError(str(exc), "bad_dataset") from None
        f = self._dataset.file
        fig["conversations"] = len(f)
        info = {"given": self.settings.sessions.dataset, **f.describe()}
        self.trial.custom.setdefault("sessions", {})["dataset"] = info
        self.trial.extra["sessions.dataset.conversations"] = float(len(f))
        self.trial.extra["sessions.dataset.skipped"] = float(f.skipped)
        note = (
            f"conversations from {f.path} (sha256 {f.sha256}): {len(f)} with a user turn, "
            f"{f.skipped} skipped (no user turn)"
        )
        self.trial.notes.append(note)
        (log.warning if f.skipped else log.info)("%s", note)

    def _record_lengths(self) -> None:
        """The pool's lengths, as drawn, in ``extra.lengths.{input,output}.*`` (replaced
        in :meth:`measure_end` by the lengths requests asked for, where this process
        sent them: with ``clients > 1`` the client processes did)."""
        for key, values in (
            ("input", [q.input_tokens for q in self.pool]),
            ("output", [q.output_tokens for q in self.pool]),
        ):
            for stat, v in summarize_lengths(np.array(values)).items():
                if v is not None:
                    self.trial.extra[f"lengths.{key}.{stat}"] = float(v)

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
        asked = {"service.model": self.settings.model}
        for name, c in self.settings.classes.items():
            if c.model is not None:
                asked[f"service.classes.{name}.model"] = c.model
        for key, model in asked.items():
            if model not in served:
                raise DriverError(
                    f"{key} = {model!r} is not served at {self.base_url}; "
                    f"it serves: {', '.join(served) or '(nothing)'}",
                    "unknown_model",
                )

    def _probe_method(self) -> str:
        """Which counting method this server allows: one tiny request decides."""
        s = self.settings
        body = self._body(self.pool[:1], max_tokens=2)
        req = urllib.request.Request(
            self.base_url + self._plan.path,
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

    def _body(
        self,
        group: list[prompts.Prompt],
        max_tokens: int | None = None,
        plan: _Plan | None = None,
        messages: list[dict] | None = None,
    ) -> dict:
        """The request's JSON; ``max_tokens`` set: a probe (no ignore_eos); ``messages``:
        a conversation's history (sessions)."""
        s = self.settings
        plan = plan or self._plan
        n = max_tokens or max(p.output_tokens for p in group)
        body: dict[str, Any] = {"model": plan.model, "max_tokens": n, "stream": s.stream}
        if messages is not None:
            if plan.api == "chat":
                body["messages"] = messages
            else:
                body["prompt"] = history_text(messages)
        elif plan.api == "chat":
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

    def _take(self, plan: _Plan, b: int | None = None) -> list[prompts.Prompt]:
        b, pool = b or self.trial.run.batch, plan.pool
        i = next(plan.counter) * b
        return [pool[(i + k) % len(pool)] for k in range(b)]

    def _trace_prompt(self, item, plan: _Plan) -> prompts.Prompt:
        """A trace request's prompt: its hash blocks' text cut to its input length (or
        text of its own of that length), asking for its output length."""
        s = self.settings
        n_out = plan.max_tokens if item.output_length is None else max(1, item.output_length)
        seed = self.trial.run.seed
        if item.hash_ids:
            text = trace_text(item.hash_ids, item.input_length, s.prompts.block_tokens, seed)
        elif item.input_length:
            # unique to this request: nothing to cache (a few µs per 100 words)
            text = synthetic_prompt(item.index, item.input_length, seed)
        else:  # the trace gives no input: the pool's next prompt
            return dataclasses.replace(self._take(plan, 1)[0], output_tokens=n_out)
        return prompts.Prompt(text, None, len(text.split()), n_out)

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
        plan = self._plans.get(ctx.cls, self._plan) if ctx.cls else self._plan
        if self._dataset is not None:  # a trace gives the arrival times only
            return await self._session(ctx, plan, None)
        group = [self._trace_prompt(ctx.item, plan)] if ctx.item is not None else self._take(plan)
        for p in group:  # the lengths asked for, summarized in measure_end
            self._sent_in.append(p.input_tokens)
            self._sent_out.append(p.output_tokens)
        if s.sessions.active:
            return await self._session(ctx, plan, group[0])
        body = self._body(group, plan=plan)
        sent = pc()
        n_out, first, last, _ = await self._exchange(ctx, plan, body, len(group))
        end = pc()
        tpot = self._tpot(ctx, n_out / len(group), first, last)
        intended = ctx.intended_ns or sent
        if first:
            ctx.observe("ttft", first - intended)
        if s.slo.any() and self._meets_slo(first, tpot, end, intended):
            ctx.observe("slo_met", end - intended)
        return n_out

    async def _session(self, ctx, plan: _Plan, opening: prompts.Prompt | None) -> int:
        """One conversation of ``sessions.turns`` turns (``opening`` None: the next
        conversation of ``sessions.dataset``), each resending the history
        (sessions.py). TTFT per turn is ``turn<k>.ttft`` (turn 1 from the session's
        intended start, later turns from their send); ``ttft`` is turn 1's, the
        request's latency the whole session's, think times included."""
        s = self.settings
        n_turns = s.sessions.turns
        messages: list[dict] = []
        group = self._groups.of(next(self._sessions)) if self._groups else None
        if group is not None:
            messages.append({"role": "system", "content": self._groups.texts[group]})
        conv, counted = None, False
        if opening is None:
            counted = self._measuring
            conv = self._next_conversation(counted)
            n_turns = len(conv.turns)
            if conv.system:  # one system message: the group's prompt, then the dataset's
                if messages:
                    messages[0]["content"] += "\n" + conv.system
                else:
                    messages.append({"role": "system", "content": conv.system})
            if counted:
                self._sent_sessions += 1
        total = ttft_first = 0
        tpot = None
        for k in range(1, n_turns + 1):
            if conv is not None:
                turn = conv.turns[k - 1]
                prompt = prompts.Prompt(
                    turn.user,
                    None,
                    len(turn.user.split()),
                    answer_budget(turn.answer, plan.max_tokens),
                )
                self._sent_in.append(prompt.input_tokens)
                self._sent_out.append(prompt.output_tokens)
                if counted:
                    self._sent_turns += 1
            else:
                prompt = opening if k == 1 else self._take(plan, 1)[0]
            messages.append({"role": "user", "content": prompt.text})
            body = self._body([prompt], plan=plan, messages=list(messages))
            sent = pc()
            n_out, first, last, texts = await self._exchange(ctx, plan, body, 1)
            start = (ctx.intended_ns or sent) if k == 1 else sent
            if first:
                ctx.observe(f"turn{k}.ttft", first - start)
                if k == 1:
                    ttft_first = first
                    ctx.observe("ttft", first - start)
            turn_tpot = self._tpot(ctx, n_out, first, last)
            tpot = turn_tpot if k == 1 else tpot
            total += n_out
            messages.append({"role": "assistant", "content": "".join(texts[0]) if texts else ""})
            if k < n_turns and s.sessions.think_s:
                await asyncio.sleep(s.sessions.think_s)
        end = pc()
        intended = ctx.intended_ns or end
        if s.slo.any() and self._meets_slo(ttft_first, tpot, end, intended):
            ctx.observe("slo_met", end - intended)
        return total

    def _next_conversation(self, measured: bool):
        """The dataset's conversation for the next session: measured sessions take the
        seeded order from its start (0, 1, ...), warm-up ones from its end (-1, -2, ...)."""
        j = next(self._conv_measured) if measured else -1 - next(self._conv_warm)
        try:
            return self._dataset.conversation(j)
        except ConversationError as exc:
            raise DriverError(str(exc), "bad_dataset") from None

    def _tpot(self, ctx, per_choice: float, first: int, last: int) -> float | None:
        tpot = (last - first) / (per_choice - 1) if first and per_choice > 1 else None
        if tpot is not None:
            ctx.observe("tpot", int(tpot))
        return tpot

    async def _exchange(self, ctx, plan: _Plan, body: dict, n_choices: int):
        """POST one request and read its answer: (output tokens, first and last token
        times, texts per choice); counts input and prefix-cached tokens."""
        s = self.settings
        async with ctx.state.session.post(
            self.base_url + plan.path, json=body, headers=self._headers()
        ) as resp:
            if resp.status != 200:
                detail = (await resp.read())[:300].decode(errors="replace")
                raise DriverError(f"HTTP {resp.status}: {detail}", f"http_{resp.status}")
            if s.stream:
                tokens, first, last, texts, usage, timings = await self._read_stream(
                    resp, ctx, n_choices, body["max_tokens"], plan.api
                )
            else:
                tokens, first, last, texts, usage, timings = await self._read_whole(resp, plan.api)
        n_out = self._count(tokens, texts, usage)
        if usage and usage.get("prompt_tokens"):
            self._in_tokens += int(usage["prompt_tokens"])
        self._count_cached(usage, timings)
        return n_out, first, last, texts

    def _count_cached(self, usage: dict | None, timings: dict | None) -> None:
        """Prompt tokens the server found in its prefix cache, where it says: OpenAI's
        and vLLM's ``usage.prompt_tokens_details.cached_tokens``, llama.cpp's
        ``timings.cache_n`` (next to ``prompt_n``, the tokens it computed)."""
        details = (usage or {}).get("prompt_tokens_details") or {}
        if details.get("cached_tokens") is not None and usage.get("prompt_tokens"):
            self._cache["cached"] += int(details["cached_tokens"])
            self._cache["prompt"] += int(usage["prompt_tokens"])
            self._cache["requests"] += 1
        elif timings and timings.get("cache_n") is not None:
            cached = int(timings["cache_n"])
            self._cache["cached"] += cached
            self._cache["prompt"] += cached + int(timings.get("prompt_n") or 0)
            self._cache["requests"] += 1

    async def _read_stream(self, resp, ctx, n_choices: int, max_tokens: int, api: str):
        """Read SSE lines; timestamps are taken as each line arrives, before parsing."""
        chat = api == "chat"
        first = last = 0
        prev = [0] * n_choices
        chunks = [0] * n_choices
        finish: list[str | None] = [None] * n_choices
        texts: list[list[str]] = [[] for _ in range(n_choices)]
        usage = timings = None
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
                if obj.get("timings"):
                    timings = obj["timings"]
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
        return chunks, first, last, texts, usage, timings

    async def _read_whole(self, resp, api: str):
        try:
            obj = await resp.json(content_type=None)
        except (ValueError, aiohttp.ContentTypeError) as exc:
            raise DriverError(f"response is not JSON: {exc}", "bad_response") from None
        chat = api == "chat"
        choices = obj.get("choices") or []
        texts = [
            [(c.get("message") or {}).get("content") or "" if chat else c.get("text") or ""]
            for c in choices
        ]
        counts = [1 if t[0] else 0 for t in texts]
        return counts, 0, 0, texts, obj.get("usage"), obj.get("timings")

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
        self._cache = {"cached": 0, "prompt": 0, "requests": 0}
        self._sent_in, self._sent_out = array("q"), array("q")
        self._sent_sessions = self._sent_turns = 0  # sessions.dataset, measured

    def measure_start(self) -> None:
        self._reset_counters()
        self._measuring = True
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
        if self._sent_in:  # what this process sent (a trace's lengths), not the pool's
            for key, values in (("input", self._sent_in), ("output", self._sent_out)):
                for stat, v in summarize_lengths(np.asarray(values)).items():
                    out[f"lengths.{key}.{stat}"] = float(v)
        if self._sent_sessions:  # sessions.dataset: conversations and turns sent
            out["sessions.conversations"] = float(self._sent_sessions)
            out["sessions.turns"] = float(self._sent_turns)
        c = self._cache
        if c["requests"] and c["prompt"]:  # the server says what its prefix cache held
            out["prefix_cache.hit_rate"] = c["cached"] / c["prompt"]
            out["prefix_cache.cached_tokens_per_request"] = c["cached"] / c["requests"]
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
        if self._dataset is not None:
            self._dataset.file.close()

    def __getstate__(self):
        # Client processes get the endpoint and the prompts, not the server handle.
        state = dict(self.__dict__)
        state["server"] = None
        state["_watch"] = None
        state["_sessions"] = None
        state["_conv_measured"] = state["_conv_warm"] = None
        state["tokenizer"] = None  # native objects do not pickle: reloaded below
        return state

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        if self.method == "tokenizer":
            self.tokenizer = prompts.load_tokenizer(self.settings.tokenizer, self._tokenizer_from)
        # Each client process starts at a different point of the prompt pools.
        for plan in [self._plan, *self._plans.values()]:
            if plan is not None:
                plan.counter = itertools.count((os.getpid() * 7919) % max(1, len(plan.pool)))
        self._sessions = itertools.count((os.getpid() * 7919) % 1_000_003)
        # sessions.dataset: a client process is never told the measured phase began;
        # its sessions take the order from the end, from a point of its own
        self._conv_measured = itertools.count()
        self._conv_warm = itertools.count((os.getpid() * 7919) % 1_000_003)


def _draw(
    dist: LengthConfig | None, mean: int | None, seed: int, stream: int, n: int
) -> np.ndarray | None:
    """``n`` lengths by ``dist`` (None: none; the caller's default), its mean replaced
    by a class's ``mean`` where it has one; at least 1 (a server takes no empty ask)."""
    if dist is None:
        return None
    if mean is not None and dist.distribution != "empirical":
        dist = dist.model_copy(update={"mean": float(mean)})
    return np.maximum(LengthSampler(dist, seed, stream).take(n), 1)
