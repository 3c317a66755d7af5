"""Benchmark targets in the MLflow model registry.

A *target* is what varies while the benchmark stays fixed: a model with its
serving engine and settings, an index configuration, a database configuration.
Each target is an MLflow **registered model** (tagged ``benchflow.kind=target``);
each of its **versions** has a spec file (YAML, :class:`TargetSpec`) as its
source artifact, and tags that describe it (service, model, engine args,
container digest). Aliases (``champion``, ``candidate``, ...) point at versions;
MLflow deprecated stages, so the lifecycle None → Staging → Production →
Archived is expressed with aliases and a ``benchflow.stage`` tag (:data:`STAGES`).

``python -m benchflow target=NAME@ALIAS`` (or ``NAME/VERSION``) resolves the
version here and merges its spec into the composed config *before* validation
(:func:`apply_target`), so a bad spec is a config error (exit 2) like any other.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError

TARGETS_EXPERIMENT = "benchflow-targets"  # where registration and promotion runs live
KIND_TAG = "benchflow.kind"
SPEC_FILE = "spec.yaml"
SPEC_DIR = "target"  # artifact folder of the spec inside its run
# Lifecycle stage -> the alias that carries it (MLflow deprecated stages; aliases replace them).
STAGES = {"staging": "candidate", "production": "champion"}
PREVIOUS_CHAMPION = "previous-champion"
DESCRIPTIVE_TAGS = ("service", "driver", "model", "engine_args", "container_digest")

_REF = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]*)(?:@(?P<alias>[A-Za-z0-9_\-]+)|/(?P<version>\d+))$"
)


class TargetError(Exception):
    """A target that cannot be found or used; ``str()`` is the line shown to the user."""


class TargetSpec(BaseModel):
    """The file a target version stands for.

    ``service`` names the service recipe (``conf/service/<name>.yaml``) the target
    runs on; ``config`` is merged over the composed config (target keys win and
    may not be overridden on the command line); ``tags`` describe the target.
    """

    model_config = ConfigDict(extra="forbid")
    description: str = ""
    service: str | None = Field(None, description="service recipe the target runs on")
    config: dict[str, Any] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)

    def keys(self) -> list[str]:
        """Dotted config prefixes this spec provides (what is excluded from a workload)."""
        from benchflow.config import flatten

        keys = {k for k in flatten(self.config) if k != "target"}
        if self.service:
            keys = {k for k in keys if not k.startswith("service.")} | {"service"}
        return sorted(keys)

    def describe(self) -> dict[str, str]:
        """Descriptive tags for the model version: explicit tags, then what the spec implies."""
        svc = self.config.get("service") or {}
        out: dict[str, str] = {}
        if self.service or svc.get("name"):
            out["service"] = str(self.service or svc.get("name"))
        if svc.get("driver"):
            out["driver"] = str(svc["driver"])
        for key in ("model", "engine_args", "container_digest", "image"):
            if key in svc and svc[key] is not None:
                out["container_digest" if key == "image" else key] = _short(svc[key])
        out.update({k: str(v) for k, v in self.tags.items()})
        return out


def _short(v: Any) -> str:
    text = v if isinstance(v, str) else yaml.safe_dump(v, default_flow_style=True).strip()
    return text[:4000]


@dataclass(frozen=True)
class TargetRef:
    name: str
    alias: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}/{self.version}"


def parse_ref(ref: str) -> TargetRef:
    """``NAME@ALIAS`` or ``NAME/VERSION``; raises :class:`TargetError`."""
    m = _REF.match(str(ref).strip())
    if not m:
        raise TargetError(
            f"target {ref!r}: expected NAME@ALIAS (e.g. faiss-hnsw@champion) or NAME/VERSION "
            "(e.g. faiss-hnsw/3)"
        )
    return TargetRef(m["name"], m["alias"], m["version"])


@dataclass(frozen=True)
class ResolvedTarget:
    """A target version resolved from the registry, with its spec."""

    name: str
    version: str
    ref: str  # as asked: NAME@ALIAS or NAME/VERSION
    spec: TargetSpec
    source: str
    spec_sha256: str
    aliases: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``NAME/VERSION``: the value of the ``benchflow.target`` tag of its runs."""
        return f"{self.name}/{self.version}"


# -- the registry client -----------------------------------------------------------
def _client(uri: str | None = None):
    from benchflow import tracking

    return tracking.client(uri)


def _mlflow_error(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def resolve(ref: str | TargetRef, uri: str | None = None, client=None) -> ResolvedTarget:
    """The version a reference points at, with its spec; raises :class:`TargetError`."""
    from mlflow.exceptions import MlflowException

    r = parse_ref(ref) if isinstance(ref, str) else ref
    c = client or _client(uri)
    try:
        rm = c.get_registered_model(r.name)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
            raise TargetError(f"target {r}: registry error: {_mlflow_error(exc)}") from None
        known = ", ".join(sorted(m.name for m in _search_models(c))) or "(none registered)"
        raise TargetError(f"target {r}: no registered target {r.name!r}; known: {known}") from None
    except Exception as exc:  # connection refused, timeout: the registry cannot be reached
        raise TargetError(
            f"target {r}: cannot reach the registry at {c.tracking_uri}: {_mlflow_error(exc)}"
        ) from None
    aliases = {a: str(v) for a, v in (rm.aliases or {}).items()}
    if r.alias:
        if r.alias not in aliases:
            have = ", ".join(f"@{a} -> {v}" for a, v in sorted(aliases.items())) or "none"
            raise TargetError(f"target {r}: {r.name} has no alias {r.alias!r}; aliases: {have}")
        version = aliases[r.alias]
    else:
        version = str(r.version)
    try:
        mv = c.get_model_version(r.name, version)
    except MlflowException:
        versions = ", ".join(sorted((str(v.version) for v in _versions(c, r.name)), key=int))
        raise TargetError(
            f"target {r}: {r.name} has no version {version}; versions: {versions or 'none'}"
        ) from None
    text = _spec_text(mv.source, c.tracking_uri)
    spec = parse_spec(text, f"{r.name}/{version}")
    return ResolvedTarget(
        name=r.name,
        version=str(mv.version),
        ref=str(r),
        spec=spec,
        source=mv.source,
        spec_sha256=hashlib.sha256(text.encode()).hexdigest(),
        aliases=tuple(sorted(a for a, v in aliases.items() if v == str(mv.version))),
        tags=dict(mv.tags or {}),
    )


@lru_cache(maxsize=64)
def _spec_text(source: str, tracking_uri: str) -> str:
    """The spec file behind a version's source URI (cached: versions are immutable)."""
    import mlflow.artifacts

    local = Path(source.removeprefix("file://"))
    if local.is_absolute() and local.is_file():
        return local.read_text()
    try:
        path = mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=tracking_uri)
    except Exception as exc:
        raise TargetError(f"cannot read the spec at {source}: {_mlflow_error(exc)}") from None
    p = Path(path)
    return (p / SPEC_FILE if p.is_dir() else p).read_text()


def parse_spec(text: str, where: str) -> TargetSpec:
    """Parse and validate a spec; raises :class:`TargetError` naming the bad key."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise TargetError(f"spec of {where} is not YAML: {_mlflow_error(exc)}") from None
    if not isinstance(data, dict):
        raise TargetError(f"spec of {where} must be a mapping, got {type(data).__name__}")
    try:
        return TargetSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        allowed = ", ".join(TargetSpec.model_fields)
        why = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise TargetError(
            f"spec of {where}: {key} = {err.get('input')!r}: {why} (spec keys: {allowed})"
        ) from None


def _search_models(c, filter_string: str | None = None) -> list:
    out, token = [], None
    base = f"tags.`{KIND_TAG}` = 'target'"
    while True:
        page = c.search_registered_models(
            f"{base} AND {filter_string}" if filter_string else base, page_token=token
        )
        out += list(page)
        token = page.token
        if not token:
            return out


def _versions(c, name: str) -> list:
    return list(c.search_model_versions(f"name = '{name}'"))


# -- merging a target into a config (before validation) ----------------------------
def apply_target(
    cfg: DictConfig, overrides: tuple[str, ...] = ()
) -> tuple[DictConfig, ResolvedTarget]:
    """Resolve ``cfg.target`` and merge its spec into a copy of ``cfg``.

    Raises :class:`benchflow.config.ConfigError` (key ``target``) when the target
    cannot be resolved, its spec is bad, or an override sets a key the target owns.
    """
    from benchflow.config import ConfigError, conf_dir

    ref = str(cfg.target)
    uri = OmegaConf.select(cfg, "tracking.uri", throw_on_resolution_failure=False)
    try:
        target = resolve(ref, uri)
    except TargetError as exc:
        raise ConfigError("target", ref, str(exc).split(": ", 1)[-1]) from None
    spec = target.spec
    owned = spec.keys()
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        if key in ("target", "hydra") or key.startswith("hydra."):
            continue
        if "." not in key and (conf_dir() / key).is_dir():
            # Choosing a config group (service=intent) is not setting a key the target
            # owns — unless the target names another service.
            value = o.split("=", 1)[1] if "=" in o else None
            if key == "service" and spec.service and value != spec.service:
                raise ConfigError(
                    key, value, f"target {target.label} runs on service {spec.service!r}"
                )
            continue
        if any(key == p or key.startswith(p + ".") or p.startswith(key + ".") for p in owned):
            raise ConfigError(
                key,
                o.split("=", 1)[1] if "=" in o else None,
                f"set by target {target.label}; register a new target version to change it",
            )
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.set_struct(out, False)
    if spec.service and spec.service != OmegaConf.select(out, "service.name"):
        recipe = conf_dir() / "service" / f"{spec.service}.yaml"
        if not recipe.is_file():
            have = ", ".join(sorted(p.stem for p in recipe.parent.glob("*.yaml")))
            raise ConfigError(
                "target", ref, f"its spec names service {spec.service!r}; allowed: {have}"
            )
        out.service = OmegaConf.load(recipe)
    out = OmegaConf.merge(out, OmegaConf.create(spec.config))
    out.target = target.label
    return out, target


# -- registering ---------------------------------------------------------------------
def register(
    name: str,
    spec_text: str,
    uri: str | None = None,
    *,
    from_run: str | None = None,
    description: str | None = None,
    tags: dict[str, str] | None = None,
    aliases: tuple[str, ...] = (),
    client=None,
) -> ResolvedTarget:
    """Register a new version of target ``name`` whose source is ``spec_text``'s artifact.

    The spec is logged as ``target/spec.yaml`` to ``from_run`` (a run it was derived
    from) or to a new run in the ``benchflow-targets`` experiment.
    """
    import tempfile

    from mlflow.exceptions import MlflowException

    from benchflow import tracking

    parse_ref(f"{name}/1")  # the name must be usable in references
    spec = parse_spec(spec_text, name)
    c = client or _client(uri)
    if from_run:
        run_id = from_run
        run = c.get_run(run_id)
    else:
        exp = tracking.ensure_experiment(c, TARGETS_EXPERIMENT)
        run = c.create_run(
            exp,
            tags={"benchflow.role": "target-registration", "benchflow.target_name": name},
            run_name=f"register {name}",
        )
        run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / SPEC_FILE).write_text(spec_text)
        c.log_artifact(run_id, str(Path(tmp) / SPEC_FILE), SPEC_DIR)
    if not from_run:
        c.set_terminated(run_id, "FINISHED")
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(
            name, tags={KIND_TAG: "target"}, description=description or spec.description or None
        )
    vtags = {**spec.describe(), **(tags or {})}
    vtags["benchflow.spec_sha256"] = hashlib.sha256(spec_text.encode()).hexdigest()
    vtags["benchflow.stage"] = "none"
    if from_run:
        vtags["benchflow.from_run"] = from_run
    source = f"{run.info.artifact_uri.rstrip('/')}/{SPEC_DIR}/{SPEC_FILE}"
    mv = c.create_model_version(
        name, source=source, run_id=run_id, tags=vtags, description=spec.description or None
    )
    version = str(mv.version)  # int from sqlite, str over REST
    for a in aliases:
        set_alias(name, a, version, client=c)
    return resolve(TargetRef(name, version=version), client=c)


def spec_from_run(run_id: str, uri: str | None = None, client=None) -> str:
    """A spec (YAML) made from a trial run's effective config: its service block."""
    import mlflow.artifacts

    c = client or _client(uri)
    run = c.get_run(run_id)
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="effective_config.yaml", tracking_uri=c.tracking_uri
        )
        cfg = yaml.safe_load(Path(path).read_text()) or {}
    except Exception as exc:
        raise TargetError(
            f"run {run_id} has no effective_config.yaml artifact ({_mlflow_error(exc)}); "
            "is it a benchflow trial run?"
        ) from None
    # Secrets were redacted in the run's files; leave them out so the recipe's own
    # (environment-provided) values apply instead of the placeholder.
    service = _without_redacted(cfg.get("service") or {})
    spec = {
        "description": f"from run {run_id} ({run.info.run_name})",
        "service": service.get("name"),
        "config": {"service": service},
    }
    return yaml.safe_dump(spec, sort_keys=False)


def _without_redacted(tree: Any) -> Any:
    from benchflow.secrets import REDACTED

    if isinstance(tree, dict):
        return {k: _without_redacted(v) for k, v in tree.items() if v != REDACTED}
    return tree


def set_alias(name: str, alias: str, version: str, uri: str | None = None, client=None) -> None:
    """Point ``alias`` at ``version``; the stage tag follows (champion = production)."""
    c = client or _client(uri)
    c.get_model_version(name, str(version))  # raises when missing
    c.set_registered_model_alias(name, alias, str(version))
    stage = {v: k for k, v in STAGES.items()}.get(alias)
    if stage:
        c.set_model_version_tag(name, str(version), "benchflow.stage", stage)


def delete_alias(name: str, alias: str, uri: str | None = None, client=None) -> None:
    c = client or _client(uri)
    c.delete_registered_model_alias(name, alias)


def archive(name: str, version: str, uri: str | None = None, client=None) -> None:
    """Stage Archived: remove every alias of the version and tag it archived."""
    c = client or _client(uri)
    rm = c.get_registered_model(name)
    for a, v in (rm.aliases or {}).items():
        if str(v) == str(version):
            c.delete_registered_model_alias(name, a)
    c.set_model_version_tag(name, str(version), "benchflow.stage", "archived")


# -- listing -------------------------------------------------------------------------
@dataclass
class TargetSummary:
    name: str
    description: str
    aliases: dict[str, str]
    versions: list[dict[str, Any]]  # version, stage, tags, aliases, created
    benchmarks: dict[str, dict[str, int]]  # scenario/experiment -> {version: runs}


def runs_of(c, labels: list[str] | None = None, name: str | None = None, extra: str = ""):
    """Trial runs recorded for targets (``benchflow.target`` tag), across all experiments.

    ``labels`` are ``NAME/VERSION`` values; ``name`` every version of one target.
    """
    if labels:
        # MLflow's filter grammar has no OR: one search per label.
        return [r for lb in labels for r in _search_all(c, _eq("benchflow.target", lb), extra)]
    if name:
        return _search_all(c, f"tags.`benchflow.target` LIKE '{name}/%'", extra)
    return _search_all(c, "tags.`benchflow.target` LIKE '%/%'", extra)


def _eq(tag: str, value: str) -> str:
    return f"tags.`{tag}` = '{value}'"


def _search_all(c, flt: str, extra: str = "") -> list:
    exps = [e.experiment_id for e in c.search_experiments()]
    if not exps:
        return []
    if extra:
        flt = f"{flt} AND {extra}"
    out, token = [], None
    while True:
        page = c.search_runs(exps, filter_string=flt, max_results=1000, page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return out


def list_targets(
    uri: str | None = None,
    *,
    name: str | None = None,
    tags: dict[str, str] | None = None,
    metric: str | None = None,
    client=None,
) -> list[TargetSummary]:
    """Registered targets with their versions and the benchmarks they have results for.

    ``name`` is a substring (SQL LIKE), ``tags`` filter on the registered model's or
    a version's tags, ``metric`` (e.g. ``throughput > 1000``) keeps targets with at
    least one run satisfying it (an MLflow run filter on ``metrics.``).
    """
    c = client or _client(uri)
    flt = f"name LIKE '%{name}%'" if name else None
    models = _search_models(c, flt)
    metric_filter = _metric_filter(metric) if metric else ""
    out = []
    for rm in sorted(models, key=lambda m: m.name):
        versions = sorted(_versions(c, rm.name), key=lambda v: int(v.version))
        aliases = {a: str(v) for a, v in (rm.aliases or {}).items()}
        if tags and not all(
            (rm.tags or {}).get(k) == v or any((mv.tags or {}).get(k) == v for mv in versions)
            for k, v in tags.items()
        ):
            continue
        runs = runs_of(c, name=rm.name, extra=metric_filter)
        if metric and not runs:
            continue
        bench: dict[str, dict[str, int]] = {}
        for r in runs:
            if "benchflow.trial_id" not in r.data.tags:
                continue
            scen = r.data.tags.get("benchflow.scenario", "?")
            ver = r.data.tags["benchflow.target"].split("/")[-1]
            bench.setdefault(scen, {}).setdefault(ver, 0)
            bench[scen][ver] += 1
        out.append(
            TargetSummary(
                name=rm.name,
                description=rm.description or "",
                aliases=aliases,
                versions=[
                    {
                        "version": str(v.version),
                        "aliases": sorted(a for a, x in aliases.items() if x == str(v.version)),
                        "stage": (v.tags or {}).get("benchflow.stage", "none"),
                        "tags": {
                            k: val
                            for k, val in (v.tags or {}).items()
                            if not k.startswith("benchflow.")
                        },
                        "created": time.strftime(
                            "%Y-%m-%d %H:%M", time.localtime(v.creation_timestamp / 1000)
                        ),
                        "promotion": (v.tags or {}).get("benchflow.promotion"),
                    }
                    for v in versions
                ],
                benchmarks=bench,
            )
        )
    return out


_METRIC_FILTER = re.compile(r"^\s*([A-Za-z0-9_./\-]+)\s*(<=|>=|!=|=|<|>)\s*(-?[0-9.eE+\-]+)\s*$")


def _metric_filter(expr: str) -> str:
    m = _METRIC_FILTER.match(expr)
    if not m:
        raise TargetError(
            f"--metric {expr!r}: expected NAME OP NUMBER, e.g. 'throughput > 1000' or "
            "'latency_ms.p99 < 5'"
        )
    key, op, num = m.groups()
    return f"metrics.`{key}` {op} {float(num)}"
