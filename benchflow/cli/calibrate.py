"""``benchflow calibrate``: an A/A experiment that measures this machine's noise."""

from __future__ import annotations

import json
from pathlib import Path

import click

from benchflow.cli.common import fail, tracking_option


@click.command(
    help="Run an A/A experiment on this machine (or, with Slurm launcher overrides, on a "
    "partition): one configuration, 2×PAIRS interleaved runs read as PAIRS identical "
    "pairs. Reports the false-positive rate of `benchflow compare`, the run-to-run noise "
    "per metric and the minimal detectable effect for 3, 5 and 10 repetitions, and logs "
    "them to MLflow (experiment benchflow-calibrations) as the calibration of the host, "
    "which `compare` uses for sides run apart. OVERRIDES (after --) replace the default "
    "A/A: " + " ".join(("service=sleep", "service.service_ms=5", "concurrency=4", "duration_s=2"))
)
@click.option("--pairs", default=10, show_default=True, help="A/A pairs (2×PAIRS trials)")
@click.option(
    "--group",
    default=5,
    show_default=True,
    help="pairs per A/A comparison when counting false positives",
)
@click.option("--scenario", default="calibration", show_default=True, help="of the trials")
@click.option(
    "--sweep",
    default=None,
    help="read an A/A sweep already run (its id) instead of running one",
)
@click.option("--no-log", is_flag=True, help="report only; log nothing to MLflow")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="write it as JSON")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False), help="and as Markdown")
@click.argument("overrides", nargs=-1)
@tracking_option
def calibrate(pairs, group, scenario, sweep, no_log, json_out, md_out, overrides, tracking_uri):
    from benchflow import tracking
    from benchflow.analysis.calibration import calibrate as run_calibration
    from benchflow.analysis.compare import CompareError

    if pairs < 2:
        raise click.BadParameter(f"{pairs}: at least 2", param_hint="--pairs")
    if group < 2:
        raise click.BadParameter(f"{group}: at least 2", param_hint="--group")
    c = tracking.client(tracking_uri)
    if sweep is None:
        click.echo(f"running {2 * pairs} trials (an A/A of {pairs} interleaved pairs)…", err=True)
    try:
        result, run_id = run_calibration(
            c,
            pairs=pairs,
            overrides=overrides,
            scenario=scenario,
            tracking_uri=tracking_uri,
            sweep=sweep,
            group=group,
            log=not no_log,
        )
    except CompareError as exc:
        fail(str(exc))
    md = result.to_markdown()
    click.echo(md)
    if run_id:
        click.echo(f"logged as calibration run {run_id} (experiment benchflow-calibrations)")
    if json_out:
        Path(json_out).write_text(json.dumps({**result.to_dict(), "run_id": run_id}, indent=2))
    if md_out:
        Path(md_out).write_text(md)
