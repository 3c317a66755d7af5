"""``sleep``: a known service time, in process or behind loopback HTTP.

The harness checks its own accuracy against it: a 5 ms service time can never
be reported as less than 5 ms, and whatever is reported above is overhead.

Two modes give it known behaviour beyond a fixed delay (both described in
``drivers/calibration/sleep_server.py``): ``workers=N`` queues requests FIFO
behind N workers (N=1 under Poisson arrivals: an M/D/1 queue,
``drivers/calibration/queue_model.py``), and ``drift_pct``/``drift_period_s``
make the service time follow a sine of the wall clock. ``service_dist`` gives
each request a service time of its own (uniform in [0.5, 1.5] × service_ms, or
exponential with mean service_ms) drawn from a generator seeded by
``service_seed``.
"""

from __future__ import annotations

import http.client
import json
import sys
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from benchflow.sut.servers import ServerProcess, free_port, http_ready
from drivers.base import ConfigRefused, Driver, DriverError, ServerRecipe, ServiceSettings
from drivers.calibration.sleep_server import ServiceModel


class SleepClass(BaseModel):
    """A request class of a mix (``mix={fast: 0.8, slow: 0.2}``): its own service time."""

    model_config = ConfigDict(extra="forbid")
    service_ms: float = Field(..., ge=0)


class SleepSettings(ServiceSettings):
    service_ms: float = Field(5.0, ge=0)
    transport: Literal["inprocess", "http"] = "http"
    endpoint: str | None = None  # mode=server: http://host:port
    ready_timeout_s: float = Field(10, gt=0)
    request_timeout_s: float = Field(30, gt=0)
    # Queue mode: at most `workers` requests served at a time, the rest wait FIFO
    # (null: every request served at once).
    workers: int | None = Field(None, ge=1)
    # constant: exactly service_ms; uniform: [0.5, 1.5] x service_ms; exponential: mean
    # service_ms. Draws from one generator seeded by service_seed, in admission order.
    service_dist: Literal["constant", "uniform", "exponential"] = "constant"
    service_seed: int = 0
    # Drift mode: service_ms(t) = service_ms * (1 + drift_pct/100 * sin(2π (t - t0) / period)).
    drift_pct: float = Field(0.0, ge=0, lt=100)
    drift_period_s: float | None = Field(None, gt=0, validate_default=True)
    # t0 as a Unix time (null: the server's start), so successive servers share one phase.
    drift_origin: float | None = None
    # mix classes with a service time of their own (a class not named here: service_ms)
    classes: dict[str, SleepClass] = Field(default_factory=dict)

    @field_validator("drift_period_s")
    @classmethod
    def _period_with_drift(cls, v: float | None, info: ValidationInfo) -> float | None:
        if v is None and info.data.get("drift_pct", 0) > 0:
            raise ValueError("drift_pct > 0 needs drift_period_s > 0 (seconds)")
        return v

    def model_args(self) -> dict:
        return {
            "service_ms": self.service_ms,
            "workers": self.workers,
            "service_dist": self.service_dist,
            "seed": self.service_seed,
            "drift_pct": self.drift_pct,
            "drift_period_s": self.drift_period_s,
            "drift_origin": self.drift_origin,
        }


class SleepDriver(Driver):
    name = "sleep"
    family = "calibration"
    description = "a known service time (in process or loopback HTTP) to check accuracy"
    Settings = SleepSettings
    mix_classes = "any"  # any name; service.classes.<name>.service_ms sets its time

    settings: SleepSettings

    @classmethod
    def check(cls, settings, run) -> None:
        super().check(settings, run)
        if settings.mode == "server" and not settings.endpoint:
            raise ConfigRefused("service.endpoint", None, "mode=server needs http://host:port")
        if settings.transport == "inprocess" and settings.mode == "server":
            raise ConfigRefused("service.mode", "server", "transport=inprocess has no server")
        if settings.transport == "inprocess" and run.clients > 1:
            raise ConfigRefused("clients", run.clients, "transport=inprocess needs clients=1")

    @classmethod
    def server_recipe(cls, settings, host: str, port: int) -> ServerRecipe:
        cmd = [
            sys.executable,
            "-m",
            "drivers.calibration.sleep_server",
            "--host",
            host,
            "--port",
            str(port),
            "--service-ms",
            str(settings.service_ms),
        ]
        if settings.workers is not None:
            cmd += ["--workers", str(settings.workers)]
        if settings.service_dist != "constant":
            cmd += ["--service-dist", settings.service_dist, "--seed", str(settings.service_seed)]
        if settings.drift_pct > 0:
            cmd += ["--drift-pct", str(settings.drift_pct)]
            cmd += ["--drift-period-s", str(settings.drift_period_s)]
        if settings.drift_origin is not None:
            cmd += ["--drift-origin", repr(settings.drift_origin)]
        return ServerRecipe(cmd, port)

    def __init__(self, settings: SleepSettings, trial) -> None:
        super().__init__(settings, trial)
        self.model: ServiceModel | None = None  # transport=inprocess: the queue and drift
        self.server: ServerProcess | None = None
        self.host, self.port = "127.0.0.1", 0

    def setup(self) -> None:
        s = self.settings
        if s.transport == "inprocess":
            self.model = ServiceModel(**s.model_args())
            return
        if s.mode == "server":
            url = urlsplit(s.endpoint)
            self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
            if not http_ready(self.host, self.port):
                raise DriverError(f"no sleep server answers at {s.endpoint}", "connection_refused")
            self._check_server_modes()
            return
        self.port = free_port()
        cmd = self.server_recipe(s, self.host, self.port).cmd
        self.server = ServerProcess("sleep_server", cmd, self.trial.logs_dir)
        self.server.wait_ready(lambda: http_ready(self.host, self.port), s.ready_timeout_s)

    def _check_server_modes(self) -> None:
        """A running server must queue and drift as the trial says (its ``/state``);
        its service time is its own."""
        try:
            state = server_state(self.host, self.port, self.settings.request_timeout_s)
        except (OSError, http.client.HTTPException, ValueError):
            return  # a server without /state: nothing to compare
        s = self.settings
        want = {"workers": s.workers, "drift_pct": s.drift_pct}
        if "service_dist" in state:  # servers from before service_dist do not say
            want["service_dist"] = s.service_dist
        if s.drift_pct > 0:
            want["drift_period_s"] = s.drift_period_s
        if s.drift_origin is not None:
            want["drift_origin"] = s.drift_origin
        differ = [
            f"{k}={state.get(k)!r} (trial: {v!r})" for k, v in want.items() if state.get(k) != v
        ]
        if differ:
            raise DriverError(
                f"the sleep server at {s.endpoint} runs with {', '.join(differ)}", "sut_mismatch"
            )

    def open_worker(self, worker: int):
        if self.settings.transport == "inprocess":
            return None
        return _Conn(self.host, self.port, self.settings.request_timeout_s)

    def close_worker(self, state) -> None:
        if state is not None:
            state.close()

    def operation(self, ctx) -> int:
        cls = self.settings.classes.get(ctx.cls) if ctx.cls else None
        if ctx.state is None:
            self.model.serve(None if cls is None else cls.service_ms)
            return 1
        return ctx.state.get(ctx, "/sleep" if cls is None else f"/sleep?ms={cls.service_ms!r}")

    def server_sample(self) -> dict[str, float]:
        """Requests in service or queued, served so far, and the service time now."""
        if self.model is not None:
            st = self.model.state()
        else:
            st = server_state(self.host, self.port, min(2.0, self.settings.request_timeout_s))
        return {k: st[k] for k in ("in_flight", "served", "service_ms_now")}

    def sut_pids(self) -> list[int]:
        return [self.server.pid] if self.server else []

    def classify_error(self, exc: BaseException) -> str:
        if isinstance(exc, ConnectionRefusedError):
            return "connection_refused"
        if isinstance(exc, ConnectionError | http.client.HTTPException):
            return "connection_lost"
        return super().classify_error(exc)

    def teardown(self) -> None:
        if self.server:
            self.server.stop()

    def __getstate__(self):
        # Client processes get the endpoint, not the server handle.
        state = dict(self.__dict__)
        state["server"] = None
        state["model"] = None  # transport=inprocess runs with clients=1: never sent
        return state


def server_state(host: str, port: int, timeout_s: float = 5) -> dict:
    """``GET /state`` of a sleep server: its service time now, queue and drift settings,
    requests in flight and served (see ``drivers/calibration/sleep_server.py``)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", "/state")
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise ValueError(f"HTTP {resp.status}")
    return json.loads(body)


class _Conn:
    """One keep-alive HTTP connection, re-opened after a failure."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.conn: http.client.HTTPConnection | None = None

    def get(self, ctx, path: str = "/sleep") -> int:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            self.conn.request("GET", path)
            resp = self.conn.getresponse()
            ctx.first_byte()
            resp.read()
        except BaseException:
            self.close()
            raise
        if resp.status != 200:
            raise DriverError(f"HTTP {resp.status}", f"http_{resp.status}")
        return 1

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
