"""The ``triton`` driver's measured HTTP requests: one keep-alive HTTP/1.1 connection per
worker, sending request bytes built once by tritonclient.

Why not tritonclient's own HTTP clients in the hot path: its asyncio client (aiohttp)
cost 331 µs of client CPU per request on the 2-core development machine against 93 µs
for this module (``make bench``, inference section), CPU the server under test then
lacks; its threaded client (geventhttpclient) binds a connection to the thread that
made it. A benchmark's request never changes, so the
whole request (start line, headers and body, the body from tritonclient's own
``_get_inference_request``, binary tensor extension included) is built once per
variant; a measured request is one ``write`` and a response read to its
``Content-Length``, as perf_analyzer's C++ client does. The response is still
checked: the status (a non-200 raises tritonclient's ``InferenceServerException``
with the server's error message, as its clients do) and its JSON header, which
must name every requested output.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

_MAX_HEAD = 64 * 1024


def build_request(
    host: str, model: str, version: str, inputs: list, outputs: list
) -> tuple[bytes, list[str]]:
    """The complete HTTP request for one inference, and the output names to expect."""
    from tritonclient.http._utils import _get_inference_request

    body, json_size = _get_inference_request(
        inputs=inputs,
        request_id="",
        outputs=outputs,
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=None,
        custom_parameters=None,
    )
    if isinstance(body, str):
        body = body.encode()
    path = f"/v2/models/{quote(model)}" + (f"/versions/{version}" if version else "") + "/infer"
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Connection: keep-alive",
        f"Content-Length: {len(body)}",
    ]
    if json_size is not None:  # binary tensors follow a JSON header of this size
        head += ["Content-Type: application/octet-stream"]
        head += [f"Inference-Header-Content-Length: {json_size}"]
    else:
        head += ["Content-Type: application/json"]
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    return request, [o.name() for o in outputs]


class ProtocolError(ConnectionError):
    """The server's bytes are not an HTTP/1.1 response this client can frame."""


class _Response(asyncio.Protocol):
    """Frames responses on one connection: status, headers, a Content-Length body."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.status = 0
        self.head: bytes | None = None  # the response's head, lower-cased, once complete
        self.need = 0
        self.lost: BaseException | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            self._frame()
        except ProtocolError as exc:
            self._fail(exc)
            self.transport.close()

    def _frame(self) -> None:
        if self.head is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > _MAX_HEAD:
                    raise ProtocolError("response headers over 64 KiB")
                return
            # Only three headers matter: found by search in the lower-cased head rather
            # than splitting it into a dict (this runs once per request).
            head = bytes(self.buf[: end + 2]).lower()
            del self.buf[: end + 4]
            if not head.startswith(b"http/1.") or len(head) < 14:
                raise ProtocolError(f"not an HTTP/1.x status line: {head[:80]!r}")
            length = header(head, b"content-length")
            if length is None:
                raise ProtocolError(
                    "response without Content-Length (transfer-encoding "
                    f"{header(head, b'transfer-encoding')!r}) is not supported"
                )
            self.status, self.head, self.need = int(head[9:12]), head, int(length)
        if len(self.buf) >= self.need:
            body = bytes(self.buf[: self.need])
            del self.buf[: self.need]
            status, head, self.head = self.status, self.head, None
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result((status, head, body))

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = exc or ConnectionResetError("the server closed the connection")
        self._fail(ConnectionResetError(f"connection lost mid-request: {self.lost}"))


class InferConnection:
    """One worker's connection; one request in flight; reconnects after a failure."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._proto: _Response | None = None

    async def _connect(self) -> _Response:
        loop = asyncio.get_running_loop()
        # asyncio sets TCP_NODELAY on its TCP transports.
        _, proto = await asyncio.wait_for(
            loop.create_connection(_Response, self.host, self.port), self.timeout_s
        )
        return proto

    async def infer(self, request: bytes, expect: list[str]) -> None:
        """Send one prepared request; raise for an error status or a malformed reply."""
        proto = self._proto
        if proto is None or proto.lost is not None:
            proto = self._proto = await self._connect()
        loop = asyncio.get_running_loop()
        waiter = proto.waiter = loop.create_future()
        # A timer on the waiter itself: asyncio.wait_for would add a future and a loop
        # iteration to every request.
        timer = loop.call_later(self.timeout_s, _expire, waiter, self.timeout_s)
        proto.transport.write(request)
        try:
            status, head, body = await waiter
        except BaseException:
            # Timed out, cancelled or lost: the connection's state is unknown, drop it.
            self.close()
            raise
        finally:
            timer.cancel()
        if header(head, b"connection") == b"close":
            self.close()
        if status != 200:
            _raise_status(status, body)
        hlen = header(head, b"inference-header-content-length")
        meta = body[: int(hlen)] if hlen else body
        # Triton writes compact JSON: finding '"name":"y"' is enough (json.loads cost
        # ~20 µs per request here); any other layout is parsed.
        if all(b'"name":"%s"' % n.encode() in meta for n in expect):
            return
        try:
            names = {o["name"] for o in json.loads(meta.decode()).get("outputs", ())}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ProtocolError(f"malformed inference response: {exc}") from None
        missing = [n for n in expect if n not in names]
        if missing:
            raise ProtocolError(f"response lacks the requested outputs {missing}")

    def close(self) -> None:
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.close()


def header(head: bytes, name: bytes) -> bytes | None:
    """A header's value in a lower-cased response head ending in CRLF (None: absent)."""
    i = head.find(b"\r\n" + name + b":")
    if i < 0:
        return None
    i += len(name) + 3
    return head[i : head.find(b"\r\n", i)].strip()


def _expire(waiter: asyncio.Future, timeout_s: float) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError(f"no reply within {timeout_s:g} s"))


def _raise_status(status: int, body: bytes) -> None:
    from tritonclient.utils import InferenceServerException

    try:
        msg = json.loads(body).get("error") or body.decode(errors="replace")
    except ValueError:
        msg = body.decode(errors="replace")[:500]
    raise InferenceServerException(msg=msg, status=str(status))
