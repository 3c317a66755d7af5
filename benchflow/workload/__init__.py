"""Workload shapes every driver draws from: seeded, production-shaped distributions.

Pure Python and numpy, no I/O to servers; at the bottom of the import layers (it
imports nothing of benchflow but :mod:`benchflow.secrets`), so drivers and the load
engine import it.

- :mod:`~benchflow.workload.keys`: which keys, objects, rows or offsets requests
  touch (uniform, YCSB-style zipfian, latest, hotspot): :class:`AccessConfig`,
  :class:`KeyChooser`.
- :mod:`~benchflow.workload.lengths`: input/output token counts and object sizes
  (fixed, uniform, normal, lognormal, empirical): :class:`LengthConfig`,
  :class:`LengthSampler`, :func:`summarize`.
- :mod:`~benchflow.workload.trace`: trace replay input (Mooncake JSONL, CSV), streamed;
  a synthetic trace generator and the shipped :data:`SAMPLE_TRACE`.
- :mod:`~benchflow.workload.prompts`: deterministic prompt text whose shared trace
  blocks are byte-identical shared prefixes.

Each module's docstring defines its distributions. Everything is a function of a
seed (and a ``stream`` for each client shard or worker): the same on every run and
machine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Re-exported lazily: ``python -m benchflow.workload.trace`` must not find its own
# module already imported by the package (runpy warns), and a driver that needs only
# the keys does not pay for the rest.
_EXPORTS = {
    "keys": (
        "YCSB_ITEM_COUNT",
        "AccessConfig",
        "KeyChooser",
        "fnvhash64",
        "rank_probabilities",
        "ycsb_rank_probabilities",
        "zeta",
    ),
    "lengths": ("LengthConfig", "LengthSampler", "load_lengths", "summarize"),
    "prompts": ("VOCABULARY", "prompt_for", "synthetic_prompt"),
    "trace": (
        "BLOCK_TOKENS",
        "SAMPLE_TRACE",
        "TraceConfig",
        "TraceError",
        "TraceRequest",
        "generate_trace",
        "iter_trace",
        "trace_sha256",
        "trace_summary",
    ),
}
_MODULE_OF = {name: mod for mod, names in _EXPORTS.items() for name in names}

if TYPE_CHECKING:
    from benchflow.workload.keys import (
        YCSB_ITEM_COUNT,
        AccessConfig,
        KeyChooser,
        fnvhash64,
        rank_probabilities,
        ycsb_rank_probabilities,
        zeta,
    )
    from benchflow.workload.lengths import LengthConfig, LengthSampler, load_lengths, summarize
    from benchflow.workload.prompts import VOCABULARY, prompt_for, synthetic_prompt
    from benchflow.workload.trace import (
        BLOCK_TOKENS,
        SAMPLE_TRACE,
        TraceConfig,
        TraceError,
        TraceRequest,
        generate_trace,
        iter_trace,
        trace_sha256,
        trace_summary,
    )

__all__ = [
    "BLOCK_TOKENS",
    "SAMPLE_TRACE",
    "VOCABULARY",
    "YCSB_ITEM_COUNT",
    "AccessConfig",
    "KeyChooser",
    "LengthConfig",
    "LengthSampler",
    "TraceConfig",
    "TraceError",
    "TraceRequest",
    "fnvhash64",
    "generate_trace",
    "iter_trace",
    "load_lengths",
    "prompt_for",
    "rank_probabilities",
    "summarize",
    "synthetic_prompt",
    "trace_sha256",
    "trace_summary",
    "ycsb_rank_probabilities",
    "zeta",
]


def __getattr__(name: str) -> Any:
    mod = _MODULE_OF.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])
