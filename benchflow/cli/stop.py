"""``benchflow stop SWEEP``: cancel a sweep's Slurm jobs; nothing of it is retried after."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command(help="Cancel every Slurm job of a sweep (and stop its retries).")
@click.argument("sweep")
@click.option("--results-dir", default="results", show_default=True, type=click.Path())
def stop(sweep: str, results_dir: str) -> None:
    from benchflow.sweeps.slurm.status import find_sweep, stop_sweep

    try:
        d = find_sweep(sweep, Path(results_dir))
    except FileNotFoundError as exc:
        click.echo(f"benchflow: {exc}", err=True)
        sys.exit(2)
    ids = stop_sweep(d)
    click.echo(f"sweep {d.name}: stopped; cancelled {len(ids)} job(s) {' '.join(ids)}".rstrip())
