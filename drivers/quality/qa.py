"""``qa``: the accuracy of a model behind an OpenAI-compatible endpoint on a QA set.

The **target** is the endpoint and the model it serves (``target_fields``);
the workload is the set (``dataset``: the shipped smoke set or a JSONL file),
how questions are asked (``api``, ``instructions``, ``template``,
``max_tokens``, deterministic decoding: ``temperature`` 0 and a fixed ``seed``)
and how answers are scored (``scoring``).

One measured request asks one question; the measured phase is one pass over the
questions not yet answered (``planned_requests``), so latency per question is
reported as for any trial. Answers are scored by

- ``exact``: exact match after SQuAD's normalisation (:mod:`drivers.quality.scoring`);
- ``f1``: token F1 after the same normalisation;
- ``judge``: a judge model at another endpoint under a fixed, versioned rubric
  (:mod:`drivers.quality.judge`), after the answers are in.

``quality.accuracy`` is the mean per-question score of that method over the
scored questions, with a seeded percentile-bootstrap confidence interval,
overall and per category. A question whose request still fails after the
retries (:mod:`drivers.quality.client`) is an **error**, not a wrong answer; a
judge that fails on an answer is a **judge failure**, not a score.

Answers (and judgements) are checkpointed per question in the trial's
``state_dir`` (:class:`drivers.checkpoint.ItemLog`): an interrupted trial
resumes where it stopped when the same command runs again, never asks or
scores a question twice, and ends with the scores an uninterrupted run gives.
Tokens (from the server's usage, else counted) and their estimated cost
(``prices``) cover the whole evaluation, across resumed trials.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from drivers.base import ConfigRefused, Driver, DriverError, Resources, ServiceSettings
from drivers.checkpoint import ItemLog
from drivers.quality import client, dataset, judge, prompt, scoring
from drivers.quality.client import APIError, Reply, Request, RetrySettings
from drivers.quality.dataset import QAItem

log = logging.getLogger("benchflow.drivers.qa")

UNCATEGORISED = "uncategorised"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Prices(_Strict):
    """Prices per token, for the estimated cost (0: not priced)."""

    prompt_token: float = Field(0.0, ge=0, description="price of one prompt (input) token")
    completion_token: float = Field(0.0, ge=0, description="price of one completion token")
    currency: str = "USD"

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.prompt_token + completion_tokens * self.completion_token


class JudgeSettings(_Strict):
    """The judge model (``scoring: judge``): another OpenAI-compatible endpoint."""

    endpoint: str | None = Field(None, description="http://host:port of the judge")
    model: str | None = Field(None, description="the judge model's name at that endpoint")
    api: Literal["chat", "completions"] = "chat"
    rubric: Literal[tuple(judge.RUBRICS)] = "qa-correctness-v1"  # type: ignore[valid-type]
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(0.0, ge=0)
    concurrency: int = Field(1, ge=1, description="judge requests in flight")
    max_failure_rate: float = Field(
        0.1, ge=0, le=1, description="judge failures above this fraction make the trial invalid"
    )
    extra_body: dict[str, Any] = Field(default_factory=dict)
    api_key_env: str | None = Field(None, description="environment variable holding its API key")
    prices: Prices = Field(default_factory=Prices)
    request_timeout_s: float = Field(120, gt=0)


class BootstrapSettings(_Strict):
    resamples: int = Field(2000, ge=100, le=1_000_000)
    confidence: float = Field(0.95, gt=0, lt=1)


class QASettings(ServiceSettings):
    mode: Literal["server"] = Field("server", description="qa evaluates a running endpoint")
    endpoint: str | None = Field(None, description="http://host:port of the target")
    model: str | None = Field(None, description="the model name the endpoint serves")
    api: Literal["chat", "completions"] = "chat"
    stream: bool = Field(False, description="stream answers (time to first token)")
    max_tokens: int = Field(32, ge=1)
    temperature: float = Field(0.0, ge=0)
    seed: int | None = Field(None, description="sent with each request; null: the trial's seed")
    stop: list[str] | None = Field(None, description='null: ["\\n"] for completions, none for chat')
    instructions: str | None = Field(
        "short-answer-v1", description="a preset id (drivers/quality/prompt.py) or literal text"
    )
    template: str = Field(prompt.DEFAULT_TEMPLATE, description="completions: the prompt")
    extra_body: dict[str, Any] = Field(default_factory=dict)
    dataset: str = Field("shipped", description="shipped, or a JSONL file of questions")
    n_items: int | None = Field(None, ge=1, description="only the first n questions")
    scoring: Literal["exact", "f1", "judge"] = "exact"
    judge: JudgeSettings = Field(default_factory=JudgeSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    prices: Prices = Field(default_factory=Prices)
    bootstrap: BootstrapSettings = Field(default_factory=BootstrapSettings)
    tokenizer: str | None = Field(
        None, description="counts tokens when the server sends no usage (.gguf, tokenizer.json)"
    )
    api_key_env: str | None = Field(None, description="environment variable holding its API key")
    request_timeout_s: float = Field(120, gt=0)
    connect_timeout_s: float = Field(10, gt=0)
    resources: Resources = Field(default_factory=lambda: Resources(cpus=1, mem_gb=1, time_min=30))


class QAOutputs(BaseModel):
    """quality(): overall figures, plus ``category.<name>.{accuracy,ci_low,ci_high,scored}``."""

    model_config = ConfigDict(extra="allow")
    accuracy: float = Field(ge=0, le=1, description="mean score of `scoring` over scored items")
    accuracy_ci_low: float = Field(ge=0, le=1)
    accuracy_ci_high: float = Field(ge=0, le=1)
    exact_match: float = Field(ge=0, le=1, description="over answered questions")
    f1: float = Field(ge=0, le=1, description="over answered questions")
    items: int = Field(ge=1, description="questions in the set")
    answered: int = Field(ge=0)
    scored: int = Field(ge=1)
    errors: int = Field(ge=0, description="questions whose request failed after its retries")
    not_asked: int = Field(ge=0, description="questions left (e.g. a `requests` cap)")
    judge_failures: int = Field(ge=0, description="answers the judge could not score")


class QADriver(Driver):
    name = "qa"
    family = "quality"
    description = "accuracy of a model at an OpenAI-compatible endpoint on a QA set (EM/F1/judge)"
    Settings = QASettings
    Outputs = QAOutputs
    target_fields = ("endpoint", "model")
    size_unit = "tokens"  # completion tokens of an answer
    throughput_basis = "requests"  # questions answered per second
    headline_figures = "quality"
    supports_clients = False  # the checkpoint log stays in this process
    client_library = "aiohttp"

    settings: QASettings

    @classmethod
    def check(cls, settings: QASettings, run) -> None:
        super().check(settings, run)
        s = settings
        if s.dataset != "shipped" and not Path(s.dataset).expanduser().is_file():
            raise ConfigRefused(
                "service.dataset",
                s.dataset,
                "no such file; give a JSONL file of questions or shipped",
            )
        if s.api == "completions" and (problem := prompt.template_problem(s.template)):
            raise ConfigRefused("service.template", s.template, problem)
        if s.scoring == "judge":
            _check_endpoint(
                "service.judge.endpoint", s.judge.endpoint, "scoring=judge needs http://host:port"
            )
            if not s.judge.model:
                raise ConfigRefused(
                    "service.judge.model", s.judge.model, "scoring=judge needs the judge's model"
                )
        for key, env in (
            ("service.api_key_env", s.api_key_env),
            ("service.judge.api_key_env", s.judge.api_key_env),
        ):
            if env and env not in os.environ:
                raise ConfigRefused(key, env, "no such environment variable is set")

    @classmethod
    def check_target(cls, settings: QASettings) -> None:
        hint = "the target; or target=NAME@ALIAS (a registered target)"
        _check_endpoint("service.endpoint", settings.endpoint, f"{hint}: http://host:port")
        if not settings.model:
            raise ConfigRefused("service.model", settings.model, f"{hint}: the model it serves")

    def __init__(self, settings: QASettings, trial) -> None:
        super().__init__(settings, trial)
        self.answered: ItemLog | None = None
        self.judged: ItemLog | None = None
        self.failed: dict[str, str] = {}  # item id -> error class (this trial)
        self.retries: Counter[str] = Counter()
        self.judge_retries: Counter[str] = Counter()
        self.measuring = False
        self.cursor = itertools.count()
        self.tokenizer = None

    # -- set-up -------------------------------------------------------------------------
    def setup(self) -> None:
        s = self.settings
        self.base_url = s.endpoint.rstrip("/")
        self.headers = _auth(s.api_key_env)
        self.instructions = prompt.instructions_text(s.instructions)
        self.rubric = judge.RUBRICS[s.judge.rubric]
        client.check_served(self.base_url, s.model, self.headers, "the target")
        if s.scoring == "judge":
            self.judge_url = s.judge.endpoint.rstrip("/")
            client.check_served(
                self.judge_url, s.judge.model, _auth(s.judge.api_key_env), "the judge"
            )
        with self.trial.phase("dataset") as fig:
            self.items, provenance = dataset.load(s.dataset, s.n_items)
            fig["items"] = len(self.items)
        if s.tokenizer:
            from drivers.inference.prompts import load_tokenizer

            self.tokenizer = load_tokenizer(s.tokenizer)
        state = self.trial.state_dir
        _same_dataset(state / "dataset.sha256", provenance["sha256"])
        self.answered = ItemLog(state / "answers.jsonl")
        if s.scoring == "judge":
            self.judged = ItemLog(state / "judgements.jsonl")
        done = self.answered.done()
        self.todo = [it for it in self.items if it.id not in done]
        custom = self.trial.custom
        custom["dataset"] = provenance
        custom["resumed_items"] = len(self.items) - len(self.todo)
        custom["scoring"] = {
            "method": s.scoring,
            "normalisation": "squad (unicode punctuation)",
            "instructions": s.instructions if s.instructions in prompt.INSTRUCTIONS else "custom",
            "instructions_sha256": _sha(self.instructions),
        }
        if s.scoring == "judge":
            custom["scoring"].update(rubric=self.rubric.id, rubric_sha256=self.rubric.sha256)
        custom["prices_currency"] = s.prices.currency

    def planned_requests(self) -> int:
        return len(self.todo)  # one pass over the questions not answered yet

    # -- requests -----------------------------------------------------------------------
    def _request(self, item: QAItem) -> Request:
        s = self.settings
        body: dict[str, Any] = {
            "model": s.model,
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "seed": s.seed if s.seed is not None else self.trial.run.seed,
            "stream": s.stream,
        }
        if s.api == "chat":
            body["messages"] = prompt.chat_messages(item, self.instructions)
            path = "/v1/chat/completions"
        else:
            body["prompt"] = prompt.completion_prompt(item, self.instructions, s.template)
            path = "/v1/completions"
        stop = s.stop if s.stop is not None else (["\n"] if s.api == "completions" else [])
        if stop:
            body["stop"] = stop
        if s.stream:
            body["stream_options"] = {"include_usage": True}
        body.update(s.extra_body)
        return Request(self.base_url + path, body, self.headers, s.api, s.stream)

    async def open_worker(self, worker: int) -> aiohttp.ClientSession:
        s = self.settings
        timeout = aiohttp.ClientTimeout(total=s.request_timeout_s, sock_connect=s.connect_timeout_s)
        return aiohttp.ClientSession(timeout=timeout)

    async def close_worker(self, state: aiohttp.ClientSession) -> None:
        if state is not None:
            await state.close()

    def measure_start(self) -> None:
        self.cursor = itertools.count()
        self.retries.clear()  # warm-up retries are not the evaluation's
        self.measuring = True

    async def operation(self, ctx) -> int:
        if not self.measuring:  # warm-up: a question of its own, never scored
            item = QAItem(
                id="warmup", question=f"Repeat the words: warm up {ctx.seq}", answers=("-",)
            )
            reply = await self._ask(ctx, item, self._request(item))
            return reply.completion_tokens or 0
        item = self.todo[next(self.cursor)]  # each question goes to one worker, once
        request = self._request(item)
        try:
            reply = await self._ask(ctx, item, request)
        except APIError as exc:
            self.failed[item.id] = exc.code
            raise
        n_in, n_out, method = self._tokens(reply, _prompt_text(request.body))
        self.answered.record(
            item.id,
            {
                "answer": reply.text,
                "finish_reason": reply.finish_reason,
                "prompt_tokens": n_in,
                "completion_tokens": n_out,
                "tokens_from": method,
                "attempts": reply.attempts,
            },
        )
        return n_out

    async def _ask(self, ctx, item: QAItem, request: Request) -> Reply:
        def on_retry(exc: APIError, delay: float) -> None:
            self.retries[exc.code] += 1
            log.warning("question %s: %s; retrying in %.2f s", item.id, exc, delay)

        return await client.ask(ctx.state, request, self.settings.retry, on_retry, ctx.first_byte)

    def _tokens(self, reply: Reply, prompt_text: str) -> tuple[int, int, str]:
        """(prompt, completion) tokens and how they were counted."""
        if reply.prompt_tokens is not None and reply.completion_tokens is not None:
            return reply.prompt_tokens, reply.completion_tokens, "usage"
        if self.tokenizer is not None:
            enc = self.tokenizer.encode
            return len(enc(prompt_text)), len(enc(reply.text)) if reply.text else 0, "tokenizer"
        return _estimate(prompt_text), _estimate(reply.text), "estimate"

    # -- scoring ------------------------------------------------------------------------
    def quality(self) -> dict[str, float]:
        s = self.settings
        answers = self.answered.done()
        judge_failed: dict[str, str] = {}
        if s.scoring == "judge":
            judge_failed = self._judge_pass(answers)
        judgements = self.judged.done() if self.judged is not None else {}

        rows: list[dict[str, Any]] = []
        for item in self.items:
            a = answers.get(item.id)
            row: dict[str, Any] = {
                "id": item.id,
                "category": item.category or UNCATEGORISED,
                "question": item.question,
                "references": list(item.answers),
            }
            if a is None:
                row["error"] = self.failed.get(item.id, "not_asked")
                rows.append(row)
                continue
            row.update(
                answer=a["answer"],
                exact_match=scoring.exact_match(a["answer"], item.answers),
                f1=scoring.token_f1(a["answer"], item.answers),
                prompt_tokens=a["prompt_tokens"],
                completion_tokens=a["completion_tokens"],
            )
            if s.scoring == "judge":
                j = judgements.get(item.id)
                if j is not None:
                    row["judge_reply"] = j["reply"]
                if j is None or "failure" in j:
                    row["judge_failure"] = j["failure"] if j else judge_failed.get(item.id, "?")
                    row["score"] = None
                else:
                    row["judge_score"] = j["score"]
                    row["score"] = self.rubric.normalise(j["score"])
            else:
                row["score"] = row["exact_match"] if s.scoring == "exact" else row["f1"]
            rows.append(row)

        answered = [r for r in rows if "answer" in r]
        scored = [r for r in answered if r["score"] is not None]
        errors = sum(1 for r in rows if r.get("error") not in (None, "not_asked"))
        if not scored:
            raise DriverError(
                f"no question could be scored: {len(answered)} answered, {errors} errors, "
                f"{len(answered) - len(scored)} judge failures",
                "nothing_scored",
            )
        seed = self.trial.run.seed
        b = s.bootstrap
        overall = scoring.bootstrap_mean(
            [r["score"] for r in scored], b.confidence, b.resamples, seed
        )
        out: dict[str, float] = {
            "accuracy": overall.mean,
            "accuracy_ci_low": overall.low,
            "accuracy_ci_high": overall.high,
            "exact_match": sum(r["exact_match"] for r in answered) / len(answered),
            "f1": sum(r["f1"] for r in answered) / len(answered),
            "items": len(self.items),
            "answered": len(answered),
            "scored": len(scored),
            "errors": errors,
            "not_asked": sum(1 for r in rows if r.get("error") == "not_asked"),
            "judge_failures": len(answered) - len(scored),
        }
        categories = sorted({r["category"] for r in scored})
        for k, cat in enumerate(categories):
            cat_scores = [r["score"] for r in scored if r["category"] == cat]
            ci = scoring.bootstrap_mean(cat_scores, b.confidence, b.resamples, [seed, k + 1])
            out[f"category.{cat}.accuracy"] = ci.mean
            out[f"category.{cat}.ci_low"] = ci.low
            out[f"category.{cat}.ci_high"] = ci.high
            out[f"category.{cat}.scored"] = ci.n

        self._record_usage(answered, judgements)
        self.trial.notes.append(
            f"accuracy = mean {s.scoring} score over {len(scored)} of {len(self.items)} questions "
            f"({errors} errors, {out['judge_failures']} judge failures); "
            f"{b.confidence:.0%} bootstrap CI"
        )
        if s.scoring == "judge" and answered:
            rate = out["judge_failures"] / len(answered)
            if rate > s.judge.max_failure_rate:
                self.trial.invalid_reasons.append(
                    f"the judge failed on {out['judge_failures']} of {len(answered)} answers "
                    f"({rate:.0%}; allowed {s.judge.max_failure_rate:.0%})"
                )
        self.trial.attach_text("answers.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        return out

    def _record_usage(self, answered: list[dict], judgements: dict[str, dict]) -> None:
        """Tokens and estimated cost of the whole evaluation (resumed trials included)."""
        s, extra = self.settings, self.trial.extra
        p = sum(r["prompt_tokens"] for r in answered)
        c = sum(r["completion_tokens"] for r in answered)
        extra.update(
            {"tokens.prompt": p, "tokens.completion": c, "cost.target": s.prices.cost(p, c)}
        )
        total = extra["cost.target"]
        methods = Counter(a["tokens_from"] for a in self.answered.done().values())
        if self.judged is not None:
            jp = sum(j.get("prompt_tokens", 0) for j in judgements.values())
            jc = sum(j.get("completion_tokens", 0) for j in judgements.values())
            extra.update(
                {
                    "tokens.judge_prompt": jp,
                    "tokens.judge_completion": jc,
                    "cost.judge": s.judge.prices.cost(jp, jc),
                }
            )
            total += extra["cost.judge"]
            extra["retries.judge"] = sum(self.judge_retries.values())
        extra["cost.total"] = total
        extra["retries"] = sum(self.retries.values())
        self.trial.custom["tokens_counted_from"] = dict(methods)
        self.trial.custom["retries_by_class"] = dict(self.retries)
        if self.judge_retries:
            self.trial.custom["judge_retries_by_class"] = dict(self.judge_retries)
        self.trial.notes.append(
            "tokens counted from: " + ", ".join(f"{k} ({v})" for k, v in sorted(methods.items()))
        )

    def _judge_pass(self, answers: dict[str, dict]) -> dict[str, str]:
        """Judge every answer not judged yet; returns the items whose judge request failed."""
        todo = [it for it in self.items if it.id in answers and it.id not in self.judged.done()]
        failed: dict[str, str] = {}
        with self.trial.phase("judge") as fig:
            if todo:
                asyncio.run(self._judge_all(todo, answers, failed))
            fig["requests"] = len(todo)
            fig["request_failures"] = len(failed)
        if failed:
            self.trial.custom["judge_request_failures"] = dict(Counter(failed.values()))
        return failed

    async def _judge_all(self, todo: list[QAItem], answers: dict, failed: dict[str, str]) -> None:
        j = self.settings.judge
        headers = _auth(j.api_key_env)
        limit = asyncio.Semaphore(j.concurrency)
        timeout = aiohttp.ClientTimeout(
            total=j.request_timeout_s, sock_connect=self.settings.connect_timeout_s
        )

        def on_retry(exc: APIError, delay: float) -> None:
            self.judge_retries[exc.code] += 1
            log.warning("judge: %s; retrying in %.2f s", exc, delay)

        async def one(session: aiohttp.ClientSession, item: QAItem) -> None:
            answer = answers[item.id]["answer"]
            body: dict[str, Any] = {
                "model": j.model,
                "max_tokens": j.max_tokens,
                "temperature": j.temperature,
                "seed": self.trial.run.seed,
            }
            if j.api == "chat":
                body["messages"] = judge.chat_messages(self.rubric, item, answer)
                url = self.judge_url + "/v1/chat/completions"
            else:
                body["prompt"] = judge.completion_prompt(self.rubric, item, answer)
                body["stop"] = ["\n"]
                url = self.judge_url + "/v1/completions"
            text = _prompt_text(body)
            body.update(j.extra_body)
            async with limit:
                try:
                    reply = await client.ask(
                        session,
                        Request(url, body, headers, j.api, False),
                        self.settings.retry,
                        on_retry,
                    )
                except APIError as exc:
                    failed[item.id] = exc.code  # not recorded: a later run asks again
                    log.warning("judge failed on %s: %s", item.id, exc)
                    return
            score = judge.parse_score(reply.text, self.rubric)
            rec: dict[str, Any] = {
                "reply": reply.text[:500],
                "prompt_tokens": reply.prompt_tokens
                if reply.prompt_tokens is not None
                else _estimate(text),
                "completion_tokens": reply.completion_tokens
                if reply.completion_tokens is not None
                else _estimate(reply.text),
                "attempts": reply.attempts,
            }
            if score is None:
                rec["failure"] = "no_score"  # the same request would get the same reply
            else:
                rec["score"] = score
            self.judged.record(item.id, rec)

        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(*(one(session, it) for it in todo))

    def teardown(self) -> None:
        for item_log in (self.answered, self.judged):
            if item_log is not None:
                item_log.close()


def _check_endpoint(key: str, value: str | None, what: str) -> None:
    if not value or not value.startswith(("http://", "https://")):
        raise ConfigRefused(key, value, what)


def _auth(env: str | None) -> dict[str, str]:
    key = os.environ.get(env) if env else None
    return {"Authorization": f"Bearer {key}"} if key else {}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _prompt_text(body: dict[str, Any]) -> str:
    """The text of a request's prompt or messages (for counting its tokens)."""
    if "prompt" in body:
        return body["prompt"]
    return "\n".join(m["content"] for m in body["messages"])


def _estimate(text: str) -> int:
    """Tokens of ``text`` without a tokenizer: about four characters each."""
    return math.ceil(len(text) / 4)


def _same_dataset(marker: Path, digest: str) -> None:
    """Refuse to resume over answers to a different file at the same path."""
    if marker.exists() and marker.read_text().strip() != digest:
        raise DriverError(
            f"the dataset changed since the interrupted run whose answers are in {marker.parent} "
            f"(sha256 {marker.read_text().strip()[:12]}…, now {digest[:12]}…): restore it, "
            "or remove that directory to start over",
            "dataset_changed",
        )
    marker.write_text(digest + "\n")
