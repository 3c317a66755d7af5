"""``benchflow plan OVERRIDES…``: the jobs a sweep expands to, in the order it runs them,
their requests, the totals."""

from __future__ import annotations

import sys

import click


@click.command(
    help="Show what a sweep would run and request (as with -m): its jobs in the order it runs "
    "them (order=interleaved|random|blocked), each job's resources and the total GPU-hours "
    "and CPU-hours against the budget. Nothing is submitted.",
    context_settings={"ignore_unknown_options": True},
)
@click.option("--config-dir", default=None, help="an extra config directory (as -cd)")
@click.option(
    "--approve-as",
    default=None,
    metavar="NAME",
    help="record an administrator's approval of this sweep in budget.approvals_dir",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def plan(config_dir: str | None, approve_as: str | None, as_json: bool, overrides) -> None:
    from benchflow.config import EXIT_CONFIG, ConfigError
    from benchflow.config.search import quote_slo_overrides
    from benchflow.sweeps.slurm.plan import ORDER_TEXT, approval, make_plan, record_approval

    # as `python -m benchflow` reads them: search.slo=[latency_ms.p99<=50] needs quotes
    overrides = quote_slo_overrides([o for o in overrides if o not in ("-m", "--multirun")])
    try:
        p = make_plan(list(overrides), True, config_dir)
        path = record_approval(p, approve_as, list(overrides)) if approve_as else None
    except ConfigError as exc:
        click.echo(f"benchflow: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    over = p.over_budget()
    approved = approval(p)
    placement = p.placement()
    if as_json:
        import json

        click.echo(
            json.dumps(
                {
                    "fingerprint": p.fingerprint,
                    "launcher": p.launcher,
                    "slurm": p.on_slurm,
                    "trials": p.trials,
                    "configurations": len(p.configs or p.jobs),
                    "order": p.order,
                    "trial_order": [list(t) for t in p.trial_order],
                    "gpu_hours": p.gpu_hours,
                    "cpu_hours": p.cpu_hours,
                    "budget": p.budget.model_dump(),
                    "over_budget": over,
                    "approved_by": approved and approved["approved_by"],
                    "jobs": [
                        {
                            "num": j.num,
                            "overrides": list(j.overrides),
                            "service": j.spec.service.name,
                            "repetitions": j.spec.cfg.repetitions,
                            "runs_repetitions": j.repetitions,
                            "request": j.request.as_dict(),
                            "eligible_nodes": None
                            if placement is None
                            else placement[(j.spec.service.name, j.request)],
                            "gpu_hours": j.request.gpu_hours,
                            "cpu_hours": j.request.cpu_hours,
                        }
                        for j in p.jobs
                    ],
                },
                indent=2,
            )
        )
        return
    _table(p)
    if placement is not None:
        _placement(placement)
    b = p.budget
    click.echo(
        f"order: {ORDER_TEXT.get(p.order, p.order)} "
        "(jobs start in this order; Slurm arrays are submitted in it)"
    )
    click.echo(
        f"total: {len(p.configs or p.jobs)} configuration(s), {len(p.jobs)} job(s), "
        f"{p.trials} trial(s), {p.gpu_hours:.4g} GPU-hours "
        f"(budget {b.gpu_hours:g}), {p.cpu_hours:.4g} CPU-hours (budget {b.cpu_hours:g})"
    )
    click.echo(f"sweep fingerprint: {p.fingerprint}")
    if path:
        click.echo(f"approval recorded by {approve_as}: {path}")
    if not p.on_slurm:
        click.echo("launcher: local (no budget applies; add hydra/launcher=slurm or site=NAME)")
    elif over and approved:
        click.echo(f"over budget ({'; '.join(over)}) but approved by {approved['approved_by']}")
    elif over:
        click.echo(f"OVER BUDGET: {'; '.join(over)}: submission needs approve=true or an approval")
    else:
        click.echo("within budget")


def _placement(placement) -> None:
    """Where each distinct request can run; a request no node offers is said loudly."""
    click.echo("placement (nodes that offer what a job asks):")
    for (service, req), nodes in placement.items():
        where = ", ".join(nodes) if nodes else "NO NODE of the partition offers this"
        click.echo(f"  {service}: {where}  [{req.describe()}]")


def _reps(j) -> str:
    """The repetitions a job runs: "2 of 0-4" in an interleaved sweep, "0-4" blocked."""
    reps, total = j.repetitions, j.spec.cfg.repetitions
    whole = f"0-{total - 1}" if total > 1 else "0"
    if len(reps) == total:
        return whole
    return f"{','.join(map(str, reps))} of {whole}"


def _table(p) -> None:
    from rich.console import Console
    from rich.table import Table

    split = [set(j.overrides) for j in p.jobs]
    common = set.intersection(*split) if split else set()
    t = Table(title=f"plan: {len(p.jobs)} job(s)")
    for col in (
        "job",
        "varies",
        "service",
        "rep",
        "nodes",
        "tasks",
        "cpus/task",
        "gpus/node",
        "mem GB",
        "time min",
        "GPU-h",
        "CPU-h",
    ):
        t.add_column(col, overflow="fold")
    for j in p.jobs:
        r = j.request
        t.add_row(
            str(j.num),
            " ".join(
                o for o in j.overrides if o not in common and not o.startswith("repetition_index=")
            ),
            j.spec.service.name,
            _reps(j),
            str(r.nodes),
            str(r.ntasks),
            str(r.cpus_per_task),
            str(r.gpus_per_node),
            f"{r.mem_gb:g}",
            str(r.time_min),
            f"{r.gpu_hours:.3g}",
            f"{r.cpu_hours:.3g}",
        )
    console = Console()
    if not console.is_terminal:
        console.width = 160
    console.print(t)
