"""What a trial's configuration is: the typed settings Hydra's composed config is
validated into (:class:`BenchConfig`, the driver's own ``Settings`` for ``service``),
and :class:`TrialSpec`, the validated whole a trial runs from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from benchflow.config.limits import LimitsConfig
from benchflow.sut.placement import PlacementConfig
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
    arrival: Literal["constant", "poisson"] = "poisson"
    duration_s: float = Field(10, gt=0)
    requests: int | None = Field(None, ge=1)
    warmup_s: float = Field(2, ge=0)
    repetitions: int = Field(1, ge=1)
    seed: int = 0
    clients: int = Field(1, ge=1)
    results_dir: str = "results"
    data_dir: str
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    validity: ValidityRules = Field(default_factory=ValidityRules)
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
    placement: PlacementConfig = Field(default_factory=PlacementConfig)
    envs_dir: str = Field("~/.cache/benchflow/envs", description="cached isolated venvs")

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
    resolved: dict[str, Any]  # the whole resolved config (secrets still in it)
    overrides: tuple[str, ...] = ()
    target: Any = None  # benchflow.registry.ResolvedTarget when `target=` was given

    @property
    def run_settings(self) -> RunSettings:
        c = self.cfg
        return RunSettings(c.batch, c.concurrency, c.clients, c.seed, c.rate)
