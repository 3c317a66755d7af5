"""Composition: Hydra's config for every job of a run or a sweep, validated up front.

``python -m benchflow -m ...`` and ``benchflow plan`` compose each job's config the
way Hydra's own launcher will (:class:`Composer`), so a bad value in any job is
refused before the first trial starts; the validated specs are kept in
:data:`PREVALIDATED` so the sweeper and the Slurm launcher do not validate twice.
The order a sweep's trials run in (``order``) is decided here too
(:func:`order_jobs`, used by the sweeper and ``benchflow plan``), and
``--cfg job target=...`` composes the config a target's trial runs
(:func:`show_cfg`).
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


def task_overrides(job: list[str]) -> tuple[str, ...]:
    """A job's overrides as Hydra passes them to its sweeper and launcher: without the
    ``hydra.*`` ones."""
    return tuple(o for o in job if not o.lstrip("+~").startswith("hydra."))


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
                # Hydra hands its sweeper the job without the hydra.* overrides (they
                # are Hydra's own): the same spec under that key, or the sweeper would
                # compose every job again (~0.5 s each: 8 minutes for 1,000 jobs)
                PREVALIDATED.setdefault(task_overrides(job), spec)
            specs.append(spec)
    if multirun and not open_target:
        sweep_order(specs)  # one order per sweep
    if specs:
        caps = [s.cfg.limits for s in specs if s.cfg.limits.sweep.max_trials is not None]
        try:
            for cap in caps:
                check_sweep(sum(s.cfg.repetitions for s in specs), cap)
        except ConfigRefused as exc:
            raise ConfigError(exc.key, exc.value, exc.allowed) from None
    return specs


# -- `--cfg job target=...`: the config a trial of the target runs --------------------
def show_cfg(
    overrides: list[str],
    cfg_type: str,
    package: str | None = None,
    resolve: bool = False,
    config_dir: str | None = None,
) -> str | None:
    """What ``python -m benchflow --cfg job|all`` prints when ``target=`` is given: the
    composed config with the target's spec merged in (as a trial validates it).

    None when the config names no target (Hydra prints its own); raises
    :class:`benchflow.config.ConfigError` when the target cannot be applied.
    """
    from omegaconf import Container

    from benchflow.config.targets import apply_target

    if cfg_type not in ("job", "all"):
        return None
    if not any(o.lstrip("+~").split("=", 1)[0] == "target" for o in overrides):
        return None
    with composing(config_dir) as composer:
        cfg = composer.compose(list(overrides), with_hydra=cfg_type == "all")
    tree = OmegaConf.to_container(cfg, resolve=False)
    hydra = tree.pop("hydra", None)
    if tree.get("target") is None:
        return None
    merged, _ = apply_target(OmegaConf.create(tree), tuple(overrides))
    if hydra is not None:  # Hydra's own `--cfg all` shows its node first
        merged = OmegaConf.merge({"hydra": hydra}, merged)
    if package and package != "_global_":
        node = OmegaConf.select(merged, package)
        if node is None:
            from benchflow.config import ConfigError

            raise ConfigError("--package", package, "not found in the config")
    else:
        node, package = merged, None
    if not isinstance(node, Container):
        return f"{node}\n"
    if resolve:
        OmegaConf.resolve(node)
    head = f"# @package {package}\n" if package else ""
    return head + OmegaConf.to_yaml(node)


# -- the order of a sweep's trials ---------------------------------------------------
REPETITION_KEY = "repetition_index"


def sweep_order(specs: list[TrialSpec]) -> str:
    """The ``order`` of a sweep: one for all its jobs (ConfigError otherwise)."""
    orders = sorted({s.cfg.order for s in specs})
    if len(orders) > 1:
        raise ConfigError(
            "order", ",".join(orders), "one order for the whole sweep (do not sweep order)"
        )
    return orders[0] if orders else "interleaved"


def order_seed(specs: list[TrialSpec]) -> str:
    """What ``order=random`` draws its permutation from: the sweep's ``seed`` (the
    distinct seeds of its jobs, comma-separated, when ``seed`` is swept)."""
    return ",".join(str(s) for s in sorted({s.cfg.seed for s in specs}))


def order_jobs(jobs: list[list[str]], specs: list[TrialSpec]) -> list[tuple[list[str], TrialSpec]]:
    """The jobs Hydra launches for a sweep, in the order of its ``order``.

    ``blocked``: the jobs as Hydra expands them, each running its configuration's
    repetitions one after the other (benchflow before ``order`` existed).
    ``interleaved`` and ``random``: a configuration with repetitions > 1 becomes one
    job per repetition (its overrides plus ``repetition_index=k``, its spec with
    that key set); ``interleaved`` runs repetition 0 of every configuration (in
    Hydra's order), then repetition 1, ...; ``random`` shuffles all those jobs with
    ``random.Random("benchflow-order:" + order_seed(specs))`` — the same sweep, the
    same order. Returns (overrides, spec) per job, in launch order.
    """
    order = sweep_order(specs)
    if order == "blocked":
        return [(list(j), s) for j, s in zip(jobs, specs, strict=True)]
    units: list[tuple[int, int, list[str], TrialSpec]] = []  # (repetition, config, job, spec)
    for i, (job, spec) in enumerate(zip(jobs, specs, strict=True)):
        reps = spec.repetitions_run
        searching = getattr(getattr(spec.cfg, "search", None), "kind", "none") != "none"
        if len(reps) == 1 or searching:  # a search's job runs its own probes, whole
            units.append((reps[0], i, list(job), spec))
            continue
        for k in reps:
            units.append((k, i, [*job, f"{REPETITION_KEY}={k}"], one_repetition(spec, k)))
    if order == "random":
        import random

        random.Random(f"benchflow-order:{order_seed(specs)}").shuffle(units)
    else:
        units.sort(key=lambda u: (u[0], u[1]))
    return [(job, spec) for _, _, job, spec in units]


def one_repetition(spec: TrialSpec, k: int) -> TrialSpec:
    """``spec`` restricted to repetition ``k`` (as validating it with
    ``repetition_index=k`` would give, without composing it again)."""
    import dataclasses

    text = None if spec.resolved_text is None else {**spec.resolved_text, REPETITION_KEY: k}
    return dataclasses.replace(
        spec,
        cfg=spec.cfg.model_copy(update={REPETITION_KEY: k}),
        resolved={**spec.resolved, REPETITION_KEY: k},
        resolved_text=text,
        overrides=(*spec.overrides, f"{REPETITION_KEY}={k}"),
    )


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
