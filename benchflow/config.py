"""Configuration: where the Hydra configs live, their typed validation, and the
derived forms of a config (flattened params, identity hash).

Validation happens before anything starts — for a multirun, for every trial of
the sweep — and a bad key, type or value ends with exit code 2 and one line that
names the key, the value and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drivers.base import ConfigRefused, Driver, RunSettings, ServiceSettings

CONFIG_NAME = "config"
EXIT_CONFIG = 2


def conf_dir() -> Path:
    """The shipped Hydra config directory: inside the wheel, or the source tree's conf/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / f"{CONFIG_NAME}.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"benchflow's conf/ not found next to {here}")


class ConfigError(Exception):
    """A config that cannot run. ``str()`` is the one line shown to the user."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        shown = "(missing)" if value is _MISSING else repr(value)
        super().__init__(f"invalid config: {key} = {shown}: {allowed}")


_MISSING = object()


# -- the typed schema -------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MonitorConfig(_Strict):
    interval_s: float = Field(1.0, ge=0.1, description="sampling period of the monitor")
    gpu: bool = Field(True, description="sample GPUs through NVML when present")


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

    @property
    def run_settings(self) -> RunSettings:
        c = self.cfg
        return RunSettings(c.batch, c.concurrency, c.clients, c.seed, c.rate)


# -- validation -------------------------------------------------------------------
def validate(cfg: DictConfig | dict, overrides: tuple[str, ...] = ()) -> TrialSpec:
    """Validate a composed config; raises :class:`ConfigError`."""
    from drivers import discovery

    if isinstance(cfg, DictConfig):
        try:
            resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        except Exception as exc:  # interpolation or ??? missing value
            key = getattr(exc, "full_key", None) or "?"
            raise ConfigError(str(key), _MISSING, _first_line(exc)) from None
    else:
        resolved = dict(cfg)
    resolved.pop("hydra", None)
    try:
        bench = BenchConfig.model_validate(resolved)
    except ValidationError as exc:
        raise _from_pydantic(exc, BenchConfig, resolved) from None
    driver_name = bench.service.get("driver")
    try:
        driver_cls = discovery.load(str(driver_name))
    except KeyError:
        raise ConfigError(
            "service.driver", driver_name, f"allowed: {', '.join(discovery.names())}"
        ) from None
    try:
        service = driver_cls.Settings.model_validate(bench.service)
    except ValidationError as exc:
        raise _from_pydantic(exc, driver_cls.Settings, bench.service, prefix="service") from None
    spec = TrialSpec(bench, service, driver_cls, resolved, tuple(overrides))
    try:
        driver_cls.check(service, spec.run_settings)
    except ConfigRefused as exc:
        raise ConfigError(exc.key, exc.value, exc.allowed) from None
    return spec


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _from_pydantic(
    exc: ValidationError, model: type[BaseModel], data: dict, prefix: str = ""
) -> ConfigError:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join([prefix, *loc] if prefix else loc)
    value = err.get("input", _MISSING)
    if err["type"] == "extra_forbidden":
        allowed = sorted(_fields_at(model, loc[:-1]))
        return ConfigError(key, value, f"unknown key; allowed keys here: {', '.join(allowed)}")
    if err["type"] == "missing":
        return ConfigError(key, _MISSING, "required")
    msg = err["msg"]
    if err["type"] == "literal_error":
        msg = "allowed: " + err["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
        if not loc:  # a model-level rule: show the keys it is about
            return ConfigError(prefix or "config", _MISSING, msg)
    return ConfigError(key, value, msg)


def _fields_at(model: type[BaseModel], path: list[str]) -> list[str]:
    for part in path:
        f = model.model_fields.get(part)
        ann = getattr(f, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


# -- composing with Hydra (pre-validation of every trial of a sweep) ---------------
def compose_trials(
    overrides: list[str], multirun: bool, extra_config_dir: str | None = None
) -> list[TrialSpec]:
    """Compose and validate every trial an invocation would run, before any starts."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise ConfigError("overrides", " ".join(overrides), _first_line(exc)) from None
    if multirun:
        jobs = BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]
    else:
        bad = [o.input_line for o in parsed if o.is_sweep_override()]
        if bad:
            raise ConfigError(bad[0], _MISSING, "a sweep needs -m (multirun)")
        jobs = [list(overrides)]
    search = (
        [f"hydra.searchpath=[file://{Path(extra_config_dir).resolve()}]"]
        if (extra_config_dir)
        else []
    )
    specs = []
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir()), version_base="1.3", job_name="benchflow"):
        for job in jobs:
            try:
                cfg = compose(CONFIG_NAME, overrides=[*search, *job])
            except HydraException as exc:
                raise _from_hydra(exc, job, search) from None
            specs.append(validate(cfg, tuple(job)))
    GlobalHydra.instance().clear()
    return specs


def _from_hydra(exc: Exception, job: list[str], search: list[str] = ()) -> ConfigError:
    text = str(exc)
    m = re.search(r"Could not find '([^/']+)/([^']+)'", text)
    if m:
        group, option = m.groups()
        options = re.findall(r"^\t(\S+)", text, flags=re.M)
        return ConfigError(group, option, f"allowed: {', '.join(options) or '(none found)'}")
    m = re.search(r"Could not override '([^']+)'", text) or re.search(
        r"Key '([^']+)' is not in struct", text
    )
    if m:
        key = m.group(1)
        value = next((o.split("=", 1)[1] for o in job if o.split("=", 1)[0] == key), _MISSING)
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        # The keys of the config this job selected (service=..., tracking=...), not the defaults'.
        groups = [o for o in job if re.fullmatch(r"[A-Za-z_][\w/]*=[^,\s]+", o)]
        allowed = _allowed_keys(parent, [*search, *groups])
        return ConfigError(key, value, f"unknown key; allowed keys here: {allowed}")
    return ConfigError("overrides", " ".join(job), _first_line(exc))


def _allowed_keys(parent: str, overrides: list[str] = ()) -> str:
    from hydra import compose

    try:
        base = compose(CONFIG_NAME, overrides=list(overrides))
    except Exception:
        base = compose(CONFIG_NAME)
    node = OmegaConf.select(base, parent) if parent else base
    if isinstance(node, DictConfig):
        return ", ".join(sorted(str(k) for k in node if k != "hydra"))
    return "(none)"


# -- derived forms ---------------------------------------------------------------
def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys (lists stay values)."""
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[key] = v
    else:
        out[prefix] = tree
    return out


# Keys that say where or how a trial is run and logged, not what it measures.
NON_IDENTITY = (
    "tracking",
    "results_dir",
    "data_dir",
    "repetitions",
    "scenario",
    "progress",
    "monitor",
    "validity",
    "stall_timeout_s",
)


def config_hash(spec: TrialSpec, driver_version: str) -> str:
    """Identity of what a trial measures: equal for the repetitions of one config."""
    ident = {k: v for k, v in spec.resolved.items() if k not in NON_IDENTITY}
    ident["_driver"] = f"{spec.service.driver}=={driver_version}"
    blob = json.dumps(ident, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
