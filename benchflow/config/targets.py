"""Merging a registered target into a config before it is validated
(``target=NAME@ALIAS`` or ``target=NAME/VERSION``): the target's spec sets its
keys, and an override that contradicts the spec is refused. ``python -m
benchflow --cfg job target=...`` prints the config with the target merged
(:func:`benchflow.config.compose.show_cfg`).
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from benchflow.registry.lookup import resolve
from benchflow.registry.specs import ResolvedTarget, TargetError


# -- merging a target into a config (before validation) ----------------------------
def apply_target(
    cfg: DictConfig, overrides: tuple[str, ...] = ()
) -> tuple[DictConfig, ResolvedTarget]:
    """Resolve ``cfg.target`` and merge its spec into a copy of ``cfg``.

    Raises :class:`benchflow.config.ConfigError` (key ``target``) when the target
    cannot be resolved, its spec is bad, or an override sets a key the target owns.
    """
    from benchflow.config import ConfigError, conf_dir

    ref = str(cfg.target)
    uri = OmegaConf.select(cfg, "tracking.uri", throw_on_resolution_failure=False)
    try:
        target = resolve(ref, uri)
    except TargetError as exc:
        raise ConfigError("target", ref, str(exc).split(": ", 1)[-1]) from None
    spec = target.spec
    owned = spec.keys()
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        if key in ("target", "hydra") or key.startswith("hydra."):
            continue
        if "." not in key and (conf_dir() / key).is_dir():
            # Choosing a config group (service=intent) is not setting a key the target
            # owns — unless the target names another service.
            value = o.split("=", 1)[1] if "=" in o else None
            if key == "service" and spec.service and value != spec.service:
                raise ConfigError(
                    key, value, f"target {target.label} runs on service {spec.service!r}"
                )
            continue
        if any(key == p or key.startswith(p + ".") or p.startswith(key + ".") for p in owned):
            raise ConfigError(
                key,
                o.split("=", 1)[1] if "=" in o else None,
                f"set by target {target.label}; register a new target version to change it",
            )
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.set_struct(out, False)
    if spec.service and spec.service != OmegaConf.select(out, "service.name"):
        recipe = conf_dir() / "service" / f"{spec.service}.yaml"
        if not recipe.is_file():
            have = ", ".join(sorted(p.stem for p in recipe.parent.glob("*.yaml")))
            raise ConfigError(
                "target", ref, f"its spec names service {spec.service!r}; allowed: {have}"
            )
        out.service = OmegaConf.load(recipe)
    out = OmegaConf.merge(out, OmegaConf.create(spec.config))
    out.target = target.label
    return out, target
