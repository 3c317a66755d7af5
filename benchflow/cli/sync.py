from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command(
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
        f"running {len(report.running)}, busy {len(report.busy)}, "
        f"incomplete {len(report.incomplete)}, "
        f"corrupt {len(report.corrupt)}, failed {len(report.failed)}"
    )
    for name in report.busy:
        click.echo(f"  busy (another process is uploading it; run sync again later): {name}")
    for name in report.incomplete:
        click.echo(f"  incomplete (the trial process died; uploaded as KILLED): {name}")
    for name, why in report.corrupt:
        click.echo(f"  corrupt, skipped: {name}: {why}")
    for name, why in report.failed:
        click.echo(f"  failed: {name}: {why}", err=True)
    if not report.ok:
        sys.exit(1)
