"""``sleep``: a known service time, in process or behind loopback HTTP.

The harness checks its own accuracy against it: a 5 ms service time can never
be reported as less than 5 ms, and whatever is reported above is overhead.
"""

from __future__ import annotations

import http.client
import sys
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field

from benchflow.sut.servers import ServerProcess, free_port, http_ready
from drivers.base import ConfigRefused, Driver, DriverError, ServerRecipe, ServiceSettings
from drivers.calibration.sleep_server import precise_sleep


class SleepSettings(ServiceSettings):
    service_ms: float = Field(5.0, ge=0)
    transport: Literal["inprocess", "http"] = "http"
    endpoint: str | None = None  # mode=server: http://host:port
    ready_timeout_s: float = Field(10, gt=0)
    request_timeout_s: float = Field(30, gt=0)


class SleepDriver(Driver):
    name = "sleep"
    family = "calibration"
    description = "a known service time (in process or loopback HTTP) to check accuracy"
    Settings = SleepSettings

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
        return ServerRecipe(cmd, port)

    def __init__(self, settings: SleepSettings, trial) -> None:
        super().__init__(settings, trial)
        self.service_ns = int(settings.service_ms * 1e6)
        self.server: ServerProcess | None = None
        self.host, self.port = "127.0.0.1", 0

    def setup(self) -> None:
        s = self.settings
        if s.transport == "inprocess":
            return
        if s.mode == "server":
            url = urlsplit(s.endpoint)
            self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
            if not http_ready(self.host, self.port):
                raise DriverError(f"no sleep server answers at {s.endpoint}", "connection_refused")
            return
        self.port = free_port()
        cmd = self.server_recipe(s, self.host, self.port).cmd
        self.server = ServerProcess("sleep_server", cmd, self.trial.logs_dir)
        self.server.wait_ready(lambda: http_ready(self.host, self.port), s.ready_timeout_s)

    def open_worker(self, worker: int):
        if self.settings.transport == "inprocess":
            return None
        return _Conn(self.host, self.port, self.settings.request_timeout_s)

    def close_worker(self, state) -> None:
        if state is not None:
            state.close()

    def operation(self, ctx) -> int:
        if ctx.state is None:
            precise_sleep(self.service_ns)
            return 1
        return ctx.state.get(ctx)

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
        return state


class _Conn:
    """One keep-alive HTTP connection, re-opened after a failure."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.conn: http.client.HTTPConnection | None = None

    def get(self, ctx) -> int:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            self.conn.request("GET", "/sleep")
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
