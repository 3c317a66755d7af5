from __future__ import annotations

import json

import click


@click.command(
    help="List the installed drivers and benchmark experiments (entry-point group "
    "benchflow.drivers): package, version, deprecated flag. --schema NAME prints one's "
    "inputs and outputs."
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--schema", "schema_of", default=None, metavar="NAME", help="inputs/outputs of NAME")
def drivers(as_json: bool, schema_of: str | None) -> None:
    from drivers import discovery

    if schema_of:
        try:
            cls = discovery.load(schema_of)
        except KeyError as exc:
            raise click.UsageError(str(exc).strip("'\"")) from None
        info = discovery.info(schema_of)
        doc = {"package": info.package, "version": info.version, **cls.io_schema()}
        click.echo(json.dumps(doc, indent=2))
        return
    infos = []
    for name in discovery.names():
        try:
            d = dict(discovery.info(name).__dict__)
            d["target_fields"] = list(d["target_fields"])
            d["needs"] = _needs(discovery.load(name))
            infos.append(d)
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
                    "fixed": False,
                    "target_fields": [],
                    "needs": None,
                }
            )
    if as_json:
        click.echo(json.dumps(infos, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "family", "kind", "package", "version", "deprecated", "description")
    for i in infos:
        dep = i["deprecated"]
        table.add_row(
            i["name"],
            i["family"],
            "fixed" if i["fixed"] else "parameterised",
            i["package"],
            i["version"],
            dep if isinstance(dep, str) else ("yes" if dep else ""),
            i["description"],
        )
    Console().print(table)


def _needs(cls) -> dict | None:
    """The resources the driver's Settings declare by default (its needs)."""
    field = cls.Settings.model_fields.get("resources")
    default = field.get_default(call_default_factory=True) if field else None
    return default.model_dump() if default is not None else None
