"""Which class each request of a mix belongs to (docs/workloads.md#mixes).

A mix is a set of named request classes with weights (``mix={get: 0.7, put: 0.3}``).
The engine draws each request's class; the driver decides what a request of that
class does (``RequestContext.cls``). Draws are a pure function of (seed, stream,
lane, request index), generated in chunks: open-loop request i of a schedule gets
the same class in every run (and both sides of a comparison with the same seed
send the same sequence of classes), and a closed-loop worker (one lane each) its
own reproducible sequence.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Iterator

import numpy as np

_CHUNK = 16_384
_MIX_STREAM = 0x6D6978  # keeps the class draws apart from the schedule's own stream


class Mix:
    """Weighted classes; ``class_of(i, lane)`` is request i's class index."""

    def __init__(self, weights: tuple[tuple[str, float], ...], seed: int, stream: int = 0):
        if not weights:
            raise ValueError("a mix needs at least one class")
        self.names = [name for name, _ in weights]
        w = np.array([float(x) for _, x in weights])
        if (w < 0).any() or not w.sum() > 0:
            raise ValueError(f"mix weights must be >= 0 with a positive sum, got {weights}")
        self.weights = w / w.sum()
        self._cdf = np.cumsum(self.weights)
        self._cdf[-1] = 1.0
        self._seed, self._stream = int(seed), int(stream)
        # per lane: (chunk number, its classes as Python ints) — on the hot path
        self._current: dict[int, tuple[int, list[int]]] = {}
        self._lock = threading.Lock()

    def _chunk(self, lane: int, k: int) -> list[int]:
        rng = np.random.default_rng([self._seed, self._stream, _MIX_STREAM, lane, k])
        return np.searchsorted(self._cdf, rng.random(_CHUNK), side="right").tolist()

    def stream(self, lane: int) -> Iterator[int]:
        """The classes of requests 0, 1, 2, ... of ``lane``, as ``class_of`` gives them:
        for one closed-loop worker's hot path (``next(it)``, a C-level iterator)."""
        return itertools.chain.from_iterable(
            map(functools.partial(self._chunk, lane), itertools.count())
        )

    def class_of(self, i: int, lane: int = 0) -> int:
        """The class index of request ``i`` of ``lane``."""
        k, j = divmod(i, _CHUNK)
        cur = self._current.get(lane)
        if cur is None or cur[0] != k:
            # Indices only go forward (threads of one lane may interleave at a chunk's
            # edge: a chunk drawn twice is the same chunk, the draw is a pure function).
            with self._lock:
                cur = (k, self._chunk(lane, k))
                self._current[lane] = cur
        return cur[1][j]
