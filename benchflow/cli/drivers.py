from __future__ import annotations

import json

import click


@click.command(help="List the installed drivers (entry-point group benchflow.drivers).")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def drivers(as_json: bool) -> None:
    from drivers import discovery

    infos = []
    for name in discovery.names():
        try:
            infos.append(discovery.info(name).__dict__)
        except Exception as exc:  # a broken third-party driver must not hide the others
            infos.append(
                {
                    "name": name,
                    "family": "?",
                    "description": f"cannot load: {exc}",
                    "deprecated": False,
                    "package": "?",
                    "version": "?",
                    "target": "?",
                }
            )
    if as_json:
        click.echo(json.dumps(infos, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "family", "package", "version", "deprecated", "description")
    for i in infos:
        table.add_row(
            i["name"],
            i["family"],
            i["package"],
            i["version"],
            "yes" if i["deprecated"] else "",
            i["description"],
        )
    Console().print(table)
