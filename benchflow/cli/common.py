"""What the registry, compare, promote and report commands share: the tracking option
and the way a user error ends (one line, exit code 2)."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

EXIT_USAGE = 2

tracking_option = click.option(
    "--tracking-uri",
    default=None,
    envvar="MLFLOW_TRACKING_URI",
    help="MLflow tracking (and registry) URI; default: MLflow's own (env or ./mlflow.db)",
)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``benchflow: MESSAGE`` on stderr and exit (2: bad input)."""
    click.echo(f"benchflow: {message}", err=True)
    sys.exit(code)
