"""Resolving a target reference (``NAME@ALIAS``, ``NAME/VERSION``) in the MLflow
model registry to a version and its spec.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from benchflow.registry.specs import (
    KIND_TAG,
    SPEC_FILE,
    ResolvedTarget,
    TargetError,
    TargetRef,
    mlflow_error,
    parse_ref,
    parse_spec,
)


# -- the registry client -----------------------------------------------------------
def mlflow_client(uri: str | None = None):
    from benchflow import tracking

    return tracking.client(uri)


def resolve(ref: str | TargetRef, uri: str | None = None, client=None) -> ResolvedTarget:
    """The version a reference points at, with its spec; raises :class:`TargetError`."""
    from mlflow.exceptions import MlflowException

    r = parse_ref(ref) if isinstance(ref, str) else ref
    c = client or mlflow_client(uri)
    try:
        rm = c.get_registered_model(r.name)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
            raise TargetError(f"target {r}: registry error: {mlflow_error(exc)}") from None
        known = ", ".join(sorted(m.name for m in search_models(c))) or "(none registered)"
        raise TargetError(f"target {r}: no registered target {r.name!r}; known: {known}") from None
    except Exception as exc:  # connection refused, timeout: the registry cannot be reached
        raise TargetError(
            f"target {r}: cannot reach the registry at {c.tracking_uri}: {mlflow_error(exc)}"
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
        versions = ", ".join(sorted((str(v.version) for v in model_versions(c, r.name)), key=int))
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
        raise TargetError(f"cannot read the spec at {source}: {mlflow_error(exc)}") from None
    p = Path(path)
    return (p / SPEC_FILE if p.is_dir() else p).read_text()


def search_models(c, filter_string: str | None = None) -> list:
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


def model_versions(c, name: str) -> list:
    return list(c.search_model_versions(f"name = '{name}'"))
