"""``benchflow <command>``: the verbs besides running trials."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.group(help="benchflow's commands. Run trials with: python -m benchflow [-m] KEY=VALUE…")
def app() -> None:
    pass


@app.command(help="List the installed drivers (entry-point group benchflow.drivers).")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def drivers(as_json: bool) -> None:
    from drivers import discovery

    infos = []
    for name in discovery.names():
        try:
            infos.append(discovery.info(name).__dict__)
        except Exception as exc:  # a broken third-party driver must not hide the others
            infos.append(
                {
                    "name": name,
                    "family": "?",
                    "description": f"cannot load: {exc}",
                    "deprecated": False,
                    "package": "?",
                    "version": "?",
                    "target": "?",
                }
            )
    if as_json:
        click.echo(json.dumps(infos, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "family", "package", "version", "deprecated", "description")
    for i in infos:
        table.add_row(
            i["name"],
            i["family"],
            i["package"],
            i["version"],
            "yes" if i["deprecated"] else "",
            i["description"],
        )
    Console().print(table)


@app.command(
    help="Upload trials that are on disk but not (completely) in MLflow. "
    "Idempotent: a trial already uploaded is skipped."
)
@click.option("--results-dir", default="results", show_default=True, type=click.Path())
@click.option("--scenario", default=None, help="only this scenario")
@click.option(
    "--tracking-uri", default=None, help="upload here instead of where each trial was run against"
)
@click.option("--dry-run", is_flag=True, help="only say what would be uploaded")
def sync(results_dir: str, scenario: str | None, tracking_uri: str | None, dry_run: bool) -> None:
    from benchflow import tracking

    root = Path(results_dir)
    if not root.is_dir():
        raise click.UsageError(f"--results-dir {results_dir!r} is not a directory")
    report = tracking.sync(root, tracking_uri, scenario, dry_run)
    verb = "would upload" if dry_run else "uploaded"
    click.echo(
        f"{verb} {len(report.uploaded)}, already in MLflow {len(report.already)}, "
        f"running {len(report.running)}, incomplete {len(report.incomplete)}, "
        f"corrupt {len(report.corrupt)}, failed {len(report.failed)}"
    )
    for name in report.incomplete:
        click.echo(f"  incomplete (the trial process died; uploaded as KILLED): {name}")
    for name, why in report.corrupt:
        click.echo(f"  corrupt, skipped: {name}: {why}")
    for name, why in report.failed:
        click.echo(f"  failed: {name}: {why}", err=True)
    if not report.ok:
        sys.exit(1)


COMMANDS = set(app.commands)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--commands"]:
        argv = ["--help"]
    app.main(args=argv, prog_name="benchflow")
