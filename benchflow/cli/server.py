"""``benchflow server start|stop|status|run``: the team's MLflow tracking server."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from benchflow.cli.common import fail

_DIR = click.option(
    "--dir",
    "state_dir",
    default=None,
    envvar="BENCHFLOW_SERVER_DIR",
    help="state file, logs and local artifacts (default: $BENCHFLOW_SERVER_DIR or "
    "~/.benchflow/tracking-server)",
)


def _server_options(f):
    options = [
        _DIR,
        click.option(
            "--host",
            default="127.0.0.1",
            show_default=True,
            help="interface to serve on; 0.0.0.0 for clients on other nodes",
        ),
        click.option("--port", default=5000, show_default=True, type=int, help="0: any free port"),
        click.option(
            "--backend-store-uri",
            default=None,
            envvar="BENCHFLOW_SERVER_BACKEND_URI",
            help="postgresql://USER@HOST:PORT/DB (password in PGPASSWORD or ~/.pgpass; "
            "env BENCHFLOW_SERVER_BACKEND_URI)",
        ),
        click.option(
            "--embedded-db",
            is_flag=True,
            help="start a throwaway PostgreSQL with the server (laptop, CI); lost at stop",
        ),
        click.option(
            "--artifacts-destination",
            default=None,
            help="a directory or s3://BUCKET[/PREFIX] (MLFLOW_S3_ENDPOINT_URL and AWS keys "
            "from the environment); default DIR/artifacts",
        ),
        click.option(
            "--workers",
            default=0,
            type=int,
            help="server processes; default: one per core up to 4 with uvloop installed, "
            "else 1 (without uvloop each request costs ~45 ms with more)",
        ),
        click.option(
            "--auth",
            is_flag=True,
            help="logins (MLflow basic-auth app); users from the environment, "
            "see docs/operations.md",
        ),
        click.option(
            "--allowed-hosts",
            default=None,
            help="Host headers accepted (e.g. login01,login01:5000)",
        ),
        click.option(
            "--timeout",
            "ready_timeout_s",
            default=180.0,
            show_default=True,
            help="seconds to wait for readiness",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _config(**kw):
    from benchflow.tracking.server import ServerConfig, ServerError, default_dir

    kw["dir"] = Path(kw.pop("state_dir") or default_dir())
    try:
        return ServerConfig(**kw)
    except ServerError as exc:
        fail(str(exc))


def _args(cfg) -> list[str]:
    """The options of ``run`` that reproduce ``cfg`` (the database URI travels in the env)."""
    args = ["--dir", str(cfg.dir), "--host", cfg.host, "--port", str(cfg.port)]
    args += ["--workers", str(cfg.workers), "--timeout", str(cfg.ready_timeout_s)]
    if cfg.embedded_db:
        args.append("--embedded-db")
    if cfg.artifacts_destination:
        args += ["--artifacts-destination", cfg.artifacts_destination]
    if cfg.auth:
        args.append("--auth")
    if cfg.allowed_hosts:
        args += ["--allowed-hosts", cfg.allowed_hosts]
    return args


@click.group(help="The team's MLflow tracking server on PostgreSQL (docs/operations.md).")
def server() -> None:
    pass


@server.command(help="Start the server in the background; returns once it answers.")
@_server_options
def start(**kw) -> None:
    from benchflow.tracking.server import ServerError, start

    cfg = _config(**kw)
    if cfg.auth:
        _check_auth_env()
    try:
        state = start(cfg, _args(cfg))
    except ServerError as exc:
        fail(str(exc), 1)
    click.echo(f"MLflow tracking server ready: {state.url}")
    click.echo(f"  backend {state.backend}, artifacts {state.artifacts}")
    click.echo(f"  logs {state.logs_dir}; stop with: benchflow server stop --dir {cfg.dir}")
    click.echo(f"  export MLFLOW_TRACKING_URI={state.url}")
    click.echo("  python -m benchflow tracking=server ...")
    if state.users:
        click.echo(
            "  users: "
            + ", ".join(f"{n} ({r})" for n, r in sorted(state.users.items()))
            + "; clients log in with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
        )


@server.command(help="Run the server in the foreground (what `start` runs; for Slurm or systemd).")
@_server_options
def run(**kw) -> None:
    from benchflow.results.logs import process_logging
    from benchflow.tracking.server import ServerError, run

    cfg = _config(**kw)
    cfg.logs_dir.mkdir(parents=True, exist_ok=True)
    process_logging(cfg.logs_dir / "supervisor.jsonl")
    try:
        code = run(cfg)
    except ServerError as exc:
        fail(str(exc), 1)
    sys.exit(code)


@server.command(help="Stop the server started from --dir.")
@_DIR
@click.option("--timeout", "timeout_s", default=60.0, show_default=True)
def stop(state_dir: str | None, timeout_s: float) -> None:
    from benchflow.tracking.server import default_dir, stop

    d = Path(state_dir or default_dir())
    t0 = time.monotonic()
    state = stop(d, timeout_s)
    if state is None:
        click.echo(f"no tracking server running from {d}")
        return
    click.echo(f"stopped {state.url} in {time.monotonic() - t0:.1f} s")


@server.command(help="Is the server running and answering? Exit 0 yes, 3 not running, 1 unwell.")
@_DIR
@click.option("--json", "as_json", is_flag=True)
def status(state_dir: str | None, as_json: bool) -> None:
    from dataclasses import asdict

    from benchflow.tracking.server import EXIT_NOT_RUNNING, default_dir, status

    d = Path(state_dir or default_dir())
    state, ok = status(d)
    if as_json:
        click.echo(json.dumps({**(asdict(state) if state else {}), "healthy": ok}, indent=2))
    elif state is None:
        click.echo(f"no tracking server was started from {d}")
    else:
        up = ""
        if state.ready_at and state.status == "ready":
            up = f", up {(time.time() - state.ready_at) / 60:.1f} min"
        health = "healthy" if ok else "not answering"
        click.echo(f"{state.status} ({health}{up}): {state.url}")
        click.echo(f"  supervisor pid {state.pid}, mlflow pid {state.mlflow_pid}")
        click.echo(f"  backend {state.backend}{' (embedded)' if state.embedded_db else ''}")
        click.echo(f"  artifacts {state.artifacts}; logs {state.logs_dir}")
        if state.auth:
            click.echo("  logins: " + ", ".join(f"{n} ({r})" for n, r in state.users.items()))
        if state.error:
            click.echo(f"  error: {state.error}")
    if state is None or state.status in ("stopped", "failed", "dead"):
        sys.exit(EXIT_NOT_RUNNING)
    if not ok:
        sys.exit(1)


def _check_auth_env() -> None:
    from benchflow.tracking.auth import AuthConfigError, admin_from_env, users_from_env

    try:
        admin_from_env()
        users_from_env()
    except AuthConfigError as exc:
        fail(str(exc))
