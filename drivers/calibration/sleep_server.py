"""A loopback HTTP server whose every response takes a known service time.

``python -m drivers.calibration.sleep_server --port P --service-ms 5``. Threads
and a precise sleep keep the service time within a few microseconds of the
target, so what the harness reports above it is the harness's (and loopback
HTTP's) own cost.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_SPIN_NS = 200_000


def precise_sleep(ns: int) -> None:
    deadline = time.perf_counter_ns() + ns
    while (dt := deadline - time.perf_counter_ns()) > 0:
        time.sleep((dt - _SPIN_NS) / 1e9 if dt > _SPIN_NS else 0)


def make_handler(service_ns: int):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection per client worker
        # Headers and body are separate writes: without TCP_NODELAY, Nagle's algorithm
        # holds the body until the client's delayed ACK (~40 ms).
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            if self.path == "/health":
                body = b"ok"
            else:
                precise_sleep(service_ns)
                body = b"slept"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # one line per request would skew timing
            pass

    return Handler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--service-ms", type=float, required=True)
    args = ap.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(int(args.service_ms * 1e6)))
    server.daemon_threads = True
    print(f"sleep server on http://{args.host}:{args.port} ({args.service_ms} ms)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(poll_interval=0.1)


if __name__ == "__main__":
    main()
