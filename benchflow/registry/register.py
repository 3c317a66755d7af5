"""Writing to the registry: registering a target version (from a spec file or a
run), setting and deleting aliases, archiving.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from benchflow.registry.lookup import mlflow_client, resolve
from benchflow.registry.specs import (
    KIND_TAG,
    SPEC_DIR,
    SPEC_FILE,
    STAGES,
    TARGETS_EXPERIMENT,
    ResolvedTarget,
    TargetError,
    TargetRef,
    mlflow_error,
    parse_ref,
    parse_spec,
)


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
    c = client or mlflow_client(uri)
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

    c = client or mlflow_client(uri)
    run = c.get_run(run_id)
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="effective_config.yaml", tracking_uri=c.tracking_uri
        )
        cfg = yaml.safe_load(Path(path).read_text()) or {}
    except Exception as exc:
        raise TargetError(
            f"run {run_id} has no effective_config.yaml artifact ({mlflow_error(exc)}); "
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
    c = client or mlflow_client(uri)
    c.get_model_version(name, str(version))  # raises when missing
    c.set_registered_model_alias(name, alias, str(version))
    stage = {v: k for k, v in STAGES.items()}.get(alias)
    if stage:
        c.set_model_version_tag(name, str(version), "benchflow.stage", stage)


def delete_alias(name: str, alias: str, uri: str | None = None, client=None) -> None:
    c = client or mlflow_client(uri)
    c.delete_registered_model_alias(name, alias)


def archive(name: str, version: str, uri: str | None = None, client=None) -> None:
    """Stage Archived: remove every alias of the version and tag it archived."""
    c = client or mlflow_client(uri)
    rm = c.get_registered_model(name)
    for a, v in (rm.aliases or {}).items():
        if str(v) == str(version):
            c.delete_registered_model_alias(name, a)
    c.set_model_version_tag(name, str(version), "benchflow.stage", "archived")
