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

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
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
        from benchflow.results.identity import flatten

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


def parse_spec(text: str, where: str) -> TargetSpec:
    """Parse and validate a spec; raises :class:`TargetError` naming the bad key."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise TargetError(f"spec of {where} is not YAML: {mlflow_error(exc)}") from None
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


def mlflow_error(exc: Exception) -> str:
    """The first line of an MLflow error, for a one-line message."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
