"""Validation of a composed config: typed, with an error that names the key, the bad
value and what is allowed, before anything starts.

A ``target`` is merged in first (:mod:`benchflow.config.targets`), a
``service.server=ID`` becomes the endpoint of that server, then the top-level
keys, the driver's settings, its own checks and the declared needs are checked.
The spec's ``resolved`` config is then *by value*: each value a model validated
replaced by its typed form, numbers canonical (``5.0`` -> ``5``), so params and
hashes never depend on how an override was spelled; :func:`normalize_params`
brings stored params of older runs to the same form.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ValidationError

from benchflow.config.limits import check_needs
from benchflow.config.schema import MISSING, BenchConfig, ConfigError, TrialSpec
from benchflow.results.identity import canonical
from benchflow.secrets import is_secret_key
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
    # Identity by value: what the typed settings hold, not the override's text.
    resolved_text = copy.deepcopy(resolved)
    resolved = _by_value(resolved, bench, service)
    if bench.placement.active:  # one spelling per CPU set in params and the config hash
        placement = {
            k: format_cpus(v) if v else None for k, v in bench.placement.model_dump().items()
        }
        resolved["placement"] = resolved_text["placement"] = placement
    if bench.placement.server_cpus and getattr(service, "mode", None) == "server":
        raise ConfigError(
            "placement.server_cpus",
            bench.placement.server_cpus,
            "only for a server the trial launches (service.mode=embedded); pin a running "
            "server where it runs",
        )
    _check_clients_reach_the_server(bench, service, driver_cls)
    _check_workload(bench, service, driver_cls)
    for key in _inactive_workload(bench):  # as before these keys existed: same hashes
        resolved.pop(key, None)
        resolved_text.pop(key, None)
    for dotted in driver_cls.inactive_keys(service):
        for tree in (resolved, resolved_text):
            _drop(tree.get("service", {}), dotted.split("."))
    if bench.stages is not None:  # every stage whole: an omitted `ramp` is `ramp: false`
        resolved["stages"] = canonical([st.model_dump() for st in bench.stages])
    spec = TrialSpec(bench, service, driver_cls, resolved, tuple(overrides), target, resolved_text)
    try:
        driver_cls.check(service, spec.run_settings)
        if not open_target:
            driver_cls.check_target(service)
        check_needs(service.resources, needs_declared(driver_cls, bench.service), bench.limits)
    except ConfigRefused as exc:
        raise ConfigError(exc.key, exc.value, exc.allowed) from None
    return spec


# -- workload shapes (docs/workloads.md) ------------------------------------------
def _check_workload(bench: BenchConfig, service: BaseModel, driver_cls) -> None:
    """What a trace, stages and a mix need of the rest of the config and the driver."""
    if bench.trace.path is not None:
        clash = [
            k
            for k, bad in (
                ("rate", bench.rate is not None),
                ("stages", bench.stages is not None),
                ("requests", bench.requests is not None),
                ("duration_s", bench.duration_s == "auto"),
            )
            if bad
        ]
        if clash:
            raise ConfigError(
                "trace.path",
                bench.trace.path,
                f"a trace replays its own times: drop {', '.join(clash)} (rate=null, "
                "stages=null, requests=null, duration_s a number); cut the trace with "
                "trace.start_s, trace.end_s, trace.limit",
            )
        from benchflow.workload.trace import TraceError, iter_trace

        try:  # the first record now: a missing or malformed file fails before any trial
            next(iter(iter_trace(bench.trace)), None)
        except TraceError as exc:
            raise ConfigError("trace.path", bench.trace.path, str(exc)) from None
    if bench.stages is not None and bench.requests is not None:
        raise ConfigError("requests", bench.requests, "stages end by their durations: null")
    if bench.mix is not None:
        allowed = driver_cls.mix_classes_for(service)
        if not allowed:
            raise ConfigError(
                "mix",
                bench.mix,
                f"service {service.name!r} has no request classes (drivers with classes: "
                "see docs/workloads.md#mixes)",
            )
        if allowed != "any":
            unknown = sorted(set(bench.mix) - set(allowed))
            if unknown:
                raise ConfigError(
                    f"mix.{unknown[0]}",
                    bench.mix[unknown[0]],
                    f"unknown class of service {service.name!r}; allowed: {', '.join(allowed)}",
                )


def _drop(tree: dict, path: list[str]) -> None:
    """Remove ``tree[path[0]][path[1]]...`` where it exists."""
    for part in path[:-1]:
        tree = tree.get(part)
        if not isinstance(tree, dict):
            return
    tree.pop(path[-1], None)


def _inactive_workload(bench: BenchConfig) -> list[str]:
    """Workload keys at their defaults change nothing: left out of the resolved config,
    so params and hashes of trials from before they existed stay as they were."""
    out = []
    if bench.arrival != "gamma":
        out.append("arrival_burstiness")
    for key in ("stages", "mix"):
        if getattr(bench, key) is None:
            out.append(key)
    if bench.trace.path is None:
        out.append("trace")
    if bench.access == type(bench.access)():
        out.append("access")
    return out


# -- identity by value ------------------------------------------------------------
def _by_value(resolved: dict[str, Any], bench: BenchConfig, service: BaseModel) -> dict[str, Any]:
    """The resolved config with every value a model validated replaced by its typed,
    JSON form, then in canonical form (:func:`benchflow.results.identity.canonical`).

    Only the keys the config has are kept (a model's defaults are not added, so the
    hash of a config does not change when a driver gains a setting); keys no model
    knows, and secrets, stay as given.
    """
    top = _jsonable(bench.model_dump())
    top.pop("service", None)  # a plain dict there: the driver's model types it
    out = _merge(resolved, top)
    out["service"] = _merge(resolved.get("service", {}), _jsonable(service.model_dump()))
    return canonical(out)


_KEEP = object()  # a value whose dump hides it (a pydantic secret): the given one stays


def _jsonable(value: Any) -> Any:
    from pydantic import SecretBytes, SecretStr
    from pydantic_core import to_jsonable_python

    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, SecretStr | SecretBytes):
        return _KEEP
    return to_jsonable_python(value)


def _merge(given: Any, typed: Any) -> Any:
    if isinstance(given, dict):
        if not isinstance(typed, dict):
            return given
        return {
            k: v if k not in typed or is_secret_key(str(k)) else _merge(v, typed[k])
            for k, v in given.items()
        }
    if isinstance(typed, dict) or typed is _KEEP:
        return given
    if isinstance(given, list) and isinstance(typed, list) and len(given) == len(typed):
        return [_merge(g, t) for g, t in zip(given, typed, strict=True)]
    return typed


def normalize_params(params: Mapping[str, Any]) -> dict[str, str]:
    """MLflow params of a stored trial in the form a trial logs them now.

    Runs logged before identity by value hold the text of their config
    (``service.service_ms`` = ``"5.0"`` or ``"5"``, as typed). Each param is read back
    (YAML), validated by the type its key has in the driver's ``Settings`` (from
    ``service.driver``; ``service.*`` keys) or in :class:`BenchConfig` (the others),
    and written as a trial writes it now (canonical form: ``"5"``). A param whose
    key no model types keeps its text, except that a float with an integral value
    loses its ``.0`` as everywhere; one that does not parse as its type keeps its
    text. ``custom.*`` (the driver's own metadata) is left alone. Idempotent: params
    logged now come back unchanged.

    ``benchflow compare`` normalizes both sides' params with this before pairing
    them by workload hash, and ``resume`` before matching a stored run's params.
    """
    from drivers import discovery

    settings: type[BaseModel] | None
    try:
        settings = discovery.load(str(params.get("service.driver"))).Settings
    except Exception:  # a driver not installed here: its keys keep their text
        settings = None
    out = {}
    for key, text in params.items():
        parts = str(key).split(".")
        if parts[0] == "custom" or not isinstance(text, str):
            out[key] = text if isinstance(text, str) else str(text)
        elif parts[0] == "service":
            out[key] = _param_by_value(settings, tuple(parts[1:]), text)
        else:
            out[key] = _param_by_value(BenchConfig, tuple(parts), text)
    return out


_UNTYPED = object()


def _param_by_value(model: type[BaseModel] | None, path: tuple[str, ...], text: str) -> str:
    import yaml

    try:
        value = yaml.safe_load(text)
    except Exception:
        return text
    adapter = _adapter(model, path) if model is not None else _UNTYPED
    if adapter is None:  # a key the model does not have (anymore)
        adapter = _UNTYPED
    if adapter is _UNTYPED:
        return str(canonical(value)) if type(value) is float else text
    try:
        typed = _jsonable(adapter.validate_python(value))
    except Exception:
        return text
    if typed is _KEEP or (isinstance(typed, dict) and typed):
        return text
    return str(canonical(typed))


@functools.lru_cache(maxsize=4096)
def _adapter(model: type[BaseModel], path: tuple[str, ...]) -> Any:
    """A TypeAdapter of the field at ``path`` in ``model``; None: no such field;
    _UNTYPED: below a field that is not a model (a free-form dict)."""
    import typing

    from pydantic import TypeAdapter

    current: Any = model
    for i, part in enumerate(path):
        fields = getattr(current, "model_fields", None)
        if fields is None:
            return _UNTYPED
        f = fields.get(part)
        if f is None:
            return None
        ann = f.annotation
        if i == len(path) - 1:
            try:
                return TypeAdapter(ann)
            except Exception:
                return _UNTYPED
        sub = [a for a in (ann, *typing.get_args(ann)) if isinstance(a, type)]
        sub = [a for a in sub if issubclass(a, BaseModel)]
        if not sub:
            return _UNTYPED
        current = sub[0]
    return _UNTYPED


def _check_clients_reach_the_server(bench, service, driver_cls) -> None:
    """Clients spread over several nodes cannot reach a server the trial launches: it
    listens on its own node's loopback. A server started as a job can be reached."""
    resources = getattr(service, "resources", None)
    if not (bench.clients > 1 and resources is not None and resources.nodes > 1):
        return
    if bench.client_launch == "local" or getattr(service, "mode", None) != "embedded":
        return
    if driver_cls.server_recipe(service, "HOST", 0) is None:
        return  # nothing to reach: the SUT runs in each client process
    raise ConfigError(
        "service.mode",
        "embedded",
        f"clients on {resources.nodes} nodes cannot reach a server the trial launches on "
        f"its own node's loopback; start it as a job (benchflow servers start "
        f"{service.name}) and set service.server=ID",
    )


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
