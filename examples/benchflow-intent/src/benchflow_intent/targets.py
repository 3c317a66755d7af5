"""Classifiers to benchmark: each is a factory ``f(**target_args)`` returning a
callable ``text -> label``. A team points ``service.target`` at its own model
(``mypkg.model:load``); these stand in for models here.

``leaky`` and ``broken`` misbehave on purpose, to show hard limits and
unexpected failures (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Callable

KEYWORDS = {
    "weather": ("rain", "forecast", "cold", "hot", "umbrella", "snow", "temperature", "storm"),
    "music": ("play", "playlist", "song", "volume", "track", "album", "shuffle"),
    "alarm": ("wake", "alarm", "remind", "snooze", "timer"),
    "shopping": ("shopping", "order", "list", "buy", "cost", "reorder", "need"),
}


def keyword(default: str = "shopping") -> Callable[[str], str]:
    """A rule-based baseline: the first intent whose keyword appears wins."""

    def predict(text: str) -> str:
        words = text.lower()
        for label, keys in KEYWORDS.items():
            if any(k in words for k in keys):
                return label
        return default

    return predict


def slow(delay_s: float = 0.1) -> Callable[[str], str]:
    """The keyword model, ``delay_s`` per answer (a remote model's pace)."""
    import time

    inner = keyword()

    def predict(text: str) -> str:
        time.sleep(delay_s)
        return inner(text)

    return predict


def majority(label: str = "weather") -> Callable[[str], str]:
    """Always the same answer: the floor any model must beat."""
    return lambda text: label


def leaky(leak_kb: int = 1024) -> Callable[[str], str]:
    """The keyword model with a memory leak: every call keeps ``leak_kb`` KiB."""
    inner, kept = keyword(), []

    def predict(text: str) -> str:
        kept.append(bytearray(leak_kb * 1024))  # zero-filled pages, resident once written
        kept[-1][::4096] = b"x" * len(range(0, leak_kb * 1024, 4096))
        return inner(text)

    return predict


def broken() -> Callable[[str], str]:
    """A model that cannot load (an unexpected failure, with its traceback)."""
    weights = {}
    return weights["encoder"]  # KeyError, as a real loader bug would raise
