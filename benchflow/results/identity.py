"""Identity of a trial: which trials measured the same thing.

- :func:`config_hash`: everything a trial measures, target included — equal for the
  repetitions of one configuration (``resume`` keys on it);
- :func:`workload_hash`: the workload without the target — equal for two targets
  run on the same workload, so ``benchflow compare`` can pair their trials;
- :data:`NON_IDENTITY`: the keys that say where or how a trial ran and was logged.

Identity is by *value*: the config a trial records has been validated into its
typed settings and written in canonical form (:func:`canonical`), so
``service.service_ms=5``, ``5.0`` and ``5e0`` are one configuration
(``benchflow.config.validate``); stored params of older runs are brought to the
same form by ``benchflow.config.validate.normalize_params``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


# -- derived forms ---------------------------------------------------------------
def canonical(tree: Any) -> Any:
    """Numbers by value, as canonical JSON (RFC 8785) writes them: a float with an
    integral value becomes an integer (``5.0`` -> ``5``); other floats, ints, bools,
    strings and ``None`` are unchanged; dicts and lists are walked.

    Applied to the validated config, so a float setting given as ``5``, ``5.0`` or
    ``5e0`` has one hash and one param text (``"5"``) — the text and hash it always
    had when given as ``5``, which is also how the shipped configs write them.
    """
    if type(tree) is float:
        return int(tree) if tree.is_integer() and abs(tree) < 2**53 else tree
    if isinstance(tree, dict):
        return {k: canonical(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [canonical(v) for v in tree]
    return tree


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys (lists stay values)."""
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[key] = v
    else:
        out[prefix] = tree
    return out


# Keys that say where or how a trial is run and logged, not what it measures.
NON_IDENTITY = (
    "tracking",
    "results_dir",
    "data_dir",
    "repetitions",
    "scenario",
    "progress",
    "monitor",
    "validity",
    "stall_timeout_s",
    "resume",
    "max_retries",
    "retry_backoff_s",
    "retry_on",
    "client_launch",
    "approve",
    "budget",
    "limits",
    "envs_dir",
    # the order a sweep runs its trials in, and the one repetition a job of an
    # interleaved sweep runs: how the trials were scheduled, not what they measure
    "order",
    "repetition_index",
)


def _hash(ident: dict[str, Any]) -> str:
    blob = json.dumps(ident, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _inactive(cfg: Any) -> list[str]:
    """Top-level keys that change nothing measured as set: left out of the hashes, so
    trials from before the key existed keep their hash (and `resume` finds them)."""
    out = []
    if not cfg.placement.active:
        out.append("placement")
    if getattr(cfg, "duration_s", None) != "auto":  # precision.* only rules duration_s=auto
        out.append("precision")
    if getattr(getattr(cfg, "search", None), "kind", "none") == "none":
        out.append("search")
    return out


def _config_ident(spec: Any, resolved: dict[str, Any], driver_version: str) -> dict[str, Any]:
    ident = {k: v for k, v in resolved.items() if k not in NON_IDENTITY}
    for key in _inactive(spec.cfg):
        ident.pop(key, None)
    ident["_driver"] = f"{spec.service.driver}=={driver_version}"
    return ident


def config_hash(spec: Any, driver_version: str) -> str:
    """Identity of what a trial measures: equal for the repetitions of one config.

    By value: the validated config in canonical form (:func:`canonical`).
    """
    return _hash(_config_ident(spec, canonical(spec.resolved), driver_version))


def config_hashes(spec: Any, driver_version: str) -> list[str]:
    """The hashes a stored trial of ``spec``'s configuration may carry: by value
    (:func:`config_hash`, what trials record now) and, when it differs, the hash
    of the config as given (``spec.resolved_text``) — what benchflow recorded
    before identity by value, for the same command line."""
    out = [config_hash(spec, driver_version)]
    text = getattr(spec, "resolved_text", None)
    if text is not None:
        legacy = _hash(_config_ident(spec, text, driver_version))
        if legacy not in out:
            out.append(legacy)
    return out


def params_hash(params: dict[str, Any], driver_package: str) -> str:
    """Identity of what a trial measured, from its MLflow params (normalized by
    ``benchflow.config.validate.normalize_params``) and its driver package
    (``benchflow.driver_package``): what :func:`config_hash` says, for stored runs
    whose hash was computed from the text of their config. Secret keys are not in
    params, so they do not count here."""
    skip = (*NON_IDENTITY, "custom")
    ident = {
        k: str(v)
        for k, v in params.items()
        if not any(k == p or k.startswith(p + ".") for p in skip)
    }
    inactive = []  # as in config_hash
    if all(v in ("None", "{}") for k, v in ident.items() if k.split(".")[0] == "placement"):
        inactive.append("placement")
    if ident.get("duration_s") != "auto":
        inactive.append("precision")
    if ident.get("search.kind", "none") == "none":
        inactive.append("search")
    ident = {k: v for k, v in ident.items() if k.split(".")[0] not in inactive}
    ident["_driver"] = driver_package
    return _hash(ident)


def workload_hash(params: dict[str, Any], ignore: list[str] | tuple[str, ...] = ()) -> str:
    """Identity of the *workload* of a trial: its flattened config (MLflow params)
    without the keys that say where it ran (:data:`NON_IDENTITY`), without
    ``target``, and without ``ignore`` — the dotted prefixes a target provides.

    Two targets run on the same workload share it, so `benchflow compare` can pair
    their trials; the config hash, which includes the target, cannot. Params of
    runs logged before identity by value hold the text of their config: pass them
    through ``benchflow.config.validate.normalize_params`` first.
    """
    skip = (*NON_IDENTITY, "target", *ignore)
    ident = {
        k: str(v)
        for k, v in params.items()
        if not any(k == p or k.startswith(p + ".") for p in skip)
    }
    blob = json.dumps(ident, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
