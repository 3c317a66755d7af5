"""``benchflow compare``: is the candidate really better than the baseline?"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from benchflow.cli.common import fail, tracking_option

EXIT_REGRESSION = 1


def stats_options(f):
    """Options shared by compare and promote."""
    for opt in reversed(
        [
            click.option(
                "--metric",
                "metrics",
                multiple=True,
                help="metric to compare (repeatable); default: throughput, p50, p99, "
                "error rate, quality.*, and the policy's primary and guards",
            ),
            click.option("--floor", default=0.02, show_default=True, help="effect-size floor"),
            click.option(
                "--alpha", default=0.05, show_default=True, help="FDR (Benjamini–Hochberg)"
            ),
            click.option("--min-repetitions", default=3, show_default=True),
            click.option(
                "--resamples", default=2000, show_default=True, help="bootstrap resamples"
            ),
            click.option(
                "--test",
                type=click.Choice(["welch", "mannwhitney"]),
                default="welch",
                show_default=True,
                help="the test whose p-values decide",
            ),
            click.option(
                "--ignore",
                multiple=True,
                help="config key (prefix) to leave out of matching, e.g. service.index.M",
            ),
            click.option("--experiment", default=None, help="only runs of this experiment"),
            click.option("--results-dir", default="results", show_default=True, type=click.Path()),
        ]
    ):
        f = opt(f)
    return f


def settings_from(floor, alpha, min_repetitions, resamples, test, block_cv=0.03):
    from benchflow.analysis.compare import Settings

    if not 0 <= block_cv < 1:
        raise click.BadParameter(f"{block_cv}: must be in [0, 1)", param_hint="--block-cv")
    if not 0 <= floor < 1:
        raise click.BadParameter(f"{floor}: must be in [0, 1)", param_hint="--floor")
    if not 0 < alpha < 1:
        raise click.BadParameter(f"{alpha}: must be in (0, 1)", param_hint="--alpha")
    if min_repetitions < 2:
        raise click.BadParameter(f"{min_repetitions}: at least 2", param_hint="--min-repetitions")
    return Settings(
        floor=floor,
        alpha=alpha,
        min_repetitions=min_repetitions,
        resamples=resamples,
        test=test,
        block_cv=block_cv,
    )


def print_table(cmp, guards: set[str] | None = None, primary: str | None = None) -> None:
    """The comparison as a rich table (verdicts coloured), then its caveats."""
    from rich.console import Console
    from rich.table import Table

    from benchflow.analysis.compare import (
        BETTER,
        NO_DATA,
        WORSE,
        fmt,
        fmt_ci,
        fmt_design,
        fmt_mde,
    )

    console = Console()
    if not console.is_terminal:
        console.width = 200
    t = Table(title=f"baseline {cmp.baseline}  vs  candidate {cmp.candidate}")
    cols = ["config", "metric", "design", "n b/c", "baseline", "candidate", "ratio"]
    cols += [f"{cmp.settings.confidence:.0%} CI", "p t", "p rank", "q", "MDE", "verdict", "note"]
    for c in cols:
        t.add_column(c, overflow="fold")
    style = {BETTER: "green", WORSE: "red", NO_DATA: "yellow"}
    for r in cmp.rows:
        mark = (
            " (primary)"
            if r.metric == primary
            else (" (guard)" if guards and r.metric in guards else "")
        )
        t.add_row(
            r.config,
            f"{r.metric} {'↑' if r.higher_is_better else '↓'}{mark}",
            fmt_design(r),
            f"{r.n_baseline}/{r.n_candidate}",
            fmt(r.median_baseline),
            fmt(r.median_candidate),
            fmt(r.ratio),
            fmt_ci(r),
            fmt(r.p_welch),
            fmt(r.p_mannwhitney),
            fmt(r.p_adjusted),
            fmt_mde(r.mde),
            f"[{style.get(r.verdict, '')}]{r.verdict}[/]" if r.verdict in style else r.verdict,
            r.note,
        )
    console.print(t)
    for line in cmp.caveats():
        console.print(line)


def run_comparison(
    baseline,
    candidate,
    tracking_uri,
    metrics,
    settings,
    ignore,
    experiment,
    results_dir,
    policy_metrics=(),
    calibration="auto",
):
    """Select both sides and compare; a user error ends with exit 2."""
    from benchflow import tracking
    from benchflow.analysis.compare import (
        Calibrations,
        CompareError,
        compare_selections,
        select,
    )

    c = tracking.client(tracking_uri)
    try:
        b = select(baseline, c, experiment)
        cand = select(candidate, c, experiment)
        wanted = list(metrics) or None
        if wanted is None and policy_metrics:
            from benchflow.analysis.compare import default_metrics

            wanted = list(dict.fromkeys([*default_metrics(b, cand), *policy_metrics]))
        cals = Calibrations(c, calibration)
        if calibration not in ("auto", "none"):
            try:
                c.get_run(calibration)
            except Exception:
                fail(f"--calibration {calibration}: no such run (auto, none or a run id)")
        cmp = compare_selections(
            b, cand, wanted, settings, ignore, Path(results_dir), calibrations=cals
        )
        return b, cand, cmp
    except CompareError as exc:
        fail(str(exc))


@click.command(
    help="Compare a candidate with a baseline, configuration by configuration. "
    "BASELINE and CANDIDATE are NAME@ALIAS, NAME/VERSION, run ids (comma-separated; a "
    "sweep's parent run means its trials), sweep ids or experiment names."
)
@click.option("--baseline", required=True)
@click.option("--candidate", required=True)
@stats_options
@click.option(
    "--calibration",
    default="auto",
    show_default=True,
    help="for sides run apart (blocked): auto (the latest calibration of the runs' host or "
    "partition, from `benchflow calibrate`), none, or a calibration run id",
)
@click.option(
    "--block-cv",
    default=0.03,
    show_default=True,
    help="sides run apart on a host without calibration: the between-block SD assumed (or "
    "the runs' own spread, when larger); no verdict below the minimal detectable effect it leaves",
)
@click.option(
    "--fail-on-regression",
    is_flag=True,
    help=f"exit {EXIT_REGRESSION} when the primary or a guard metric is significantly worse",
)
@click.option("--guard", "guards", multiple=True, help="guard metric (default: the service policy)")
@click.option("--primary", default=None, help="primary metric (default: the service policy)")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="write the table as JSON")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False), help="write it as Markdown")
@tracking_option
def compare(
    baseline,
    candidate,
    metrics,
    floor,
    alpha,
    min_repetitions,
    resamples,
    test,
    ignore,
    experiment,
    results_dir,
    calibration,
    block_cv,
    fail_on_regression,
    guards,
    primary,
    json_out,
    md_out,
    tracking_uri,
) -> None:
    from benchflow.analysis.compare import load_policy

    settings = settings_from(floor, alpha, min_repetitions, resamples, test, block_cv)
    from benchflow import tracking
    from benchflow.analysis.compare import CompareError, select

    try:
        b = select(baseline, tracking.client(tracking_uri), experiment)
    except CompareError as exc:
        fail(str(exc))
    service = b.runs[0].tags.get("benchflow.service")
    policy = load_policy(service, b.target.tags if b.target else None)
    prim = primary or policy.primary
    guard_set = set(guards or policy.guards)
    _, _, cmp = run_comparison(
        baseline,
        candidate,
        tracking_uri,
        metrics,
        settings,
        ignore,
        experiment,
        results_dir,
        policy_metrics=(prim, *sorted(guard_set)),
        calibration=calibration,
    )
    print_table(cmp, guard_set, prim)
    if json_out:
        Path(json_out).write_text(json.dumps(cmp.to_dict(), indent=2))
    if md_out:
        Path(md_out).write_text(cmp.to_markdown())
    if fail_on_regression:
        bad = cmp.regressions(guard_set | {prim})
        if bad:
            click.echo(
                f"regression: {len(bad)} row(s) significantly worse on "
                + ", ".join(sorted({r.metric for r in bad})),
                err=True,
            )
            sys.exit(EXIT_REGRESSION)
