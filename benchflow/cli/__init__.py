"""``benchflow <command>``: the verbs besides running trials.

Each command lives in its own module of this package and is imported only when
it runs, so ``benchflow sync`` does not pay for the report's plotting stack.
To add one, write ``benchflow/cli/<name>.py`` with a click command or group and
add a line to :data:`COMMANDS`.
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute"
COMMANDS: dict[str, str] = {
    "benchmarks": "benchflow.cli.benchmarks:benchmarks",
    "drivers": "benchflow.cli.drivers:drivers",
    "sync": "benchflow.cli.sync:sync",
    "targets": "benchflow.cli.targets:targets",
    "compare": "benchflow.cli.compare:compare",
    "calibrate": "benchflow.cli.calibrate:calibrate",
    "promote": "benchflow.cli.promote:promote",
    "report": "benchflow.cli.report:report",
    "plan": "benchflow.cli.plan:plan",
    "status": "benchflow.cli.status:status",
    "stop": "benchflow.cli.stop:stop",
    "servers": "benchflow.cli.servers:servers",
    "server": "benchflow.cli.server:server",
    "logs": "benchflow.cli.logs:logs",
    "gc": "benchflow.cli.gc:gc",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(
    cls=_LazyGroup,
    help="benchflow's commands. Run trials with: python -m benchflow [-m] KEY=VALUE…",
)
def app() -> None:
    pass


def main(argv: list[str]) -> None:
    if argv[:1] == ["--commands"]:
        argv = ["--help"]
    app.main(args=argv, prog_name="benchflow")
