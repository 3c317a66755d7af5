"""``benchflow status [SWEEP]``: each trial pending, running, done, failed or invalid."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command(
    help="Where a sweep stands, from Slurm and MLflow together: each job's Slurm state and its "
    "trials pending/running/done/failed/invalid. SWEEP is a sweep id or directory; without "
    "it, the recent sweeps."
)
@click.argument("sweep", required=False)
@click.option("--results-dir", default="results", show_default=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status(sweep: str | None, results_dir: str, as_json: bool) -> None:
    from benchflow.sweeps.slurm.status import STATES, find_sweep, recent_sweeps, sweep_status

    root = Path(results_dir)
    if sweep:
        try:
            dirs = [find_sweep(sweep, root)]
        except FileNotFoundError as exc:
            click.echo(f"benchflow: {exc}", err=True)
            sys.exit(2)
    else:
        dirs = recent_sweeps(root)
        if not dirs:
            click.echo(f"no sweeps under {root}")
            return
    statuses = [sweep_status(d) for d in dirs]
    if as_json:
        import json

        click.echo(
            json.dumps(
                [
                    {
                        "sweep": str(s.sweep_dir),
                        "stopped": s.stopped,
                        "totals": s.totals,
                        "jobs": [
                            {
                                "num": j.num,
                                "slurm_job": j.slurm_job,
                                "slurm_state": j.slurm_state,
                                "trials": j.trials,
                                "note": j.note,
                            }
                            for j in s.jobs
                        ],
                    }
                    for s in statuses
                ],
                indent=2,
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console.width = 160
    for s in statuses:
        t = s.totals
        line = ", ".join(f"{t[k]} {k}" for k in STATES)
        title = f"sweep {s.sweep_dir.name}: {line}" + (" (stopped)" if s.stopped else "")
        if not sweep:
            console.print(title)
            continue
        table = Table(title=title)
        for col in ("job", "slurm job", "slurm state", *STATES, "note"):
            table.add_column(col, overflow="fold")
        for j in s.jobs:
            table.add_row(
                str(j.num),
                j.slurm_job or "",
                j.slurm_state or "",
                *(str(j.trials[k]) for k in STATES),
                j.note or "",
            )
        console.print(table)
