"""Composition: Hydra's config for every job of a run or a sweep, validated up front.

``python -m benchflow -m ...`` and ``benchflow plan`` compose each job's config the
way Hydra's own launcher will (:class:`Composer`), so a bad value in any job is
refused before the first trial starts; the validated specs are kept in
:data:`PREVALIDATED` so the sweeper and the Slurm launcher do not validate twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from benchflow.config.limits import check_sweep
from benchflow.config.schema import CONFIG_NAME, MISSING, ConfigError, TrialSpec, conf_dir
from benchflow.config.validate import first_line, validate
from drivers.base import ConfigRefused


# -- composing with Hydra (pre-validation of every trial of a sweep) ---------------
def sweep_jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override lists of the jobs an invocation runs (Hydra's basic sweeper's expansion)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise ConfigError("overrides", " ".join(overrides), first_line(exc)) from None
    if multirun:
        return BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]
    bad = [o.input_line for o in parsed if o.is_sweep_override()]
    if bad:
        raise ConfigError(bad[0], MISSING, "a sweep needs -m (multirun)")
    return [list(overrides)]


class Composer:
    """Composes many jobs' configs quickly, the way Hydra does.

    Hydra builds the defaults tree for every compose (~0.2 s each); for a sweep of
    100 jobs that alone is 20 s. Jobs usually differ only in plain values, so the
    tree is composed once per distinct set of config-group choices and each job's
    value overrides are applied to a copy, with Hydra's own functions and rules
    (an override naming a config group selects it; the rest set values, in struct
    mode). Use inside ``initialize_config_dir``; see :func:`composing`.
    """

    def __init__(self, extra_config_dir: str | None = None) -> None:
        from hydra.core.global_hydra import GlobalHydra

        self._search = (
            [f"hydra.searchpath=[file://{Path(extra_config_dir).resolve()}]"]
            if extra_config_dir
            else []
        )
        self._loader = GlobalHydra.instance().config_loader()
        self._repo = None  # the config repository (with the search path), made once
        self._bases: dict[tuple[str, ...], dict] = {}

    def compose(self, job: list[str], with_hydra: bool = False) -> DictConfig:
        """The composed config of one job (raises :class:`ConfigError`)."""
        from hydra import compose
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.errors import HydraException

        try:
            if with_hydra:
                return compose(
                    CONFIG_NAME, overrides=[*self._search, *job], return_hydra_config=True
                )
            if self._repo is None:
                self._repo = self._loader._parse_overrides_and_create_caching_repo(
                    CONFIG_NAME, self._search
                )[1]
            groups, values = [], []
            for o in OverridesParser.create().parse_overrides(job):
                is_group = self._repo.group_exists(o.key_or_group) and not isinstance(
                    o.value(), dict
                )
                hydra_key = o.key_or_group == "hydra" or o.key_or_group.startswith("hydra.")
                (groups if is_group or hydra_key else values).append(o)
            key = tuple(o.input_line for o in groups)
            if key not in self._bases:
                base = compose(CONFIG_NAME, overrides=[*self._search, *key])
                self._bases[key] = OmegaConf.to_container(base, resolve=False)
            # A fresh node from plain containers is much cheaper than a deepcopy.
            cfg = OmegaConf.create(self._bases[key])
            OmegaConf.set_struct(cfg, True)
            self._loader._apply_overrides_to_config(values, cfg)
            return cfg
        except HydraException as exc:
            raise _from_hydra(exc, job, self._search) from None


@contextmanager
def composing(extra_config_dir: str | None = None) -> Iterator[Composer]:
    """A :class:`Composer` over benchflow's configs (Hydra's global state is reset after)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(conf_dir()), version_base="1.3", job_name="benchflow"):
            yield Composer(extra_config_dir)
    finally:
        GlobalHydra.instance().clear()


# Specs validated before Hydra started, by job overrides: Hydra's sweeper need not
# compose them again, and benchflow's Slurm launcher reads their resources here.
PREVALIDATED: dict[tuple[str, ...], TrialSpec] = {}


def compose_trials(
    overrides: list[str],
    multirun: bool,
    extra_config_dir: str | None = None,
    open_target: bool = False,
) -> list[TrialSpec]:
    """Compose and validate every trial an invocation would run, before any starts.

    ``open_target``: validate a benchmark definition, whose target is chosen later.
    """
    jobs = sweep_jobs(overrides, multirun)
    specs = []
    with composing(extra_config_dir) as composer:
        for job in jobs:
            spec = validate(composer.compose(job), tuple(job), open_target)
            if not open_target:  # only what can run is reused by the launchers
                PREVALIDATED[tuple(job)] = spec
            specs.append(spec)
    if specs:
        caps = [s.cfg.limits for s in specs if s.cfg.limits.sweep.max_trials is not None]
        try:
            for cap in caps:
                check_sweep(sum(s.cfg.repetitions for s in specs), cap)
        except ConfigRefused as exc:
            raise ConfigError(exc.key, exc.value, exc.allowed) from None
    return specs


def _from_hydra(exc: Exception, job: list[str], search: list[str] = ()) -> ConfigError:
    text = str(exc)
    m = re.search(r"Could not find '([^/']+)/([^']+)'", text)
    if m:
        group, option = m.groups()
        options = re.findall(r"^\t(\S+)", text, flags=re.M)
        return ConfigError(group, option, f"allowed: {', '.join(options) or '(none found)'}")
    m = re.search(r"Could not override '([^']+)'", text) or re.search(
        r"Key '([^']+)' is not in struct", text
    )
    if m:
        key = m.group(1)
        value = next((o.split("=", 1)[1] for o in job if o.split("=", 1)[0] == key), MISSING)
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        # The keys of the config this job selected (service=..., tracking=...), not the defaults'.
        groups = [o for o in job if re.fullmatch(r"[A-Za-z_][\w/]*=[^,\s]+", o)]
        allowed = _allowed_keys(parent, [*search, *groups])
        hint = ""
        if key.startswith("service."):  # a setting the driver has but the yaml does not list
            hint = f" (or add one the driver accepts with ++{key}=...)"
        return ConfigError(key, value, f"unknown key; allowed keys here: {allowed}{hint}")
    return ConfigError("overrides", " ".join(job), first_line(exc))


def _allowed_keys(parent: str, overrides: list[str] = ()) -> str:
    from hydra import compose

    try:
        base = compose(CONFIG_NAME, overrides=list(overrides))
    except Exception:
        base = compose(CONFIG_NAME)
    node = OmegaConf.select(base, parent) if parent else base
    if isinstance(node, DictConfig):
        return ", ".join(sorted(str(k) for k in node if k != "hydra"))
    return "(none)"
