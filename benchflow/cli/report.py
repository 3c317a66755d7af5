"""``benchflow report``: HTML + Markdown report of a sweep or an experiment."""

from __future__ import annotations

import click

from benchflow.cli.common import fail, tracking_option


@click.command(
    help="Write reports/<scenario>/report.html and report.md for SWEEP (a sweep id or its "
    "directory, e.g. results/S/_sweeps/ID) or --experiment NAME, and log them to the "
    "sweep's parent run (or a report run of the experiment)."
)
@click.argument("sweep", required=False)
@click.option("--experiment", default=None, help="every trial of this experiment")
@click.option("--results-dir", default="results", show_default=True, type=click.Path())
@click.option("--out", "out_dir", default="reports", show_default=True, type=click.Path())
@click.option("--no-log", is_flag=True, help="do not log the report to MLflow")
@tracking_option
def report(sweep, experiment, results_dir, out_dir, no_log, tracking_uri) -> None:
    from benchflow import tracking
    from benchflow.analysis.report import ReportError, build_report

    if bool(sweep) == bool(experiment):
        fail("give a SWEEP (id or directory) or --experiment NAME, not both")
    try:
        out = build_report(
            tracking.client(tracking_uri),
            sweep=sweep,
            experiment=experiment,
            results_dir=results_dir,
            out_dir=out_dir,
            log=not no_log,
        )
    except ReportError as exc:
        fail(str(exc))
    click.echo(f"report of {out.trials} trials in {out.seconds:.1f} s:")
    click.echo(f"  {out.html}")
    click.echo(f"  {out.markdown} (+ {len(out.figures)} figures)")
    if out.logged_to:
        click.echo(f"  logged to MLflow run {out.logged_to} (artifacts: report/)")
