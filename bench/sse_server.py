"""A calibration stream for ``make bench``: an OpenAI-compatible ``/v1/completions``
endpoint that streams ``max_tokens`` chunks with a known first-token delay and a
known gap between tokens (no model), so client-side figures can be checked
against the truth and the client's own CPU cost per token measured at full speed.

``python -m bench.sse_server --port P --ttft-ms 50 --itl-ms 10`` (``--itl-ms 0``:
as fast as the socket takes them). Not a stand-in for a server under test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web


def make_app(ttft_s: float, itl_s: float) -> web.Application:
    async def models(_request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "synthetic"}]})

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        n = int(body.get("max_tokens", 16))
        usage = {"prompt_tokens": 8, "completion_tokens": n, "total_tokens": n + 8}
        if not body.get("stream"):
            await asyncio.sleep(ttft_s + itl_s * (n - 1))
            text = " tok" * n
            choice = {"index": 0, "text": text, "finish_reason": "length"}
            return web.json_response({"choices": [choice], "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        start = time.perf_counter()
        for i in range(n):
            # Sleep to the token's due time, so gaps do not accumulate overshoot.
            due = start + ttft_s + i * itl_s
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            chunk = {
                "id": "c",
                "object": "text_completion",
                "choices": [
                    {"index": 0, "text": " tok", "finish_reason": "length" if i == n - 1 else None}
                ],
            }
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(
                b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n"
            )
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", completions)
    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ttft-ms", type=float, default=50)
    ap.add_argument("--itl-ms", type=float, default=10)
    args = ap.parse_args()
    app = make_app(args.ttft_ms / 1e3, args.itl_ms / 1e3)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
