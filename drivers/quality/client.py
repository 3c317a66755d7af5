"""One question to an OpenAI-compatible endpoint, with retries and exponential backoff.

A request is a POST to ``/v1/completions`` or ``/v1/chat/completions``,
streamed (server-sent events; the first content marks the first token) or not.
Failures become :class:`APIError` with an error class users can filter on:
``http_<status>``, ``timeout``, ``connection_refused``, ``connection_lost``,
``truncated``, ``stream_error``, ``bad_response``.

Retryable failures — the HTTP statuses in ``RetrySettings.on_status`` (429 and
5xx by default), timeouts, refused or lost connections, a cut stream — are
retried up to ``attempts`` times in all, waiting ``backoff_s × multiplier^(k-1)``
after the k-th failed attempt (at most ``max_backoff_s``; at least the server's
``Retry-After`` when it sends one, within the same cap; plus a uniform
``jitter_s``). Anything else (a 400, an unparsable response) fails at once: asking
again would get the same answer.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from drivers.base import DriverError

DEFAULT_RETRY_STATUS = [408, 409, 425, 429, 500, 502, 503, 504]


class RetrySettings(BaseModel):
    """How failed requests are retried (target and judge alike)."""

    model_config = ConfigDict(extra="forbid")
    attempts: int = Field(4, ge=1, le=50, description="attempts in all (1: no retry)")
    backoff_s: float = Field(0.5, ge=0, description="wait after the first failed attempt")
    multiplier: float = Field(2.0, ge=1, description="each further wait is this much longer")
    max_backoff_s: float = Field(30.0, ge=0, description="no wait is longer")
    jitter_s: float = Field(0.0, ge=0, description="plus a uniform random wait in [0, jitter_s]")
    on_status: list[int] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_STATUS),
        description="HTTP statuses worth a retry (others fail at once)",
    )


class APIError(DriverError):
    """A failed request: its error class, and whether asking again may help."""

    def __init__(
        self, message: str, code: str, retryable: bool, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, code)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Reply:
    """The answer to one request (after retries)."""

    text: str
    prompt_tokens: int | None  # from the server's usage, when it sent it
    completion_tokens: int | None
    finish_reason: str | None
    attempts: int


@dataclass(frozen=True)
class Request:
    """Where and what to send."""

    url: str  # the full URL of the endpoint's path
    body: dict[str, Any]
    headers: dict[str, str]
    api: Literal["chat", "completions"]
    stream: bool


def backoff_delay(
    policy: RetrySettings, failed_attempts: int, retry_after_s: float | None
) -> float:
    """Seconds to wait after the ``failed_attempts``-th failure (jitter not included)."""
    delay = policy.backoff_s * policy.multiplier ** (failed_attempts - 1)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return min(delay, policy.max_backoff_s)


async def ask(
    session: aiohttp.ClientSession,
    request: Request,
    policy: RetrySettings,
    on_retry: Callable[[APIError, float], None] | None = None,
    on_first_token: Callable[[], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Reply:
    """Send ``request``, retrying retryable failures as ``policy`` says.

    ``on_retry(error, delay_s)`` is called before each wait. The last failure is
    raised (its message says how many attempts were made).
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return await _attempt(session, request, policy, attempt, on_first_token)
        except APIError as exc:
            if not exc.retryable or attempt == policy.attempts:
                if attempt > 1:
                    exc.args = (f"{exc.args[0]} (after {attempt} attempts)",)
                raise
            delay = backoff_delay(policy, attempt, exc.retry_after_s)
            if policy.jitter_s:
                delay += random.uniform(0, policy.jitter_s)
            if on_retry is not None:
                on_retry(exc, delay)
            await sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (an HTTP date is not honoured: the backoff applies)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


async def _attempt(
    session: aiohttp.ClientSession,
    request: Request,
    policy: RetrySettings,
    attempt: int,
    on_first_token: Callable[[], None] | None,
) -> Reply:
    try:
        async with session.post(request.url, json=request.body, headers=request.headers) as resp:
            if resp.status != 200:
                detail = (await resp.read())[:300].decode(errors="replace")
                raise APIError(
                    f"HTTP {resp.status}: {detail}",
                    f"http_{resp.status}",
                    resp.status in policy.on_status,
                    _retry_after(resp.headers.get("Retry-After")),
                )
            if request.stream:
                text, usage, finish = await _read_stream(resp, request.api, on_first_token)
            else:
                text, usage, finish = await _read_whole(resp, request.api)
    except aiohttp.ClientConnectorError as exc:
        refused = isinstance(exc.os_error, ConnectionRefusedError)
        code = "connection_refused" if refused else "connection_failed"
        raise APIError(f"cannot connect: {exc}", code, True) from None
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        raise APIError(f"connection lost: {exc}", "connection_lost", True) from None
    except aiohttp.ClientPayloadError as exc:
        raise APIError(f"response cut: {exc}", "truncated", True) from None
    except asyncio.TimeoutError:
        raise APIError("no complete answer within the request timeout", "timeout", True) from None
    usage = usage or {}
    return Reply(
        text=text,
        prompt_tokens=_int(usage.get("prompt_tokens")),
        completion_tokens=_int(usage.get("completion_tokens")),
        finish_reason=finish,
        attempts=attempt,
    )


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


async def _read_whole(resp, api: str) -> tuple[str, dict | None, str | None]:
    try:
        obj = await resp.json(content_type=None)
        choice = obj["choices"][0]
        text = (choice.get("message") or {}).get("content") if api == "chat" else choice["text"]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise APIError(f"not an OpenAI {api} response ({exc!r})", "bad_response", False) from None
    return text or "", obj.get("usage"), choice.get("finish_reason")


async def _read_stream(resp, api: str, on_first_token) -> tuple[str, dict | None, str | None]:
    parts: list[str] = []
    usage = finish = None
    done = False
    async for line in resp.content:
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            done = True
            break
        try:
            obj = json.loads(payload)
        except ValueError:
            raise APIError(f"unparsable chunk {payload[:120]!r}", "bad_response", False) from None
        if "error" in obj:
            raise APIError(f"error in stream: {obj['error']!r:.300}", "stream_error", False)
        if obj.get("usage"):
            usage = obj["usage"]
        for choice in obj.get("choices") or ():
            text = (
                (choice.get("delta") or {}).get("content") if api == "chat" else choice.get("text")
            )
            if text:
                if not parts and on_first_token is not None:
                    on_first_token()
                parts.append(text)
            finish = choice.get("finish_reason") or finish
    if not done and finish is None:
        raise APIError("the stream ended before its end (no [DONE])", "truncated", True)
    return "".join(parts), usage, finish


def check_served(base_url: str, model: str, headers: dict[str, str], what: str) -> None:
    """Refuse an endpoint that does not answer, or does not serve ``model`` (before any load).

    A server whose ``GET /v1/models`` is not available (some proxies) is taken on trust.
    """
    import urllib.error
    import urllib.request

    req = urllib.request.Request(base_url + "/v1/models", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
    except urllib.error.HTTPError:
        return
    except OSError as exc:
        raise DriverError(
            f"{what}: no OpenAI-compatible server answers at {base_url} ({exc})",
            "connection_refused",
        ) from None
    try:
        served = [m["id"] for m in json.loads(body)["data"]]
    except (ValueError, KeyError, TypeError):
        return
    if model not in served:
        raise DriverError(
            f"{what}: model {model!r} is not served at {base_url}; "
            f"it serves: {', '.join(served) or '(nothing)'}",
            "unknown_model",
        )
