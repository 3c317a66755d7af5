"""``benchflow report``: HTML + Markdown report of a sweep or an experiment."""

from __future__ import annotations

import click

from benchflow.cli.common import fail, tracking_option


@click.command(
    help="Write reports/<scenario>/report.html and report.md for SWEEP (a sweep id or its "
    "directory, e.g. results/S/_sweeps/ID; default: the latest sweep under --results-dir) "
    "or --experiment NAME, and log them to the sweep's parent run (or a report run of "
    "the experiment)."
)
@click.argument("sweep", required=False)
@click.option("--experiment", default=None, help="every trial of this experiment")
@click.option("--results-dir", default="results", show_default=True, type=click.Path())
@click.option("--out", "out_dir", default="reports", show_default=True, type=click.Path())
@click.option("--no-log", is_flag=True, help="do not log the report to MLflow")
@tracking_option
def report(sweep, experiment, results_dir, out_dir, no_log, tracking_uri) -> None:
    if sweep and experiment:
        fail(
            "give SWEEP or --experiment, not both "
            f"(given: SWEEP={sweep}, --experiment={experiment})"
        )
    if not sweep and not experiment:
        sweep = _latest_sweep(results_dir)
    from benchflow import tracking
    from benchflow.analysis.report import ReportError, build_report

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


def _latest_sweep(results_dir: str) -> str:
    """The newest sweep under ``results_dir``, said on the console."""
    import time

    from benchflow.analysis.report.latest import latest_sweep

    found = latest_sweep(results_dir)
    if found is None:
        fail(f"no sweep found under {results_dir.rstrip('/')}/; give SWEEP or --experiment NAME")
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(found.started_at))
    click.echo(f"the latest sweep: {found.path} (started {started}); give SWEEP for another")
    return found.ref
