"""Identity of a trial: which trials measured the same thing.

- :func:`config_hash`: everything a trial measures, target included — equal for the
  repetitions of one configuration (``resume`` keys on it);
- :func:`workload_hash`: the workload without the target — equal for two targets
  run on the same workload, so ``benchflow compare`` can pair their trials;
- :data:`NON_IDENTITY`: the keys that say where or how a trial ran and was logged.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


# -- derived forms ---------------------------------------------------------------
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
)


def config_hash(spec: Any, driver_version: str) -> str:
    """Identity of what a trial measures: equal for the repetitions of one config."""
    ident = {k: v for k, v in spec.resolved.items() if k not in NON_IDENTITY}
    if not spec.cfg.placement.active:
        # Unset, it changes nothing measured: trials from before the key existed keep
        # their hash (and `resume` still finds them).
        ident.pop("placement", None)
    ident["_driver"] = f"{spec.service.driver}=={driver_version}"
    blob = json.dumps(ident, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def workload_hash(params: dict[str, Any], ignore: list[str] | tuple[str, ...] = ()) -> str:
    """Identity of the *workload* of a trial: its flattened config (MLflow params)
    without the keys that say where it ran (:data:`NON_IDENTITY`), without
    ``target``, and without ``ignore`` — the dotted prefixes a target provides.

    Two targets run on the same workload share it, so `benchflow compare` can pair
    their trials; the config hash, which includes the target, cannot.
    """
    skip = (*NON_IDENTITY, "target", *ignore)
    ident = {
        k: str(v)
        for k, v in params.items()
        if not any(k == p or k.startswith(p + ".") for p in skip)
    }
    blob = json.dumps(ident, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
