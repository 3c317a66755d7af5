"""Validation of a composed config: typed, with an error that names the key, the bad
value and what is allowed, before anything starts.

A ``target`` is merged in first (:mod:`benchflow.config.targets`), a
``service.server=ID`` becomes the endpoint of that server, then the top-level
keys, the driver's settings, its own checks and the declared needs are checked.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ValidationError

from benchflow.config.limits import check_needs
from benchflow.config.schema import MISSING, BenchConfig, ConfigError, TrialSpec
from benchflow.sut.placement import format_cpus
from drivers.base import ConfigRefused, Driver, Resources


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
        from benchflow.config.targets import apply_target

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
            raise ConfigError(str(key), MISSING, first_line(exc)) from None
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
    from benchflow.sut.endpoints import endpoint_of

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


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _from_pydantic(
    exc: ValidationError, model: type[BaseModel], data: dict, prefix: str = ""
) -> ConfigError:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join([prefix, *loc] if prefix else loc)
    value = err.get("input", MISSING)
    if err["type"] == "extra_forbidden":
        allowed = sorted(_fields_at(model, loc[:-1]))
        return ConfigError(key, value, f"unknown key; allowed keys here: {', '.join(allowed)}")
    if err["type"] == "missing":
        return ConfigError(key, MISSING, "required")
    msg = err["msg"]
    if err["type"] == "literal_error":
        msg = "allowed: " + err["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
        if not loc:  # a model-level rule: show the keys it is about
            return ConfigError(prefix or "config", MISSING, msg)
    return ConfigError(key, value, msg)


def _fields_at(model: type[BaseModel], path: list[str]) -> list[str]:
    for part in path:
        f = model.model_fields.get(part)
        ann = getattr(f, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)
