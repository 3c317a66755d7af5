"""``benchflow promote``: move @champion only on significant evidence."""

from __future__ import annotations

import sys

import click

from benchflow.cli.common import fail, tracking_option
from benchflow.cli.compare import print_table, settings_from, stats_options

EXIT_REFUSED = 1


@click.command(
    help="Promote version VERSION of target NAME to @champion when it is significantly "
    "better than the current champion on the primary metric and not significantly worse "
    "on any guard (conf/promotion.yaml per service, or the target's benchflow.primary / "
    "benchflow.guards tags). Otherwise refuse and print the table. Either way the "
    "comparison is recorded as evidence."
)
@click.argument("name")
@click.option("--version", "version", required=True)
@click.option("--alias", default="champion", show_default=True, help="the alias to move")
@stats_options
@click.option("--primary", default=None, help="override the policy's primary metric")
@click.option("--guard", "guards", multiple=True, help="override the policy's guard metrics")
@tracking_option
def promote(
    name,
    version,
    alias,
    metrics,
    floor,
    alpha,
    min_repetitions,
    resamples,
    test,
    ignore,
    experiment,
    results_dir,
    primary,
    guards,
    tracking_uri,
) -> None:
    from benchflow import registry
    from benchflow.analysis import promotion
    from benchflow.analysis.compare import CompareError

    settings = settings_from(floor, alpha, min_repetitions, resamples, test)
    try:
        outcome = promotion.promote(
            name,
            str(version),
            alias=alias,
            uri=tracking_uri,
            settings=settings,
            metrics=list(metrics) or None,
            primary=primary,
            guards=tuple(guards) or None,
            ignore=tuple(ignore),
            experiment=experiment,
            results_dir=results_dir,
        )
    except (registry.TargetError, CompareError) as exc:
        fail(str(exc))
    if outcome.comparison is not None:
        print_table(outcome.comparison, set(outcome.policy.guards), outcome.policy.primary)
    for reason in outcome.decision.reasons:
        click.echo(f"  - {reason}")
    if outcome.decision.accepted:
        click.echo(f"promoted {name}/{version} to @{alias} (evidence: run {outcome.evidence_run})")
    else:
        click.echo(
            f"refused: {name}/{version} stays where it is; @{alias} unchanged "
            f"(evidence: run {outcome.evidence_run})",
            err=True,
        )
        sys.exit(EXIT_REFUSED)
