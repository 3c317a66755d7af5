"""``benchflow targets``: benchmark targets in the MLflow model registry."""

from __future__ import annotations

import json
from pathlib import Path

import click

from benchflow.cli.common import fail, tracking_option


@click.group(help="Benchmark targets (registered models whose versions are spec files).")
def targets() -> None:
    pass


def _tags(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for v in values:
        if "=" not in v:
            raise click.BadParameter(f"{v!r}: expected KEY=VALUE", param_hint=what)
        k, val = v.split("=", 1)
        out[k.strip()] = val.strip()
    return out


@targets.command(help="Register a new version of target NAME from a spec file or a trial run.")
@click.argument("name")
@click.option("--from", "spec_path", type=click.Path(dir_okay=False), help="spec YAML file")
@click.option("--from-run", "run_id", help="make the spec from a trial run's service config")
@click.option("--tag", "tag_values", multiple=True, help="KEY=VALUE tag on the version")
@click.option("--alias", "aliases", multiple=True, help="point these aliases at the new version")
@click.option("--description", default=None)
@tracking_option
def register(name, spec_path, run_id, tag_values, aliases, description, tracking_uri) -> None:
    from benchflow import registry

    if bool(spec_path) == bool(run_id):
        raise click.UsageError("give exactly one of --from SPEC.yaml or --from-run RUN_ID")
    tags = _tags(tag_values, "--tag")
    try:
        if spec_path:
            p = Path(spec_path)
            if not p.is_file():
                raise click.BadParameter(f"{spec_path!r} is not a file", param_hint="--from")
            text = p.read_text()
        else:
            text = registry.spec_from_run(run_id, tracking_uri)
        t = registry.register(
            name,
            text,
            tracking_uri,
            from_run=run_id,
            description=description,
            tags=tags,
            aliases=aliases,
        )
    except registry.TargetError as exc:
        fail(str(exc))
    click.echo(
        f"registered {t.label}" + (f" (aliases: {', '.join(t.aliases)})" if t.aliases else "")
    )
    click.echo(f"  run it: python -m benchflow target={t.label}")


@targets.command("list", help="Targets, their versions and aliases, and the benchmarks they ran.")
@click.option("--name", default=None, help="substring of the target's name")
@click.option("--tag", "tag_values", multiple=True, help="KEY=VALUE (model or version tag)")
@click.option(
    "--metric", default=None, help="keep targets with a run where e.g. 'throughput > 100'"
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@tracking_option
def list_(name, tag_values, metric, as_json, tracking_uri) -> None:
    from rich.table import Table

    from benchflow import registry

    try:
        found = registry.list_targets(
            tracking_uri, name=name, tags=_tags(tag_values, "--tag"), metric=metric
        )
    except registry.TargetError as exc:
        fail(str(exc))
    if as_json:
        click.echo(json.dumps([t.__dict__ for t in found], indent=2))
        return
    if not found:
        click.echo(
            "no targets match" if (name or tag_values or metric) else "no targets registered"
        )
        return
    table = Table(title="benchmark targets")
    for col in ("target", "version", "aliases", "stage", "tags", "benchmarks (runs)"):
        table.add_column(col, overflow="fold")
    for t in found:
        for v in t.versions:
            bench = ", ".join(
                f"{scen} ({runs[v['version']]})"
                for scen, runs in sorted(t.benchmarks.items())
                if v["version"] in runs
            )
            table.add_row(
                t.name,
                v["version"],
                ", ".join(v["aliases"]),
                v["stage"],
                " ".join(f"{k}={val}" for k, val in sorted(v["tags"].items())),
                bench or "-",
            )
    _console().print(table)


@targets.command(help="One target version (NAME@ALIAS or NAME/VERSION): tags, aliases and spec.")
@click.argument("ref")
@tracking_option
def show(ref, tracking_uri) -> None:
    from benchflow import registry

    if "@" not in ref and "/" not in ref:
        found = registry.list_targets(tracking_uri, name=ref)
        exact = [t for t in found if t.name == ref]
        if not exact:
            fail(f"no registered target {ref!r}")
        t = exact[0]
        click.echo(f"{t.name}: {t.description}")
        click.echo("aliases: " + (", ".join(f"@{a} -> {v}" for a, v in t.aliases.items()) or "-"))
        for v in t.versions:
            click.echo(f"  version {v['version']} [{v['stage']}] {' '.join(v['aliases'])}")
        return
    try:
        t = registry.resolve(ref, tracking_uri)
    except registry.TargetError as exc:
        fail(str(exc))
    click.echo(f"{t.label}  (asked: {t.ref})")
    click.echo(f"aliases: {', '.join(t.aliases) or '-'}")
    click.echo(f"source: {t.source}")
    for k, v in sorted(t.tags.items()):
        click.echo(f"tag {k} = {v}")
    click.echo("keys it sets: " + ", ".join(t.spec.keys()))
    click.echo("--- spec ---")
    import yaml

    click.echo(yaml.safe_dump(t.spec.model_dump(exclude_defaults=True), sort_keys=False).rstrip())


@targets.command(help="Point ALIAS of target NAME at VERSION (or --delete it).")
@click.argument("name")
@click.argument("alias")
@click.option("--version", "version", default=None)
@click.option("--delete", is_flag=True, help="remove the alias")
@tracking_option
def alias(name, alias, version, delete, tracking_uri) -> None:
    from mlflow.exceptions import MlflowException

    from benchflow import registry

    try:
        if delete:
            registry.delete_alias(name, alias, tracking_uri)
            click.echo(f"removed @{alias} from {name}")
            return
        if version is None:
            raise click.UsageError("give --version V (or --delete)")
        registry.set_alias(name, alias, version, tracking_uri)
    except MlflowException as exc:
        fail(f"{name}@{alias}: {str(exc).splitlines()[0]}")
    click.echo(f"{name}@{alias} -> {version}")


@targets.command(help="Stage Archived: remove every alias of NAME/VERSION and tag it archived.")
@click.argument("name")
@click.option("--version", "version", required=True)
@tracking_option
def archive(name, version, tracking_uri) -> None:
    from mlflow.exceptions import MlflowException

    from benchflow import registry

    try:
        registry.archive(name, version, tracking_uri)
    except MlflowException as exc:
        fail(f"{name}/{version}: {str(exc).splitlines()[0]}")
    click.echo(f"{name}/{version} archived")


def _console():
    from rich.console import Console

    c = Console()
    if not c.is_terminal:
        c.width = 160
    return c
