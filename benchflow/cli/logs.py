"""``benchflow logs SWEEP [--component X] [--since T]``: a sweep's logs in one tarball."""

from __future__ import annotations

from pathlib import Path

import click

from benchflow.cli.common import fail


@click.command(
    help="Pack a sweep's logs (harness, SUTs, jobs) as JSON lines into a tarball. SWEEP is a "
    "sweep id or directory. The tarball's events.jsonl merges everything in time order."
)
@click.argument("sweep")
@click.option("--results-dir", default="results", show_default=True, type=click.Path())
@click.option(
    "--component",
    "components",
    multiple=True,
    help="only this component and its children (repeatable): sut, sut.postgres, "
    "benchflow.trial, job, ...",
)
@click.option("--since", default=None, help="only records after: 30m, 2h, 7d, or an ISO time")
@click.option(
    "-o", "--output", default=None, help="the tarball (default: logs-SWEEP_ID.tar.gz here)"
)
def logs(
    sweep: str,
    results_dir: str,
    components: tuple[str, ...],
    since: str | None,
    output: str | None,
) -> None:
    from benchflow.sweeps.log_bundle import bundle, parse_since
    from benchflow.sweeps.slurm.status import find_sweep

    try:
        sweep_dir = find_sweep(sweep, Path(results_dir))
    except FileNotFoundError as exc:
        fail(str(exc))
    try:
        since_t = parse_since(since) if since else None
    except ValueError as exc:
        fail(str(exc))
    out = Path(output or f"logs-{sweep_dir.name}.tar.gz")
    b = bundle(sweep_dir, out, components, since_t)
    parts = ", ".join(f"{c} {n}" for c, n in sorted(b.by_component.items()))
    click.echo(
        f"{b.path}: {b.records} records from {b.files} files of {b.trials} trials"
        + (f" ({parts})" if parts else "")
    )
