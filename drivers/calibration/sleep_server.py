"""A loopback HTTP server whose every response takes a known service time.

``python -m drivers.calibration.sleep_server --port P --service-ms 5``. Threads
and a precise sleep keep the service time within a few microseconds of the
target, so what the harness reports above it is the harness's (and loopback
HTTP's) own cost. Any path but ``/health`` and ``/state`` is a request served;
``?ms=X`` gives that request a base service time of its own (a class of a mix),
to which the modes below apply as to ``--service-ms``.

Two modes make it a server of known behaviour for the harness's own tests:

**Queue mode** (``--workers N``; default: none, every request is served at once
on its own thread). At most N requests are in service at a time; the others
wait in arrival (FIFO) order, and each is then served for exactly its service
time. The schedule is kept in virtual time: on arrival a request takes the
worker that frees first, starts at ``max(arrival, that worker's free time)``
and leaves at start + service time; its thread sleeps until then. A late
wake-up of one thread therefore never delays the next request (no gaps
accumulate), and with N=1 under Poisson arrivals the server is an M/D/1 queue
(capacity 1000/service_ms requests/s; ``drivers.calibration.queue_model``
simulates it). A request whose client went away keeps its place (the server
does not notice, as most servers do not). Concurrency is the number of
in-flight connections: each keep-alive connection is one thread here.

**Drift mode** (``--drift-pct P --drift-period-s T``). The service time follows
the wall clock:

    service_ms(t) = service_ms × (1 + P/100 × sin(2π (t − t0) / T))

with t0 the server's start (or ``--drift-origin``, a Unix time, so that servers
started one after another share one phase). A request's service time is
``service_ms(t)`` at the moment its service starts. Over a whole period the mean
is ``service_ms``; P is in [0, 100).

**Service-time distribution** (``--service-dist``). ``constant`` (the default):
every request is served for exactly ``service_ms``, so the latency's spread is
the machine's and the harness's alone. ``uniform``: drawn evenly from
[0.5, 1.5] × ``service_ms``; ``exponential``: mean ``service_ms`` (with
``--workers 1`` under Poisson arrivals, an M/M/1 queue). A spread of its own
makes the latency distribution the server's rather than the scheduler's: its
percentiles then move by sampling, as a real server's do, not with the load on
the machine. Draws come from one generator seeded by ``--seed`` (default 0), in
admission order; drift scales the drawn time.

``GET /state`` answers at once with JSON: ``service_ms`` (the base),
``service_ms_now``, ``started_at`` and ``drift_origin`` (Unix times),
``elapsed_s`` (since t0), ``workers``, ``drift_pct``, ``drift_period_s``,
``in_flight`` (requests admitted and not yet answered, waiting or in service)
and ``served`` (requests answered).
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import math
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_SPIN_NS = 200_000
SERVICE_DISTS = ("constant", "uniform", "exponential")


def sleep_until(deadline_ns: int) -> None:
    """Sleep until ``time.perf_counter_ns()`` reaches ``deadline_ns`` (spin the end)."""
    while (dt := deadline_ns - time.perf_counter_ns()) > 0:
        time.sleep((dt - _SPIN_NS) / 1e9 if dt > _SPIN_NS else 0)


def precise_sleep(ns: int) -> None:
    sleep_until(time.perf_counter_ns() + ns)


class ServiceModel:
    """The service time at each moment (drift) and who is served when (queue).

    Shared by the HTTP server and the driver's in-process transport.
    """

    def __init__(
        self,
        service_ms: float,
        workers: int | None = None,
        drift_pct: float = 0.0,
        drift_period_s: float | None = None,
        drift_origin: float | None = None,
        service_dist: str = "constant",
        seed: int = 0,
    ) -> None:
        if service_ms < 0:
            raise ValueError("service_ms must be >= 0")
        if workers is not None and workers < 1:
            raise ValueError("workers must be >= 1 (or none: unbounded)")
        if service_dist not in SERVICE_DISTS:
            raise ValueError(f"service_dist must be one of {', '.join(SERVICE_DISTS)}")
        if not 0 <= drift_pct < 100:
            raise ValueError("drift_pct must be in [0, 100)")
        if drift_pct > 0 and not (drift_period_s and drift_period_s > 0):
            raise ValueError("drift_pct > 0 needs drift_period_s > 0")
        self.service_ms = service_ms
        self.workers = workers
        self.service_dist = service_dist
        self.seed = seed
        self._rng = random.Random(seed)
        self.drift_pct = drift_pct
        self.drift_period_s = drift_period_s if drift_pct > 0 else None
        # One reading of both clocks: wall time for what is reported, perf_counter for
        # the schedule (it never jumps).
        self.started_at = time.time()
        now_ns = time.perf_counter_ns()
        self.drift_origin = self.started_at if drift_origin is None else float(drift_origin)
        self._origin_ns = now_ns - round((self.started_at - self.drift_origin) * 1e9)
        self._base_ns = service_ms * 1e6
        self._omega = 2 * math.pi / (self.drift_period_s * 1e9) if self.drift_period_s else 0.0
        self._amp = drift_pct / 100
        self._lock = threading.Lock()
        self._free_at: list[int] | None = [0] * workers if workers else None  # a min-heap
        self.in_flight = 0
        self.served = 0

    def service_ns(self, t_ns: int, base_ms: float | None = None) -> int:
        """The mean service time of a request whose service starts at ``t_ns`` (perf_counter);
        ``base_ms``: the request's own base service time (a class of a mix)."""
        base = self._base_ns if base_ms is None else base_ms * 1e6
        if not self._amp:
            return int(base)
        return int(base * (1 + self._amp * math.sin(self._omega * (t_ns - self._origin_ns))))

    def _draw_ns(self, t_ns: int, base_ms: float | None = None) -> int:
        """One request's service time (called under the lock: one draw per admission)."""
        mean = self.service_ns(t_ns, base_ms)
        if self.service_dist == "uniform":
            return int(mean * self._rng.uniform(0.5, 1.5))
        if self.service_dist == "exponential":
            return int(mean * self._rng.expovariate(1.0))
        return mean

    def admit(self, base_ms: float | None = None) -> int:
        """Admit one request now: its departure time (perf_counter ns)."""
        with self._lock:
            now = time.perf_counter_ns()
            self.in_flight += 1
            if self._free_at is None:
                return now + self._draw_ns(now, base_ms)
            start = max(now, self._free_at[0])  # the worker that frees first, FIFO
            end = start + self._draw_ns(start, base_ms)
            heapq.heapreplace(self._free_at, end)
            return end

    def done(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.served += 1

    def serve(self, base_ms: float | None = None) -> None:
        """One request, start to finish, on the calling thread."""
        try:
            sleep_until(self.admit(base_ms))
        finally:
            self.done()

    def state(self) -> dict:
        now = time.perf_counter_ns()
        return {
            "service_ms": self.service_ms,
            "service_ms_now": self.service_ns(now) / 1e6,
            "started_at": self.started_at,
            "drift_origin": self.drift_origin,
            "elapsed_s": (now - self._origin_ns) / 1e9,
            "workers": self.workers,
            "service_dist": self.service_dist,
            "seed": self.seed,
            "drift_pct": self.drift_pct,
            "drift_period_s": self.drift_period_s,
            "in_flight": self.in_flight,
            "served": self.served,
        }


def _ms_of(path: str) -> float | None:
    """``/sleep?ms=12.5``: this request's base service time (a class of a mix)."""
    _, _, query = path.partition("?")
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == "ms":
            try:
                ms = float(value)
            except ValueError:
                return None
            return ms if ms >= 0 else None
    return None


def make_handler(model: ServiceModel | int):
    """The request handler; ``model`` may be a plain service time in ns (no queue, no drift)."""
    if isinstance(model, int):
        model = ServiceModel(model / 1e6)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection per client worker
        # Headers and body are separate writes: without TCP_NODELAY, Nagle's algorithm
        # holds the body until the client's delayed ACK (~40 ms).
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            ctype = "text/plain"
            if self.path == "/health":
                body = b"ok"
            elif self.path == "/state":
                body, ctype = json.dumps(model.state()).encode(), "application/json"
            else:
                model.serve(_ms_of(self.path))
                body = b"slept"
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # one line per request would skew timing
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many connections opened at once (open loop, many workers)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be >= 1")
    return value


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--service-ms", type=float, required=True)
    ap.add_argument(
        "--workers", type=_positive_int, default=None, help="queue mode: at most N served at once"
    )
    ap.add_argument(
        "--service-dist", choices=SERVICE_DISTS, default="constant", help="service-time law"
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the service-time draws")
    ap.add_argument("--drift-pct", type=float, default=0.0, help="drift amplitude, %% in [0, 100)")
    ap.add_argument("--drift-period-s", type=float, default=None, help="drift period (s)")
    ap.add_argument(
        "--drift-origin", type=float, default=None, help="Unix time of phase 0 (default: start)"
    )
    args = ap.parse_args(argv)
    try:
        model = ServiceModel(
            args.service_ms,
            args.workers,
            args.drift_pct,
            args.drift_period_s,
            args.drift_origin,
            args.service_dist,
            args.seed,
        )
    except ValueError as exc:
        ap.error(str(exc))
    server = _Server((args.host, args.port), make_handler(model))
    mode = f"{args.service_ms} ms"
    if model.service_dist != "constant":
        mode += f" ({model.service_dist}, seed {model.seed})"
    if model.workers:
        mode += f", {model.workers} worker(s), FIFO"
    if model.drift_pct:
        mode += f", drift ±{model.drift_pct}% over {model.drift_period_s} s"
    print(
        f"sleep server on http://{args.host}:{args.port} ({mode}; "
        f"started_at {model.started_at:.6f}, drift_origin {model.drift_origin:.6f})",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(poll_interval=0.1)


if __name__ == "__main__":
    main()
