"""The labelled requests: shipped with the package, generated, or downloaded.

The shipped set is package data (``data/intents.jsonl``), checked against its
sha256 so a damaged install is an error, never a silently different benchmark.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from drivers.base import DriverError

SHIPPED = "intents.jsonl"
SHIPPED_SHA256 = "4aa105a704cd2f270b82a342188393e7a27ade65c36413d757bb49e3349fe470"


@dataclass(frozen=True)
class Item:
    id: str
    text: str
    label: str


def shipped() -> tuple[list[Item], dict]:
    raw = resources.files("benchflow_intent").joinpath("data", SHIPPED).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SHIPPED_SHA256:
        raise DriverError(
            f"the shipped {SHIPPED} has sha256 {digest}, expected {SHIPPED_SHA256}: "
            "reinstall benchflow-intent",
            "data_corrupt",
        )
    return parse(raw.decode()), {"source": "shipped", "file": SHIPPED, "sha256": digest}


def from_file(path: Path, sha256: str) -> tuple[list[Item], dict]:
    return parse(Path(path).read_text()), {"source": "url", "sha256": sha256}


def parse(text: str) -> list[Item]:
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            items.append(Item(str(d["id"]), str(d["text"]), str(d["label"])))
        except (ValueError, KeyError) as exc:
            raise DriverError(f"dataset line {n}: {exc}", "data_corrupt") from None
    if not items:
        raise DriverError("the dataset is empty", "data_corrupt")
    return items


_SLOTS = {
    "weather": ("will it rain in {x}", "forecast for {x}", "is it cold in {x}"),
    "music": ("play {x} music", "put on some {x}", "next song please, something {x}"),
    "alarm": ("wake me at {x}", "set an alarm for {x}", "remind me at {x}"),
    "shopping": ("buy {x}", "add {x} to the list", "order {x}"),
}
_FILL = {
    "weather": ("Riga", "Quito", "Perth", "Kyoto"),
    "music": ("calm", "loud", "old", "fast"),
    "alarm": ("5 am", "9:15", "midnight", "ten"),
    "shopping": ("rice", "tea", "soap", "eggs"),
}


def generated(n: int, seed: int) -> tuple[list[Item], dict]:
    """``n`` templated requests, the same for the same seed on any machine."""
    rng = random.Random(seed)
    labels = sorted(_SLOTS)
    items = []
    for i in range(n):
        label = labels[i % len(labels)]
        text = rng.choice(_SLOTS[label]).format(x=rng.choice(_FILL[label]))
        items.append(Item(f"g{i:05d}", text, label))
    return items, {"source": "generated", "n": n, "seed": seed}
