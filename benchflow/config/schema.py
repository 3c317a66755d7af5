"""What a trial's configuration is: the typed settings Hydra's composed config is
validated into (:class:`BenchConfig`, the driver's own ``Settings`` for ``service``),
and :class:`TrialSpec`, the validated whole a trial runs from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from benchflow.config.limits import LimitsConfig
from benchflow.config.search import SearchConfig
from benchflow.sut.placement import PlacementConfig
from benchflow.workload.keys import AccessConfig
from benchflow.workload.trace import TraceConfig
from drivers.base import Driver, RunSettings, ServiceSettings

CONFIG_NAME = "config"


EXIT_CONFIG = 2


def conf_dir() -> Path:
    """The shipped Hydra config directory: inside the wheel, or the source tree's conf/."""
    here = Path(__file__).resolve().parents[1]  # benchflow/
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / f"{CONFIG_NAME}.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"benchflow's conf/ not found next to {here}")


class ConfigError(Exception):
    """A config that cannot run. ``str()`` is the one line shown to the user."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        from benchflow.secrets import REDACTED, is_secret_key, mask

        if value is MISSING:
            shown = "(missing)"
        elif is_secret_key(key) and value not in (None, ""):
            shown = REDACTED  # a secret given where none belongs is not echoed
        else:
            shown = mask(repr(value), set())
        super().__init__(f"invalid config: {key} = {shown}: {allowed}")


MISSING = object()


# -- the typed schema -------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MonitorConfig(_Strict):
    interval_s: float = Field(1.0, ge=0.1, description="sampling period of the monitor")
    gpu: bool = Field(True, description="sample GPUs through NVML when present")
    textfile_dir: str | None = Field(
        None,
        description="write each trial's summary here as a Prometheus textfile "
        "(node_exporter's textfile collector); null: none",
    )


class ValidityRules(_Strict):
    """When a trial is marked invalid (besides too few samples and a stalled SUT)."""

    max_rate_shortfall: float = Field(0.05, ge=0, le=1)
    max_error_rate: float = Field(0.01, ge=0, le=1)
    # steady state and saturation (docs/metrics.md#steady-state-and-saturation)
    max_throughput_trend: float = Field(
        0.10, gt=0, description="throughput's fitted change over the window, relative to its mean"
    )
    max_latency_trend: float = Field(
        0.20, gt=0, description="p50 latency's fitted change over the window, relative to its mean"
    )
    max_completion_shortfall: float = Field(
        0.05, ge=0, le=1, description="open loop: completed rate under the offered rate"
    )
    # clients > 1 (docs/slurm.md#clients-on-several-nodes)
    max_lost_client_share: float = Field(
        0.0, ge=0, lt=1, description="share of the load (failed shards / clients) a trial may lose"
    )
    max_clock_error_ms: float | None = Field(
        None,
        gt=0,
        description="how far a shard's windows may sit from the others' after clock "
        "correction; null: 0.1% of the measured window",
    )


class PrecisionConfig(_Strict):
    """``duration_s=auto``: when the measured phase may end (docs/metrics.md#precision)."""

    rel: float = Field(0.02, lt=1, description="relative half-width every judged percentile needs")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="of the percentiles' intervals")
    min_s: float = Field(10, gt=0, description="never end the measured phase before this")
    max_s: float = Field(120, gt=0, description="always end it by this")
    percentiles: list[str] | None = Field(
        None, description="the percentiles judged; null: p50, p90, p95, p99"
    )

    @field_validator("rel")
    @classmethod
    def _resolvable(cls, v: float) -> float:
        from benchflow.load.histogram import DEFAULT_REL_ERROR
        from benchflow.load.precision import MIN_REL

        if v < MIN_REL:
            raise ValueError(
                f"at least {MIN_REL:g}: the latency histogram's buckets are "
                f"{DEFAULT_REL_ERROR:.1%} wide and an interval is read at bucket edges, "
                "so a narrower half-width cannot be claimed"
            )
        return v

    @field_validator("percentiles")
    @classmethod
    def _reported(cls, v: list[str] | None) -> list[str] | None:
        from benchflow.results.schema import PERCENTILES

        if v is not None and not v:
            raise ValueError("name at least one (or null: p50, p90, p95, p99)")
        for name in v or []:
            if name not in PERCENTILES:
                raise ValueError(f"{name!r} is not reported; allowed: {', '.join(PERCENTILES)}")
        return v

    @field_validator("max_s")
    @classmethod
    def _after_min(cls, v: float, info: ValidationInfo) -> float:
        low = info.data.get("min_s")
        if low is not None and v < low:
            raise ValueError(f"below precision.min_s ({low:g})")
        return v

    def goal(self):
        """The engine's :class:`~benchflow.load.precision.PrecisionGoal`."""
        from benchflow.load.precision import PrecisionGoal
        from benchflow.results.schema import PERCENTILES

        names = self.percentiles or list(DEFAULT_PRECISION_PERCENTILES)
        return PrecisionGoal(
            self.rel,
            self.confidence,
            self.min_s,
            self.max_s,
            tuple((n, PERCENTILES[n]) for n in names),
        )


# Judged by default: every reported percentile a trial of a few seconds has the samples
# for; p99.9 needs ten times p99's and is judged only when named.
DEFAULT_PRECISION_PERCENTILES = ("p50", "p90", "p95", "p99")


class StageConfig(_Strict):
    """One stage of a staged trial (docs/workloads.md#stages): a rate (open loop) or a
    concurrency (closed loop) for a duration."""

    rate: float | None = Field(None, gt=0, description="requests/s (total over clients)")
    concurrency: int | None = Field(None, ge=1, description="closed loop: requests in flight")
    duration_s: float = Field(..., gt=0, description="the stage's length")
    ramp: bool = Field(
        False, description="move the rate linearly from the previous stage's (0 first) to rate"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> StageConfig:
        if (self.rate is None) == (self.concurrency is None):
            raise ValueError("give a stage either rate (open loop) or concurrency (closed loop)")
        if self.ramp and self.rate is None:
            raise ValueError("ramp moves a rate: concurrency stages step")
        return self


class TrackingConfig(_Strict):
    mode: Literal["local", "server"] = "local"
    uri: str | None = Field(None, description="null: MLflow's own default store")
    experiment: str = Field(..., min_length=1)
    upload: bool = Field(True, description="false: write results to disk only")
    http_timeout_s: float = Field(10, gt=0)
    http_retries: int = Field(2, ge=0)

    @model_validator(mode="after")
    def _server_needs_uri(self) -> TrackingConfig:
        if self.mode == "server" and not self.uri:
            raise ValueError("tracking=server needs tracking.uri (e.g. http://host:5000)")
        return self


class BudgetConfig(_Strict):
    """What a sweep sent to Slurm may request without an approval (``benchflow plan``)."""

    gpu_hours: float = Field(100, ge=0, description="total requested GPU-hours")
    cpu_hours: float = Field(2000, ge=0, description="total requested CPU-hours")
    approvals_dir: str | None = Field(
        None, description="where administrators record approvals (benchflow plan --approve-as)"
    )


class BenchConfig(_Strict):
    """The top-level keys (the names of DESIGN.md)."""

    service: dict[str, Any]  # validated by the driver's own Settings model
    tracking: TrackingConfig
    scenario: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    target: str | None = None
    batch: int = Field(1, ge=1)
    concurrency: int = Field(1, ge=1)
    rate: float | None = Field(None, gt=0, description="requests/s; null = closed loop")
    arrival: Literal["constant", "poisson", "gamma"] = "poisson"
    arrival_burstiness: float = Field(
        1.0,
        gt=0,
        description="arrival=gamma: shape of the gaps' gamma distribution (vLLM's "
        "--burstiness): CV² of the gaps = 1/burstiness; 1 is Poisson",
    )
    stages: list[StageConfig] | None = Field(
        None, description="open loop in consecutive stages of their own rate (docs/workloads.md)"
    )
    mix: dict[str, float] | None = Field(
        None, description="request classes and their weights (normalized to sum 1)"
    )
    trace: TraceConfig = Field(default_factory=TraceConfig, description="replay a trace")
    access: AccessConfig = Field(
        default_factory=AccessConfig, description="which keys requests touch (skew)"
    )
    duration_s: float | Literal["auto"] = Field(
        10, description="seconds, or auto: until the percentiles are known (precision.*)"
    )
    requests: int | None = Field(None, ge=1)
    warmup_s: float = Field(2, ge=0)
    repetitions: int = Field(1, ge=1)
    seed: int = Field(0, description="repetition k runs with repetition_seed(seed, k)")
    # the order of a sweep's trials (docs/configuration.md#order-of-execution-and-seeds)
    order: Literal["interleaved", "random", "blocked"] = Field(
        "interleaved",
        description="interleaved: repetition 0 of every configuration, then 1, ...; "
        "random: a permutation drawn from seed; blocked: each configuration's repetitions together",
    )
    repetition_index: int | None = Field(
        None,
        ge=0,
        description="run only this repetition (a sweep's interleaved jobs set it); null: all",
    )
    clients: int = Field(1, ge=1)
    results_dir: str = "results"
    data_dir: str
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    validity: ValidityRules = Field(default_factory=ValidityRules)
    precision: PrecisionConfig = Field(default_factory=PrecisionConfig)
    stall_timeout_s: float = Field(60, gt=0)
    progress: Literal["auto", "on", "off"] = "auto"
    # running sweeps (docs/slurm.md)
    resume: bool = Field(True, description="a sweep skips trials already FINISHED in MLflow")
    max_retries: int = Field(0, ge=0, description="retries of a transiently failed trial/job")
    retry_backoff_s: float = Field(10, ge=0, description="first retry delay; doubles each time")
    retry_on: list[str] = Field(
        default_factory=lambda: ["server_not_ready", "connection_refused"],
        description="error classes retried in the job ('*': any)",
    )
    client_launch: Literal["auto", "local", "srun"] = Field(
        "auto", description="client processes: local, or one Slurm task each (srun)"
    )
    approve: bool = Field(False, description="submit a sweep above the budget anyway")
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)  # docs/capacity.md
    placement: PlacementConfig = Field(default_factory=PlacementConfig)
    envs_dir: str = Field("~/.cache/benchflow/envs", description="cached isolated venvs")

    @field_validator("duration_s", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        if v == "auto":
            return v
        try:
            seconds = float(v)
        except (TypeError, ValueError):
            seconds = None
        if seconds is None or not seconds > 0:
            raise ValueError("a number of seconds > 0, or auto (precision-driven: precision.*)")
        return seconds

    @field_validator("requests")
    @classmethod
    def _count_or_auto(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and info.data.get("duration_s") == "auto":
            raise ValueError(
                "duration_s=auto ends the measured phase by its precision, requests by a "
                "count: set one of them (requests=null)"
            )
        return v

    @field_validator("repetition_index")
    @classmethod
    def _one_of_the_repetitions(cls, v: int | None, info) -> int | None:
        reps = info.data.get("repetitions")
        if v is not None and reps is not None and v >= reps:
            raise ValueError(f"a repetition of 0..{reps - 1} (repetitions={reps})")
        return v

    @field_validator("arrival_burstiness")
    @classmethod
    def _burstiness_for_gamma(cls, v: float, info: ValidationInfo) -> float:
        if v != 1.0 and info.data.get("arrival") != "gamma":
            raise ValueError("applies to arrival=gamma only (set arrival=gamma, or 1)")
        return v

    @field_validator("stages")
    @classmethod
    def _stages(cls, v: list[StageConfig] | None, info: ValidationInfo) -> Any:
        if v is None:
            return v
        if not v:
            raise ValueError(
                "a list of at least one {rate, duration_s[, ramp]} or {concurrency, duration_s}"
            )
        if len({st.rate is None for st in v}) > 1:
            raise ValueError("all stages rates (open loop) or all concurrencies (closed loop)")
        if info.data.get("rate") is not None:
            raise ValueError("stages carry their own rates or concurrencies: set rate=null")
        most = max(st.concurrency or 0 for st in v)
        if most > info.data.get("concurrency", 1):
            raise ValueError(
                f"a stage asks for concurrency {most}: set concurrency={most} or more (the "
                "workers the trial opens; each stage uses as many as it names)"
            )
        if info.data.get("duration_s") == "auto":
            raise ValueError("duration_s=auto and stages do not mix: the stages set the length")
        return v

    @field_validator("mix")
    @classmethod
    def _weights(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("name at least one class: {name: weight, ...} (or null)")
        bad = {k: w for k, w in v.items() if not w >= 0}
        if bad:
            raise ValueError(f"weights must be >= 0, got {bad}")
        total = sum(v.values())
        if not total > 0:
            raise ValueError("the weights must have a positive sum")
        # normalized (docs/workloads.md#mixes): weights are shares, whatever their sum
        return {k: w / total for k, w in v.items()}

    @property
    def open_loop(self) -> bool:
        """Requests start on a schedule: a rate, rate stages or a trace."""
        rated = self.stages is not None and self.stages[0].rate is not None
        return self.rate is not None or rated or self.trace.path is not None

    @model_validator(mode="after")
    def _clients_fit(self) -> BenchConfig:
        if self.clients > self.concurrency:
            raise ValueError(
                f"clients ({self.clients}) must be <= concurrency ({self.concurrency}): "
                "concurrency is the total over all clients"
            )
        return self


@dataclass(frozen=True)
class TrialSpec:
    """A validated configuration, ready to run."""

    cfg: BenchConfig
    service: ServiceSettings
    driver_cls: type[Driver]
    # the whole resolved config by value: validated, canonical (secrets still in it)
    resolved: dict[str, Any]
    overrides: tuple[str, ...] = ()
    target: Any = None  # benchflow.registry.ResolvedTarget when `target=` was given
    # the resolved config as given (text-typed values): its hash is the one benchflow
    # recorded before identity by value (benchflow.results.identity.config_hashes)
    resolved_text: dict[str, Any] | None = None

    @property
    def run_settings(self) -> RunSettings:
        """The run settings with the config's own ``seed`` (what validation checks)."""
        c = self.cfg
        mix = tuple((c.mix or {}).items())
        return RunSettings(c.batch, c.concurrency, c.clients, c.seed, c.rate, c.access, mix)

    def run_settings_for(self, repetition: int) -> RunSettings:
        """The run settings a trial of repetition ``repetition`` runs with: its seed
        is :func:`repetition_seed` of the config's ``seed``."""
        c = self.cfg
        seed, mix = self.seed_for(repetition), tuple((c.mix or {}).items())
        return RunSettings(c.batch, c.concurrency, c.clients, seed, c.rate, c.access, mix)

    def seed_for(self, repetition: int) -> int:
        return repetition_seed(self.cfg.seed, repetition)

    @property
    def repetitions_run(self) -> list[int]:
        """The repetitions a job of this spec runs: all, or the one ``repetition_index``
        names (a job of an interleaved or random sweep)."""
        c = self.cfg
        return list(range(c.repetitions)) if c.repetition_index is None else [c.repetition_index]


def repetition_seed(seed: int, repetition: int) -> int:
    """The seed repetition ``repetition`` of a configuration runs with.

    Repetition 0 runs with ``seed`` itself (a single trial runs exactly as before);
    repetition k >= 1 with the first four bytes (big-endian) of
    SHA-256(``"benchflow-seed:{seed}:{k}"``), top bit cleared (0 <= seed_k < 2**31).
    It depends on ``seed`` and k only, so repetition k of two configurations or two
    targets draws the same open-loop schedule and the same random choices (common
    random numbers), while the repetitions of one configuration differ.
    """
    if repetition == 0:
        return seed
    digest = hashlib.sha256(f"benchflow-seed:{seed}:{repetition}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
