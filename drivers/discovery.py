"""Drivers are found through the entry-point group ``benchflow.drivers``.

A separate package adds one by declaring, in its own pyproject.toml::

    [project.entry-points."benchflow.drivers"]
    mydb = "mypkg.driver:MyDBDriver"

Benchmark experiments from other teams are drivers too and are found the same
way (one discovery mechanism): the entry point's distribution gives the
package name and version recorded with every trial and hashed into its
identity (``config_hash``), whoever ships it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.metadata import Distribution, EntryPoint, entry_points

from drivers.base import Driver

GROUP = "benchflow.drivers"


@dataclass(frozen=True)
class DriverInfo:
    name: str
    family: str
    description: str
    deprecated: bool | str
    package: str
    version: str
    target: str  # the entry point's object reference, module:Class
    fixed: bool = False
    target_fields: tuple[str, ...] = ()


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def names() -> list[str]:
    return sorted(_entry_points())


def load(name: str) -> type[Driver]:
    """The driver class registered as ``name`` (KeyError lists what exists)."""
    eps = _entry_points()
    if name not in eps:
        raise KeyError(f"no driver {name!r}; installed: {', '.join(sorted(eps)) or 'none'}")
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise TypeError(f"entry point {name!r} ({eps[name].value}) is not a benchflow Driver")
    return cls


def distribution(name: str) -> Distribution | None:
    """The installed distribution that registers driver ``name``."""
    return _entry_points()[name].dist


def info(name: str) -> DriverInfo:
    ep = _entry_points()[name]
    cls = load(name)
    dist = ep.dist
    return DriverInfo(
        name=name,
        family=cls.family,
        description=cls.description,
        deprecated=cls.deprecated,
        package=dist.metadata["Name"] if dist else "?",
        version=dist.version if dist else "?",
        target=ep.value,
        fixed=cls.fixed,
        target_fields=tuple(cls.target_fields),
    )
