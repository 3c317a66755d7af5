"""Every installed driver keeps the interface's contract, and every shipped service
recipe validates as shipped (no I/O: validation never connects to anything)."""

import typing

import pytest

from benchflow.config import compose_trials, conf_dir
from drivers import discovery
from drivers.base import Driver, ServiceSettings

DRIVERS = discovery.names()
RECIPES = sorted(p.stem for p in (conf_dir() / "service").glob("*.yaml"))


@pytest.mark.parametrize("name", DRIVERS)
def test_driver_declares_what_the_harness_needs(name):
    cls = discovery.load(name)
    assert issubclass(cls, Driver)
    assert cls.family and cls.description and cls.name
    assert issubclass(cls.Settings, ServiceSettings)
    assert cls.size_unit and isinstance(cls.batch_meaning, str)


@pytest.mark.parametrize("name", DRIVERS)
def test_driver_settings_keep_the_common_keys_meaning(name):
    """A driver may add keys but not give a common key (mode, resources, isolation,
    ...) another type: the harness reads those on every service."""
    cls = discovery.load(name)
    base = typing.get_type_hints(ServiceSettings)
    mine = typing.get_type_hints(cls.Settings)
    for key, ann in base.items():
        assert _narrows(mine[key], ann), f"{name}: Settings.{key} is {mine[key]}, not {ann}"


def _narrows(mine, base) -> bool:
    """The same type, a subclass, or a Literal with a subset of the values."""
    if mine == base:
        return True
    if isinstance(mine, type) and isinstance(base, type):
        return issubclass(mine, base)
    lit = typing.Literal
    if typing.get_origin(mine) is lit and typing.get_origin(base) is lit:
        return set(typing.get_args(mine)) <= set(typing.get_args(base))
    return False


@pytest.mark.parametrize("recipe", RECIPES)
def test_shipped_service_recipe_validates(recipe):
    # open_target: a recipe may leave its target (endpoint, model) to each run, as qa does.
    (spec,) = compose_trials([f"service={recipe}"], multirun=False, open_target=True)
    assert spec.service.name == recipe
    assert spec.service.driver in DRIVERS
