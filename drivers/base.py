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

A *benchmark experiment* from another team is a driver too, in its own package
(docs/benchmarks.md): its ``Settings`` are its inputs (``target_fields`` name
the benchmark target among them), its outputs are the common result plus the
``Outputs`` it declares for ``quality()`` and the custom metadata it attaches
through :class:`TrialContext`; it states its needs (``Settings.resources``) and
may ask to run isolated (``Settings.isolation``). Known failures are raised as
:class:`DriverError` with a code; anything else is an unexpected failure.
"""

from __future__ import annotations

import json
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Resources(BaseModel):
    """What one trial of this service needs from a scheduler."""

    model_config = ConfigDict(extra="forbid")
    gpus: int = Field(0, ge=0, description="GPUs per node")
    cpus: int = Field(1, ge=1, description="CPUs per task")
    mem_gb: float = Field(4, gt=0, description="memory per node")
    time_min: int = Field(30, ge=1, description="time limit per trial (a job: x repetitions)")
    nodes: int = Field(1, ge=1, description="nodes (clients spread over them: clients >= nodes)")


class Isolation(BaseModel):
    """Where the trial's code runs: this environment, a cached venv, or a container.

    ``venv``: a virtual environment created once per distinct set of
    requirements (keyed by their hash, under ``envs_dir``) holding benchflow and
    the driver's own package, as installed here, plus ``requirements``.
    ``container``: the trial runs as ``apptainer exec IMAGE python -m
    benchflow.run.worker`` (the image must hold benchflow and the driver's package).
    """

    model_config = ConfigDict(extra="forbid")
    mode: Literal["none", "venv", "container"] = "none"
    requirements: list[str] = Field(
        default_factory=list, description="pip requirements added to the venv (pins that clash)"
    )
    pip_args: list[str] = Field(
        default_factory=list, description="extra pip options, e.g. [--index-url, URL]"
    )
    system_site_packages: bool = Field(
        False,
        description="venv: also see the harness interpreter's packages (faster, less isolated)",
    )
    image: str | None = Field(None, description="container: a .sif path or docker://REF@sha256:...")
    runtime: str = Field("apptainer", description="container: the runtime's executable")
    binds: list[str] = Field(default_factory=list, description="container: extra SRC[:DST] binds")


class ServiceSettings(BaseModel):
    """Keys every ``conf/service/*.yaml`` has; drivers subclass it with their own."""

    model_config = ConfigDict(extra="forbid")
    name: str
    driver: str
    mode: Literal["embedded", "server"] = "embedded"
    resources: Resources = Field(default_factory=Resources)
    # A SUT started as a Slurm job by `benchflow servers start`: its id stands for
    # mode=server and its endpoint (resolved before the driver sees the settings).
    server: str | None = None
    isolation: Isolation = Field(default_factory=Isolation)


@dataclass(frozen=True)
class RunSettings:
    """The harness-level knobs a driver may need to know about."""

    batch: int
    concurrency: int
    clients: int
    seed: int
    rate: float | None
    # which keys requests touch (benchflow.workload.keys.AccessConfig; None: uniform)
    access: Any = None
    # a mix's classes and their (normalized) weights; (): no mix (docs/workloads.md)
    mix: tuple[tuple[str, float], ...] = ()


CUSTOM_FILE = "custom.json"  # the driver's own metadata, next to metrics.json
CUSTOM_DIR = "custom"  # files the driver attached


@dataclass
class TrialContext:
    """Where a driver may put things and how it reports phases.

    ``custom`` and :meth:`attach` are the driver's own metadata: a JSON-able
    dict and files, kept with the trial (``custom.json``, ``custom/``) and
    logged to MLflow (params ``custom.*``, artifacts) next to the common result,
    whether the trial finishes or fails.
    """

    trial_id: str
    run: RunSettings
    trial_dir: Path
    data_dir: Path
    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    custom: dict[str, Any] = field(default_factory=dict)
    config_hash: str = ""  # identity of what is measured (equal for repetitions)
    repetition: int = 0
    target: str | None = None  # the ``target`` key as given (NAME@ALIAS, NAME/VERSION)
    # Reasons the driver found to distrust the measurement (e.g. the SUT restarted
    # during the window); any reason marks the trial invalid.
    invalid_reasons: list[str] = field(default_factory=list)

    @property
    def logs_dir(self) -> Path:
        return self.trial_dir / "logs"

    @property
    def state_dir(self) -> Path:
        """Resumable state of this configuration and repetition (e.g. per-item checkpoints).

        It outlives a failed or killed trial, so rerunning the same command can
        resume; it is removed when a trial of this configuration finishes.
        """
        path = state_dir_for(self.data_dir, self.config_hash, self.repetition)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def attach(self, src: str | Path, name: str | None = None) -> Path:
        """Copy a file into the trial's ``custom/`` folder (logged as an artifact)."""
        src = Path(src)
        dest = self.trial_dir / CUSTOM_DIR / (name or src.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return dest

    def attach_text(self, name: str, text: str) -> Path:
        """Write ``text`` as ``custom/<name>`` (logged as an artifact)."""
        dest = self.trial_dir / CUSTOM_DIR / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        return dest

    def write_custom(self) -> None:
        """Write ``custom.json`` (called by the harness, also after a failure)."""
        if not self.custom:
            return
        try:
            text = json.dumps(self.custom, indent=2, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise DriverError(
                f"custom metadata is not JSON-serialisable: {exc}", "bad_custom_metadata"
            ) from None
        (self.trial_dir / CUSTOM_FILE).write_text(text)

    @contextmanager
    def phase(self, name: str) -> Iterator[dict[str, float]]:
        """Time a setup phase (ingest, build, ...); the caller adds its own figures."""
        figures: dict[str, float] = {}
        t0 = time.perf_counter()
        yield figures
        figures["seconds"] = time.perf_counter() - t0
        self.phases[name] = figures


@dataclass(frozen=True)
class ServerRecipe:
    """How to run a driver's SUT as a standalone server (``benchflow servers start``)."""

    cmd: list[str]
    port: int
    ready: Literal["http", "tcp"] = "http"
    ready_path: str = "/health"  # ready when GET answers 200 (ready="http")
    scheme: str = "http"  # endpoint = scheme://host:port


def state_dir_for(data_dir: Path, config_hash: str, repetition: int) -> Path:
    return Path(data_dir) / "state" / (config_hash or "unhashed") / f"rep{repetition}"


class DriverError(Exception):
    """A known, handled failure: the one exception type for errors a driver or
    benchmark experiment expects (bad data, a target that cannot load, ...).

    The trial is recorded as failed with ``error_class`` = ``code`` (a short
    snake_case word users can filter on) and the message shown to whoever ran
    it; any other exception is recorded as an unexpected failure with its
    traceback. Raised from ``operation()``, it counts one failed request.
    """

    def __init__(self, message: str, error_class: str = "driver_error") -> None:
        super().__init__(message)
        self.error_class = error_class

    @property
    def code(self) -> str:
        return self.error_class

    @property
    def message(self) -> str:
        return str(self)


class ConfigRefused(ValueError):
    """A setting the driver cannot honour (reported like any config error: exit 2)."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"{key} = {value!r}: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


class Driver(ABC):
    name: ClassVar[str]
    family: ClassVar[str]  # storage | inference | vectordb | calibration | quality | ...
    description: ClassVar[str]
    # True, or a string saying why and what to use instead: running it warns (and is recorded).
    deprecated: ClassVar[bool | str] = False
    Settings: ClassVar[type[ServiceSettings]] = ServiceSettings
    # The Settings fields that name the benchmark target (what varies between the runs
    # being compared: an endpoint and model, a callable, an index spec). Every other
    # service setting is the workload, held constant by a registered benchmark.
    target_fields: ClassVar[tuple[str, ...]] = ()
    # A fixed experiment hard-codes its workload: a benchmark registers it as is.
    fixed: ClassVar[bool] = False
    # The figures quality() returns, as a pydantic model (validated after every trial).
    Outputs: ClassVar[type[BaseModel] | None] = None
    batch_meaning: ClassVar[str] = "not used (must be 1)"
    size_unit: ClassVar[str] = "items"  # what operation() returns: items, bytes, tokens, rows
    # The trial's headline throughput: requests/s, or size units/s (e.g. MB/s).
    throughput_basis: ClassVar[Literal["requests", "size"]] = "requests"
    # What a trial of this driver is judged on. "load": throughput and latency
    # percentiles; fewer successful requests than p99 needs makes the trial invalid.
    # "quality": the figures of quality() over a set whose size, not a duration, sets
    # the number of requests (an evaluation); latency percentiles are reported where
    # they have enough samples, and too few samples is a note, not invalidity.
    headline_figures: ClassVar[Literal["load", "quality"]] = "load"
    # Several client processes need a driver that is picklable after setup()
    # (connections belong in open_worker) and a SUT that is not inside this process.
    supports_clients: ClassVar[bool] = True
    client_library: ClassVar[str | None] = None  # distribution name, recorded in meta.json
    # The request classes a mix (``mix={name: weight}``, docs/workloads.md#mixes) may
    # name: their names; "any" for names the driver looks up in its own settings
    # (``service.classes.<name>``); () when its requests are of one kind. The engine
    # draws each request's class and hands it over as ``ctx.cls``.
    mix_classes: ClassVar[tuple[str, ...] | Literal["any"]] = ()

    def __init__(self, settings: ServiceSettings, trial: TrialContext) -> None:
        self.settings = settings
        self.trial = trial

    @classmethod
    def headline(cls, settings: ServiceSettings) -> Literal["requests", "size"]:
        """The headline throughput's basis for these settings (default: ``throughput_basis``).

        A driver whose operations differ in kind (bytes moved by a GET, none by a
        HEAD) overrides this to pick per configuration.
        """
        return cls.throughput_basis

    @classmethod
    def headline_for(cls, settings: ServiceSettings, run: RunSettings | None):
        """The headline's basis for these settings in this run (default: :meth:`headline`);
        a driver whose basis depends on the run (a mix of kinds) overrides this."""
        return cls.headline(settings)

    @classmethod
    def inactive_keys(cls, settings: ServiceSettings) -> tuple[str, ...]:
        """Dotted keys under ``service`` that, as set, change nothing measured (a feature
        left off). They are left out of the trial's params and hashes, so a setting a
        driver gains does not change the identity of trials run before it existed."""
        return ()

    @classmethod
    def mix_classes_for(cls, settings: ServiceSettings) -> tuple[str, ...] | Literal["any"]:
        """The classes a mix may name with these settings (default: ``mix_classes``)."""
        return cls.mix_classes

    @classmethod
    def check(cls, settings: ServiceSettings, run: RunSettings) -> None:
        """Refuse settings this driver cannot honour, with :class:`ConfigRefused`. No I/O."""
        if cls.batch_meaning.startswith("not used") and run.batch != 1:
            raise ConfigRefused("batch", run.batch, f"{cls.name} does not batch; use batch=1")
        if run.clients > 1 and not cls.supports_clients:
            raise ConfigRefused(
                "clients", run.clients, f"{cls.name} runs inside the harness process; use clients=1"
            )

    @classmethod  # noqa: B027 - optional hook
    def check_target(cls, settings: ServiceSettings) -> None:
        """Refuse a missing or malformed target (``target_fields``), with :class:`ConfigRefused`.

        Called for every trial, after :meth:`check`, but not when a benchmark
        definition is registered: the target is chosen when it runs. So a target
        without a default belongs here, not in ``check``. No I/O.
        """

    @classmethod
    def server_recipe(cls, settings: ServiceSettings, host: str, port: int) -> ServerRecipe | None:
        """The SUT as a standalone server on ``host:port`` (None: it has no server form).

        Clients then reach it with ``service.mode=server service.endpoint=...``.
        """
        return None

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Start/prepare the SUT and its data. Time phases with ``self.trial.phase(name)``."""

    def server_sample(self) -> dict[str, float]:
        """The SUT's own figures now — requests queued or running, cache use — read by
        the monitor every ``monitor.interval_s`` from its own thread (keep it cheap and
        thread-safe). Written to ``server.csv`` and logged as ``server/<name>`` series
        on the time axis of ``timeseries/*`` and ``system/*``. Default: none."""
        return {}

    def samples_server(self) -> bool:
        """Whether this driver has :meth:`server_sample` figures to give."""
        return type(self).server_sample is not Driver.server_sample

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

    def planned_requests(self) -> int | None:
        """After setup(): the measured phase's exact number of requests, or None.

        A driver working through a fixed set of items (a quality benchmark: one
        request per question) returns how many are left, and the measured phase
        is then one pass over them, whatever ``duration_s`` says (a smaller
        ``requests`` still caps it).
        """
        return None

    @classmethod
    def check_outputs(cls, quality: dict[str, float]) -> dict[str, float]:
        """Validate quality() against ``Outputs`` (a driver bug is an unexpected failure)."""
        if cls.Outputs is None:
            return quality
        try:
            cls.Outputs.model_validate(quality)
        except ValidationError as exc:
            raise TypeError(
                f"{cls.name}.quality() does not match its Outputs: {exc.errors()[0]['msg']} "
                f"at {'.'.join(map(str, exc.errors()[0]['loc']))}"
            ) from None
        return quality

    @classmethod
    def io_schema(cls) -> dict[str, Any]:
        """Inputs and outputs in benchflow's schema (``benchflow drivers --schema NAME``)."""
        from benchflow.results import SCHEMA_VERSION, TrialResult

        return {
            "name": cls.name,
            "family": cls.family,
            "fixed": cls.fixed,
            "deprecated": cls.deprecated,
            "headline_figures": cls.headline_figures,
            "inputs": {
                "target": list(cls.target_fields),
                "settings": cls.Settings.model_json_schema(),
                "run": [f.name for f in RunSettings.__dataclass_fields__.values()],
            },
            "outputs": {
                "result": {"schema_version": SCHEMA_VERSION, "model": TrialResult.__name__},
                "quality": cls.Outputs.model_json_schema() if cls.Outputs else None,
                "size_unit": cls.size_unit,
                "throughput_basis": cls.throughput_basis,
                "custom": f"{CUSTOM_FILE} (free-form JSON object) and files in {CUSTOM_DIR}/",
            },
        }

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
