"""``benchflow servers list|start|ps|check|stop``: SUTs running as Slurm jobs."""

from __future__ import annotations

import sys

import click

_STATE = click.option(
    "--state-dir",
    default=None,
    help="instance records (default: $BENCHFLOW_SERVERS_DIR or "
    "~/.benchflow/servers; must be shared with the compute nodes)",
)


@click.group(
    help="SUTs running as Slurm jobs, for client sweeps in server mode (service.server=ID)."
)
def servers() -> None:
    pass


@servers.command("list", help="The service recipes, their driver versions and images.")
def list_() -> None:
    from benchflow.sweeps.slurm.servers import recipes

    for r in recipes():
        kind = "server" if r["server"] else "in-process only"
        image = f"  image {r['image']}" if r["image"] else ""
        click.echo(f"{r['recipe']:<16} {r['version']:<32} {kind}{image}")


@servers.command(
    help="Start SERVICE as a Slurm job; prints its id and endpoint once ready.",
    context_settings={"ignore_unknown_options": True},
)
@click.argument("service")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--host", default=None, help="address to serve on and publish (default: the node's hostname)"
)
@click.option(
    "--timeout",
    "timeout_s",
    default=300.0,
    show_default=True,
    help="seconds to wait for readiness (the job is cancelled after)",
)
@_STATE
def start(service, overrides, host, timeout_s, state_dir) -> None:
    from benchflow.config import EXIT_CONFIG, ConfigError
    from benchflow.sut.endpoints import state_dir as servers_dir
    from benchflow.sweeps.slurm import servers as s

    try:
        inst = s.start(service, list(overrides), host, servers_dir(state_dir), timeout_s)
    except ConfigError as exc:
        click.echo(f"benchflow: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    if inst.state != "ready":
        click.echo(f"{inst.id}: FAILED: {inst.error}", err=True)
        sys.exit(1)
    click.echo(f"{inst.id} ready at {inst.endpoint} (Slurm job {inst.job_id} on {inst.node})")
    click.echo(f"  clients: python -m benchflow service={service} service.server={inst.id} ...")


@servers.command(help="Running server instances with their Slurm job ids and endpoints.")
@_STATE
def ps(state_dir) -> None:
    from benchflow.sut.endpoints import state_dir as servers_dir
    from benchflow.sweeps.slurm import servers as s

    rows = s.ps(servers_dir(state_dir))
    if not rows:
        click.echo("no servers")
    for inst, state in rows:
        click.echo(
            f"{inst.id:<20} job {inst.job_id:<8} {state:<10} {inst.state:<9} {inst.endpoint or '-'}"
        )


@servers.command(help="Exit 0 when server ID answers (HTTP 200 or TCP) within the timeout.")
@click.argument("server_id")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True)
@_STATE
def check(server_id, timeout_s, state_dir) -> None:
    from benchflow.sut.endpoints import state_dir as servers_dir
    from benchflow.sweeps.slurm import servers as s

    ok, msg = s.check(server_id, servers_dir(state_dir), timeout_s)
    click.echo(f"{server_id}: {'ready at ' if ok else ''}{msg}")
    sys.exit(0 if ok else 1)


@servers.command(help="Cancel server ID's job; it stops the server and removes its files.")
@click.argument("server_id")
@_STATE
def stop(server_id, state_dir) -> None:
    from benchflow.sut.endpoints import state_dir as servers_dir
    from benchflow.sweeps.slurm import servers as s

    if not s.stop(server_id, servers_dir(state_dir)):
        click.echo(f"no server {server_id}", err=True)
        sys.exit(1)
    click.echo(f"{server_id} stopped")
