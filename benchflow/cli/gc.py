"""``benchflow gc --older-than 90d``: prune local results and logs already in MLflow."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from benchflow.cli.common import fail


def _age(seconds: float) -> str:
    return f"{seconds / 86400:.1f} d" if seconds >= 86400 else f"{seconds / 3600:.1f} h"


@click.command(
    help="Prune trial directories (files and logs), sweep and run directories older than "
    "--older-than that are already in MLflow; never one that is not. A DRY RUN unless "
    "--delete is given."
)
@click.option("--older-than", required=True, help="age to prune from: 90d, 12h, 2w, ...")
@click.option("--results-dir", default="results", show_default=True, type=click.Path())
@click.option("--delete", is_flag=True, help="really delete (default: only list)")
@click.option(
    "--no-verify",
    is_flag=True,
    help="trust upload.json without asking MLflow whether the run is there",
)
@click.option(
    "--tracking-uri",
    default=None,
    help="verify against this server instead of the one each trial names",
)
@click.option(
    "--textfile-dir",
    default=None,
    envvar="BENCHFLOW_TEXTFILE_DIR",
    help="also prune old Prometheus textfiles here (monitor.textfile_dir)",
)
@click.option("-v", "--verbose", is_flag=True, help="list every kept directory and why")
def gc(
    older_than: str,
    results_dir: str,
    delete: bool,
    no_verify: bool,
    tracking_uri: str | None,
    textfile_dir: str | None,
    verbose: bool,
) -> None:
    from benchflow.sweeps import retention

    try:
        p = retention.plan(
            Path(results_dir),
            older_than,
            verify=not no_verify,
            tracking_uri=tracking_uri,
            textfile_dir=Path(textfile_dir) if textfile_dir else None,
        )
    except ValueError as exc:
        fail(f"--older-than {exc}")
    verb = "deleted" if delete else "would delete"
    for item in p.delete:
        click.echo(f"  {verb} {item.kind} {item.path} ({_age(item.age_s)} old)")
    kept_why = Counter(item.why.split(":")[0] for item in p.keep)
    # most frequent first, then by name: the same summary for the same results
    why = sorted(kept_why.items(), key=lambda x: (-x[1], x[0]))
    for item in p.keep:
        if verbose:
            click.echo(f"  kept {item.kind} {item.path}: {item.why}")
    if delete:
        retention.apply(p)
    click.echo(
        f"{verb} {len(p.delete)} ({sum(i.kind == 'trial' for i in p.delete)} trials), "
        f"kept {len(p.keep)} older than {older_than}"
        + (" — " + "; ".join(f"{n} {w}" for w, n in why) if kept_why else "")
        + ("" if delete else " [dry run: add --delete]")
    )
