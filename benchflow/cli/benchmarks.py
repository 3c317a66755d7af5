"""``benchflow benchmarks``: the benchmark catalogue in MLflow (benchflow/catalogue.py).

benchflow benchmarks [list]                      registered benchmarks + targets with results
benchflow benchmarks register NAME -s SERVICE [OVERRIDES…]
benchflow benchmarks show NAME                   definition, results per target, how to run it
benchflow benchmarks run NAME [-cd DIR] [OVERRIDES…]
benchflow benchmarks deprecate NAME --reason TEXT
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import click

from benchflow.config import EXIT_CONFIG

_uri = click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default=None,
    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else MLflow's default store)",
)
_cat = click.option(
    "--catalogue",
    default=None,
    help="the MLflow experiment holding the catalogue "
    "(default: $BENCHFLOW_CATALOGUE or benchflow-benchmarks)",
)


def _client(uri):
    from benchflow.tracking import client

    return client(uri)


def _refuse(message: str) -> None:
    click.echo(f"benchflow: {message}", err=True)
    raise SystemExit(EXIT_CONFIG)


@click.group(
    invoke_without_command=True,
    help="Registered benchmarks (in MLflow, shared by every team) and the targets measured "
    "on each. Without a subcommand: list. Installed experiments: `benchflow drivers`.",
)
@click.pass_context
def benchmarks(ctx: click.Context) -> None:
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_)


@benchmarks.command(
    "list", help="The registered benchmarks, their experiments, and targets with results."
)
@_uri
@_cat
@click.option("--all", "include_all", is_flag=True, help="superseded revisions too")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def list_(tracking_uri=None, catalogue=None, include_all=False, as_json=False) -> None:
    from benchflow.analysis import catalogue as cat

    name = cat.catalogue_name(catalogue)
    c = _client(tracking_uri)
    rows = []
    for b in cat.benchmarks(c, name, include_all):
        res = cat.results(c, b, name)
        rows.append({**b.model_dump(), **_installed(b), "results": [r.as_dict() for r in res]})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not rows:
        console.print(f"no benchmarks registered in MLflow experiment {name!r}")
        return
    table = Table(
        "benchmark", "kind", "experiment", "installed", "status", "workload", "targets with results"
    )
    for r in rows:
        table.add_row(
            f"{r['name']} r{r['revision']}",
            r["kind"],
            r["experiment"] + (f" {r['experiment_version']}" if r["experiment_version"] else ""),
            r["installed"] or "no",
            _status(r),
            "\n".join(f"{k}={v}" for k, v in r["workload"].items()) or "(built in)",
            "\n".join(_result_line(x) for x in r["results"]) or "none yet",
        )
    console.print(table)


def _installed(b) -> dict:
    from drivers import discovery

    if b.experiment not in discovery.names():
        return {"installed": None, "experiment_deprecated": False}
    try:
        info = discovery.info(b.experiment)
    except Exception as exc:  # a broken package must not hide the catalogue
        return {"installed": f"cannot load: {exc}", "experiment_deprecated": False}
    return {"installed": info.version, "experiment_deprecated": info.deprecated}


def _status(r: dict) -> str:
    out = []
    if r["deprecated"]:
        out.append(f"deprecated: {r['deprecated']}")
    if r.get("experiment_deprecated"):
        why = r["experiment_deprecated"]
        out.append("experiment deprecated" + (f": {why}" if isinstance(why, str) else ""))
    return "\n".join(out) or "active"


def _result_line(x: dict) -> str:
    when = datetime.fromtimestamp(x["last"], timezone.utc).strftime("%Y-%m-%d") if x["last"] else ""
    versions = f" (v{', v'.join(x['versions'])})" if x["versions"] else ""
    return f"{x['target']}: {x['runs']} runs, {x['valid']} valid{versions} {when}".rstrip()


@benchmarks.command(
    context_settings={"ignore_unknown_options": True},
    help="Register a benchmark: a service (its experiment) plus the overrides that fix its "
    "workload, e.g. `register intent-gen1k -s intent service.dataset=generated "
    "service.n_items=1000`. A fixed experiment is registered without overrides.",
)
@click.argument("name")
@click.option("-s", "--service", required=True, help="the service config (conf/service/NAME)")
@click.option("-cd", "--config-dir", default=None, help="an extra Hydra config directory")
@click.option("--description", default="", help="what it measures, for the catalogue")
@click.option("--experiment-version", default=None, help="PEP 440 specifier, e.g. '>=0.1,<0.2'")
@click.option("--replace", is_flag=True, help="register a new revision of a changed definition")
@click.argument("overrides", nargs=-1)
@_uri
@_cat
def register(
    name,
    service,
    config_dir,
    description,
    experiment_version,
    replace,
    overrides,
    tracking_uri,
    catalogue,
) -> None:
    from benchflow.analysis import catalogue as cat
    from benchflow.config import ConfigError

    try:
        bench = cat.define(
            name, service, list(overrides), config_dir, description, experiment_version
        )
        stored, status = cat.register(
            _client(tracking_uri), bench, cat.catalogue_name(catalogue), replace
        )
    except ConfigError as exc:
        _refuse(str(exc))
    except cat.CatalogueError as exc:
        _refuse(str(exc))
    words = {
        "created": "registered",
        "replaced": "registered a new revision of",
        "unchanged": "already registered, unchanged:",
    }
    click.echo(
        f"{words[status]} {stored.name} (revision {stored.revision}, {stored.kind} "
        f"benchmark of {stored.experiment}, {stored.registered_with}); MLflow run {stored.run_id}"
    )


@benchmarks.command(help="A benchmark's definition, the targets with results, and how to run it.")
@click.argument("name")
@_uri
@_cat
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def show(name, tracking_uri, catalogue, as_json) -> None:
    from benchflow.analysis import catalogue as cat

    cname = cat.catalogue_name(catalogue)
    c = _client(tracking_uri)
    try:
        b = cat.get(c, name, cname)
    except cat.CatalogueError as exc:
        _refuse(str(exc))
    res = [r.as_dict() for r in cat.results(c, b, cname)]
    doc = {**b.model_dump(), **_installed(b), "results": res, "run": _command(b, [])}
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"{b.name} (revision {b.revision}): {b.kind} benchmark of {b.experiment}")
    if b.description:
        click.echo(f"  {b.description}")
    click.echo(f"  registered with {b.registered_with}; installed here: {doc['installed'] or 'no'}")
    click.echo(f"  status: {_status(doc)}")
    click.echo("  workload:")
    for k, v in b.workload.items():
        click.echo(f"    {k} = {v}")
    click.echo("  targets with results:")
    for x in res or [{"target": "none yet", "runs": 0, "valid": 0, "versions": [], "last": 0}]:
        click.echo(f"    {_result_line(x)}")
    click.echo(f"  run: benchflow benchmarks run {b.name} [-cd DIR] target=NAME@ALIAS ...")


def _command(b, user: list[str], config_dir: str | None = None) -> list[str]:
    cd = ["-cd", config_dir] if config_dir else []
    # Hydra's flags (-m) before every override: argparse takes one run of positionals.
    flags = [o for o in user if o.startswith("-")]
    rest = [o for o in user if not o.startswith("-")]
    return [
        sys.executable,
        "-m",
        "benchflow",
        *flags,
        *cd,
        f"service={b.service}",
        *b.overrides,
        *rest,
    ]


@benchmarks.command(
    context_settings={"ignore_unknown_options": True},
    help="Run a registered benchmark: `python -m benchflow service=… WORKLOAD… OVERRIDES…`. "
    "Overrides may choose the target and execution (target=, service.target=, concurrency, "
    "limits, -m for sweeps) but not the workload.",
)
@click.argument("name")
@click.option("-cd", "--config-dir", default=None, help="where the service's config lives")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@_uri
@_cat
def run(name, config_dir, overrides, tracking_uri, catalogue) -> None:
    from benchflow.analysis import catalogue as cat

    c = _client(tracking_uri)
    try:
        b = cat.get(c, name, cat.catalogue_name(catalogue))
    except cat.CatalogueError as exc:
        _refuse(str(exc))
    fixed = set(b.workload) | {"service"}
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if "=" in o and key in fixed:
            value = b.workload.get(key, b.service)
            _refuse(f"{key}: part of benchmark {b.name}'s workload (= {value})")
    installed = _installed(b)
    if installed["installed"] is None:
        _refuse(f"{b.experiment}: not installed here (registered with {b.registered_with})")
    if b.experiment_version:
        from packaging.specifiers import SpecifierSet

        if installed["installed"] not in SpecifierSet(b.experiment_version):
            _refuse(
                f"{b.experiment} {installed['installed']} is installed; benchmark {b.name} "
                f"needs {b.experiment_version}"
            )
    if b.deprecated:
        click.echo(
            f"benchflow: warning: benchmark {b.name} is deprecated: {b.deprecated}", err=True
        )
    cmd = _command(b, list(overrides), config_dir)
    click.echo("$ python " + " ".join(cmd[1:]), err=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else None
    raise SystemExit(subprocess.call(cmd, env=env))


@benchmarks.command(help="Mark a registered benchmark deprecated (it stays listed).")
@click.argument("name")
@click.option("--reason", required=True, help="why, and what to use instead")
@_uri
@_cat
def deprecate(name, reason, tracking_uri, catalogue) -> None:
    from benchflow.analysis import catalogue as cat

    try:
        b = cat.deprecate(_client(tracking_uri), name, reason, cat.catalogue_name(catalogue))
    except cat.CatalogueError as exc:
        _refuse(str(exc))
    click.echo(f"deprecated {b.name} (revision {b.revision}): {reason}")
