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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from benchflow.limits import LimitsConfig, check_needs, check_sweep
from benchflow.placement import PlacementConfig, format_cpus
from drivers.base import ConfigRefused, Driver, Resources, RunSettings, ServiceSettings

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
        from benchflow.secrets import REDACTED, is_secret_key, mask

        if value is _MISSING:
            shown = "(missing)"
        elif is_secret_key(key) and value not in (None, ""):
            shown = REDACTED  # a secret given where none belongs is not echoed
        else:
            shown = mask(repr(value), set())
        super().__init__(f"invalid config: {key} = {shown}: {allowed}")


_MISSING = object()


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


# -- validation -------------------------------------------------------------------
def validate(
    cfg: DictConfig | dict, overrides: tuple[str, ...] = (), open_target: bool = False
) -> TrialSpec:
    """Validate a composed config; raises :class:`ConfigError`.

    A ``target`` (``NAME@ALIAS`` or ``NAME/VERSION``) is resolved in the registry
    first and its spec merged in, so the merged config is what gets validated.
    ``open_target``: a benchmark definition, whose target is chosen when it runs
    (the driver's ``check_target`` is skipped).
    """
    target = None
    if (cfg.get("target") if isinstance(cfg, dict | DictConfig) else None) is not None:
        from benchflow.registry import apply_target

        base = OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg
        cfg, target = apply_target(base, overrides)
    try:
        return _validate(cfg, overrides, target, open_target)
    except ConfigError as exc:
        owned = target.spec.keys() if target else []
        if any(exc.key == p or exc.key.startswith(p + ".") for p in owned):
            exc.allowed += f" (set by target {target.label})"
            exc.args = (f"{exc.args[0]} (set by target {target.label})",)
        raise


def _validate(
    cfg: DictConfig | dict, overrides: tuple[str, ...], target: Any, open_target: bool = False
) -> TrialSpec:
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
    if bench.service.get("server"):
        bench.service = _server_endpoint(bench.service)
        resolved["service"] = bench.service
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
    if bench.placement.active:  # one spelling per CPU set in params and the config hash
        resolved["placement"] = {
            k: format_cpus(v) if v else None for k, v in bench.placement.model_dump().items()
        }
    if bench.placement.server_cpus and getattr(service, "mode", None) == "server":
        raise ConfigError(
            "placement.server_cpus",
            bench.placement.server_cpus,
            "only for a server the trial launches (service.mode=embedded); pin a running "
            "server where it runs",
        )
    spec = TrialSpec(bench, service, driver_cls, resolved, tuple(overrides), target)
    try:
        driver_cls.check(service, spec.run_settings)
        if not open_target:
            driver_cls.check_target(service)
        check_needs(service.resources, needs_declared(driver_cls, bench.service), bench.limits)
    except ConfigRefused as exc:
        raise ConfigError(exc.key, exc.value, exc.allowed) from None
    return spec


def _server_endpoint(service: dict[str, Any]) -> dict[str, Any]:
    """``service.server=ID``: a server started as a job stands for mode=server + its endpoint."""
    from benchflow.slurm.servers import endpoint_of

    try:
        endpoint = endpoint_of(str(service["server"]))
    except KeyError:
        raise ConfigError(
            "service.server",
            service["server"],
            "no ready server with this id (benchflow servers ps)",
        ) from None
    return {**service, "mode": "server", "endpoint": endpoint}


def needs_declared(driver_cls: type[Driver], service: dict[str, Any]) -> bool:
    """True when the service's config or the driver's Settings state its resources."""
    if "resources" in service:
        return True
    field = driver_cls.Settings.model_fields.get("resources")
    default = field.get_default(call_default_factory=True) if field else None
    return default is not None and default != Resources()


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
def sweep_jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override lists of the jobs an invocation runs (Hydra's basic sweeper's expansion)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise ConfigError("overrides", " ".join(overrides), _first_line(exc)) from None
    if multirun:
        return BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]
    bad = [o.input_line for o in parsed if o.is_sweep_override()]
    if bad:
        raise ConfigError(bad[0], _MISSING, "a sweep needs -m (multirun)")
    return [list(overrides)]


class Composer:
    """Composes many jobs' configs quickly, the way Hydra does.

    Hydra builds the defaults tree for every compose (~0.2 s each); for a sweep of
    100 jobs that alone is 20 s. Jobs usually differ only in plain values, so the
    tree is composed once per distinct set of config-group choices and each job's
    value overrides are applied to a copy, with Hydra's own functions and rules
    (an override naming a config group selects it; the rest set values, in struct
    mode). Use inside ``initialize_config_dir``; see :func:`composing`.
    """

    def __init__(self, extra_config_dir: str | None = None) -> None:
        from hydra.core.global_hydra import GlobalHydra

        self._search = (
            [f"hydra.searchpath=[file://{Path(extra_config_dir).resolve()}]"]
            if extra_config_dir
            else []
        )
        self._loader = GlobalHydra.instance().config_loader()
        self._repo = None  # the config repository (with the search path), made once
        self._bases: dict[tuple[str, ...], dict] = {}

    def compose(self, job: list[str], with_hydra: bool = False) -> DictConfig:
        """The composed config of one job (raises :class:`ConfigError`)."""
        from hydra import compose
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.errors import HydraException

        try:
            if with_hydra:
                return compose(
                    CONFIG_NAME, overrides=[*self._search, *job], return_hydra_config=True
                )
            if self._repo is None:
                self._repo = self._loader._parse_overrides_and_create_caching_repo(
                    CONFIG_NAME, self._search
                )[1]
            groups, values = [], []
            for o in OverridesParser.create().parse_overrides(job):
                is_group = self._repo.group_exists(o.key_or_group) and not isinstance(
                    o.value(), dict
                )
                hydra_key = o.key_or_group == "hydra" or o.key_or_group.startswith("hydra.")
                (groups if is_group or hydra_key else values).append(o)
            key = tuple(o.input_line for o in groups)
            if key not in self._bases:
                base = compose(CONFIG_NAME, overrides=[*self._search, *key])
                self._bases[key] = OmegaConf.to_container(base, resolve=False)
            # A fresh node from plain containers is much cheaper than a deepcopy.
            cfg = OmegaConf.create(self._bases[key])
            OmegaConf.set_struct(cfg, True)
            self._loader._apply_overrides_to_config(values, cfg)
            return cfg
        except HydraException as exc:
            raise _from_hydra(exc, job, self._search) from None


@contextmanager
def composing(extra_config_dir: str | None = None) -> Iterator[Composer]:
    """A :class:`Composer` over benchflow's configs (Hydra's global state is reset after)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(conf_dir()), version_base="1.3", job_name="benchflow"):
            yield Composer(extra_config_dir)
    finally:
        GlobalHydra.instance().clear()


# Specs validated before Hydra started, by job overrides: Hydra's sweeper need not
# compose them again, and benchflow's Slurm launcher reads their resources here.
PREVALIDATED: dict[tuple[str, ...], TrialSpec] = {}


def compose_trials(
    overrides: list[str],
    multirun: bool,
    extra_config_dir: str | None = None,
    open_target: bool = False,
) -> list[TrialSpec]:
    """Compose and validate every trial an invocation would run, before any starts.

    ``open_target``: validate a benchmark definition, whose target is chosen later.
    """
    jobs = sweep_jobs(overrides, multirun)
    specs = []
    with composing(extra_config_dir) as composer:
        for job in jobs:
            spec = validate(composer.compose(job), tuple(job), open_target)
            if not open_target:  # only what can run is reused by the launchers
                PREVALIDATED[tuple(job)] = spec
            specs.append(spec)
    if specs:
        caps = [s.cfg.limits for s in specs if s.cfg.limits.sweep.max_trials is not None]
        try:
            for cap in caps:
                check_sweep(sum(s.cfg.repetitions for s in specs), cap)
        except ConfigRefused as exc:
            raise ConfigError(exc.key, exc.value, exc.allowed) from None
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
        hint = ""
        if key.startswith("service."):  # a setting the driver has but the yaml does not list
            hint = f" (or add one the driver accepts with ++{key}=...)"
        return ConfigError(key, value, f"unknown key; allowed keys here: {allowed}{hint}")
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
    "resume",
    "max_retries",
    "retry_backoff_s",
    "retry_on",
    "client_launch",
    "approve",
    "budget",
    "limits",
    "envs_dir",
)


def config_hash(spec: TrialSpec, driver_version: str) -> str:
    """Identity of what a trial measures: equal for the repetitions of one config."""
    ident = {k: v for k, v in spec.resolved.items() if k not in NON_IDENTITY}
    if not spec.cfg.placement.active:
        # Unset, it changes nothing measured: trials from before the key existed keep
        # their hash (and `resume` still finds them).
        ident.pop("placement", None)
    ident["_driver"] = f"{spec.service.driver}=={driver_version}"
    blob = json.dumps(ident, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def workload_hash(params: dict[str, Any], ignore: list[str] | tuple[str, ...] = ()) -> str:
    """Identity of the *workload* of a trial: its flattened config (MLflow params)
    without the keys that say where it ran (:data:`NON_IDENTITY`), without
    ``target``, and without ``ignore`` — the dotted prefixes a target provides.

    Two targets run on the same workload share it, so `benchflow compare` can pair
    their trials; the config hash, which includes the target, cannot.
    """
    skip = (*NON_IDENTITY, "target", *ignore)
    ident = {
        k: str(v)
        for k, v in params.items()
        if not any(k == p or k.startswith(p + ".") for p in skip)
    }
    blob = json.dumps(ident, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
