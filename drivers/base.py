"""The driver interface: what every system under test looks like to the harness.

A driver is the client that loads one kind of SUT. The harness calls, in order:

``check(settings, run)``   (classmethod, no I/O) refuse what the driver cannot honour
``setup()``                start/prepare the SUT and data; record phases (ingest, build)
``open_worker(w)``         per worker: a connection, a session, a file handle
``operation(ctx)``         one request; sync or ``async def``; returns its size
``measure_start()`` / ``measure_end()``   around the measured window: server counters
``summarize(recording)``   figures derived from the merged measured recording (goodput)
``quality()``              figures of merit such as recall@k, after the load
``teardown()``             always, whatever happened

Settings are a pydantic model (unknown keys refused), so a bad service config
fails before anything starts, naming the key and what is allowed.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class Resources(BaseModel):
    """What one trial of this service needs from a scheduler."""

    model_config = ConfigDict(extra="forbid")
    gpus: int = Field(0, ge=0)
    cpus: int = Field(1, ge=1)
    mem_gb: float = Field(4, gt=0)
    time_min: int = Field(30, ge=1)


class ServiceSettings(BaseModel):
    """Keys every ``conf/service/*.yaml`` has; drivers subclass it with their own."""

    model_config = ConfigDict(extra="forbid")
    name: str
    driver: str
    mode: Literal["embedded", "server"] = "embedded"
    resources: Resources = Field(default_factory=Resources)


@dataclass(frozen=True)
class RunSettings:
    """The harness-level knobs a driver may need to know about."""

    batch: int
    concurrency: int
    clients: int
    seed: int
    rate: float | None


@dataclass
class TrialContext:
    """Where a driver may put things and how it reports phases."""

    trial_id: str
    run: RunSettings
    trial_dir: Path
    data_dir: Path
    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def logs_dir(self) -> Path:
        return self.trial_dir / "logs"

    @contextmanager
    def phase(self, name: str) -> Iterator[dict[str, float]]:
        """Time a setup phase (ingest, build, ...); the caller adds its own figures."""
        figures: dict[str, float] = {}
        t0 = time.perf_counter()
        yield figures
        figures["seconds"] = time.perf_counter() - t0
        self.phases[name] = figures


class DriverError(Exception):
    """A known, handled failure; ``error_class`` is recorded with the trial."""

    def __init__(self, message: str, error_class: str = "driver_error") -> None:
        super().__init__(message)
        self.error_class = error_class


class ConfigRefused(ValueError):
    """A setting the driver cannot honour (reported like any config error: exit 2)."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"{key} = {value!r}: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


class Driver(ABC):
    name: ClassVar[str]
    family: ClassVar[str]  # storage | inference | vectordb | calibration
    description: ClassVar[str]
    deprecated: ClassVar[bool] = False
    Settings: ClassVar[type[ServiceSettings]] = ServiceSettings
    batch_meaning: ClassVar[str] = "not used (must be 1)"
    size_unit: ClassVar[str] = "items"  # what operation() returns: items, bytes, tokens, rows
    # The trial's headline throughput: requests/s, or size units/s (e.g. MB/s).
    throughput_basis: ClassVar[Literal["requests", "size"]] = "requests"
    # Several client processes need a driver that is picklable after setup()
    # (connections belong in open_worker) and a SUT that is not inside this process.
    supports_clients: ClassVar[bool] = True
    client_library: ClassVar[str | None] = None  # distribution name, recorded in meta.json

    def __init__(self, settings: ServiceSettings, trial: TrialContext) -> None:
        self.settings = settings
        self.trial = trial

    @classmethod
    def check(cls, settings: ServiceSettings, run: RunSettings) -> None:
        """Refuse settings this driver cannot honour, with :class:`ConfigRefused`. No I/O."""
        if cls.batch_meaning.startswith("not used") and run.batch != 1:
            raise ConfigRefused("batch", run.batch, f"{cls.name} does not batch; use batch=1")
        if run.clients > 1 and not cls.supports_clients:
            raise ConfigRefused(
                "clients", run.clients, f"{cls.name} runs inside the harness process; use clients=1"
            )

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Start/prepare the SUT and its data. Time phases with ``self.trial.phase(name)``."""

    def open_worker(self, worker: int) -> Any:
        """Per-worker state (e.g. a connection), passed to operation() as ``ctx.state``."""
        return None

    def close_worker(self, state: Any) -> None:  # noqa: B027 - optional hook
        """Release what open_worker() returned."""

    @abstractmethod
    def operation(self, ctx) -> int:
        """One request. Return its size in ``size_unit``; raise on failure.

        May be ``async def``. Call ``ctx.first_byte()`` when the first byte/token
        arrives and ``ctx.observe(name, ns)`` for driver-specific durations.
        """

    def measure_start(self) -> None:  # noqa: B027 - optional hook
        """Called just before the measured window (e.g. snapshot server counters)."""

    def measure_end(self) -> dict[str, float]:
        """Called just after it; figures returned land in the result's ``extra`` block."""
        return {}

    def summarize(self, recording) -> dict[str, float]:
        """Figures derived from the measured phase's merged :class:`Recording` (all client
        processes), e.g. a rate of the requests that met an SLO; they land in ``extra``."""
        return {}

    def quality(self) -> dict[str, float]:
        """Figures of merit measured after the load (recall@k, accuracy, ...)."""
        return {}

    def sut_pids(self) -> list[int]:
        """Processes of the SUT for the monitor (none: the SUT is this process or remote)."""
        return []

    def classify_error(self, exc: BaseException) -> str:
        """The error class of a failed request (timeouts are recognised by the engine)."""
        if isinstance(exc, DriverError):
            return exc.error_class
        return type(exc).__name__

    def teardown(self) -> None:  # noqa: B027 - optional hook
        """Stop what setup() started and remove temporary data. Always called."""
