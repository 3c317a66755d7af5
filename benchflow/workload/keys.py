"""One seeded key chooser for every driver that picks keys, objects, rows or offsets.

:class:`KeyChooser` draws keys in ``[0, n_keys)`` by the law :class:`AccessConfig`
names (its ``distribution``):

- ``uniform``: every key with probability ``1/n``.
- ``hotspot``: YCSB's ``HotspotIntegerGenerator``. The first
  ``h = floor(hot_fraction * n)`` keys are hot: with probability ``hot_probability``
  a key uniform on ``[0, h)``, otherwise uniform on ``[h, n)`` (``h = 0``: all keys
  cold, uniform on ``[0, n)``).
- ``zipfian``: a Zipf rank ``k = 1..n`` with ``p(k) = k^-theta / zeta(n, theta)``,
  then scrambled so that the hot keys are spread over the key space instead of
  sitting at ``0, 1, 2, ...`` (YCSB's ``ScrambledZipfianGenerator``).
- ``latest``: a Zipf rank over the current key space, counted back from the newest
  key: ``key = n - 1 - (k - 1)``; :meth:`KeyChooser.grow` adds keys (inserts) and the
  most recently inserted are the most popular (YCSB's ``SkewedLatestGenerator``).

``zeta(n, theta) = sum_{k=1..n} k^-theta`` (:func:`zeta`), computed as the exact sum
of its first 10,000 terms plus the Euler–Maclaurin tail (to the ``B4`` term): about
100 µs for any ``n`` (``10^10`` included), relative error below ``1e-14``; cached.

Two algorithms draw the Zipf ranks (``AccessConfig.zipf_algorithm``):

- ``exact`` (default): the ranks follow ``p(k)`` (:func:`rank_probabilities`). Inverse
  CDF of one uniform: the first ``2^12`` ranks from their exact cumulative sums (a
  32 KiB table cached per ``theta``), the tail from the closed-form inverse of the
  midpoint integral ``int_{k-1/2}^{k+1/2} x^-theta dx``, whose mass differs from
  ``k^-theta`` by a relative ``theta(theta+1)/(24 k^2)`` (below ``1e-7`` past the
  table). Any ``theta > 0``, ``theta = 1`` included. ``zipfian`` scrambles the rank
  with a bijection of ``[0, n)`` (a 4-round Feistel network on the next even power
  of two with a splitmix64 round function, cycle-walked into ``[0, n)``; up to 2^22
  keys the whole permutation is kept as a table), so every
  key's probability is exactly one rank's: the hottest key has ``1/zeta(n, theta)``.
- ``ycsb``: YCSB's own generators, for numbers comparable with YCSB's. The rank is
  YCSB ``ZipfianGenerator``'s closed form (Gray et al., "Quickly generating
  billion-record synthetic databases", SIGMOD 1994): with ``u`` uniform,
  ``alpha = 1/(1-theta)``, ``eta = (1 - (2/n)^(1-theta)) / (1 - zeta(2,theta)/zeta(n,theta))``:
  rank 0 if ``u*zeta(n) < 1``, rank 1 if ``u*zeta(n) < 1 + 0.5^theta``, else
  ``floor(n * (eta*u - eta + 1)^alpha)``. This only approximates Zipf's law (at
  ``theta = 0.99``, ``n = 1000`` the third rank gets 0.051 instead of 0.044; total
  variation 1.6%); its exact law is :func:`ycsb_rank_probabilities`. ``zipfian``
  then does what ``ScrambledZipfianGenerator`` does: ranks over YCSB's fixed
  ``ITEM_COUNT = 10^10`` items, ``key = |fnvhash64(rank)| mod n``
  (:func:`fnvhash64`: FNV-1a, 64-bit, over the rank's 8 little-endian bytes, as
  YCSB's ``Utils.fnvhash64``). Distinct ranks collide on one key, so key
  frequencies are not a permutation of the rank law (the hottest key has about
  ``1/zeta(10^10, 0.99) = 3.8%`` instead of ``1/zeta(n)``). ``theta = 1`` is not
  allowed (``alpha`` is undefined). Unlike YCSB, ``eta`` follows the key space when
  it grows (YCSB keeps the first item count's, a known bug).

``KeyChooser(..., scramble=False)`` returns the 0-based Zipf rank itself (for
``zipfian``; with ``ycsb`` a rank over ``n_keys``, YCSB's unscrambled
``ZipfianGenerator``): tests and inspection.

Determinism: the keys are a function of ``(n_keys, access, seed, stream)`` and of
when :meth:`KeyChooser.grow` is called, the same in any process on any machine:
one uniform per key, from ``numpy.random.default_rng([seed, stream, 0x6B657973])``
(seed and stream modulo 2^64) drawn in chunks of 65,536, so ``take(3)`` then
``take(2)`` gives ``take(5)``. Each ``stream`` (a client shard, a worker) is an
independent sequence; the scramble depends on ``n_keys`` only, so every stream shares
the same hot keys.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterator
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "YCSB_ITEM_COUNT",
    "AccessConfig",
    "KeyChooser",
    "fnvhash64",
    "rank_probabilities",
    "ycsb_rank_probabilities",
    "zeta",
]

# YCSB's ScrambledZipfianGenerator.ITEM_COUNT: the rank space its scrambled keys fold.
YCSB_ITEM_COUNT = 10_000_000_000

_U64 = 1 << 64  # seeds are taken modulo 2^64: numpy's seeding refuses negative numbers
_SEED_TAG = 0x6B657973  # "keys": keeps this stream apart from other users of the seed
_CHUNK = 65_536
_NEXT_BLOCK = 4096  # next() converts this many uniforms at a time (grow() redoes the rest)
_HEAD = 1 << 12  # exact cumulative table of the first ranks (32 KiB: stays in cache)
_EM_TERMS = 10_000

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_U8 = np.uint64(0xFF)


class AccessConfig(BaseModel):
    """Which keys requests touch: the law :class:`KeyChooser` draws keys by."""

    model_config = ConfigDict(extra="forbid")

    distribution: Literal["uniform", "zipfian", "latest", "hotspot"] = Field(
        "uniform",
        description="uniform; zipfian (scrambled Zipf, hot keys spread); latest (Zipf "
        "over age, newest keys hottest); hotspot (a hot set gets most accesses)",
    )
    theta: float = Field(
        0.99,
        description="Zipf exponent of zipfian and latest: p(rank k) ∝ k^-theta "
        "(YCSB's zipfian constant, 0.99 by default)",
    )
    hot_fraction: float = Field(
        0.2, description="hotspot: share of the key space that is hot, 0 < x < 1"
    )
    hot_probability: float = Field(
        0.8, description="hotspot: share of accesses that go to the hot set, 0 <= p <= 1"
    )
    zipf_algorithm: Literal["exact", "ycsb"] = Field(
        "exact",
        description="exact: ranks follow Zipf's law exactly, scrambled by a bijection; "
        "ycsb: YCSB's Gray et al. approximation and fnvhash64 scramble, as YCSB draws",
    )

    @model_validator(mode="after")
    def _check(self) -> AccessConfig:
        if not (self.theta > 0 and math.isfinite(self.theta)):
            raise ValueError(f"theta must be a number > 0, got {self.theta}")
        if self.zipf_algorithm == "ycsb" and self.theta == 1:
            raise ValueError(
                "theta must be > 0 and != 1 with zipf_algorithm=ycsb (YCSB's "
                "alpha = 1/(1-theta)); theta = 1 needs zipf_algorithm=exact"
            )
        if not 0 < self.hot_fraction < 1:
            raise ValueError(f"hot_fraction must be in (0, 1), got {self.hot_fraction}")
        if not 0 <= self.hot_probability <= 1:
            raise ValueError(f"hot_probability must be in [0, 1], got {self.hot_probability}")
        return self


# -- Zipf's law ----------------------------------------------------------------------


def _g(x: np.ndarray | float, theta: float) -> np.ndarray | float:
    """``int_1^x t^-theta dt``, without cancellation near ``theta = 1``."""
    a = 1.0 - theta
    lx = np.log(x)
    return lx if a == 0 else np.expm1(a * lx) / a


def _g_inv(v: np.ndarray, theta: float) -> np.ndarray:
    a = 1.0 - theta
    return np.exp(v) if a == 0 else np.exp(np.log1p(a * v) / a)


@lru_cache(maxsize=256)
def zeta(n: int, theta: float) -> float:
    """``sum_{k=1..n} k^-theta``: exact first 10,000 terms + Euler–Maclaurin tail.

    Costs about 100 µs whatever ``n``; the tail's error is below ``1e-14`` relative.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    m = min(int(n), _EM_TERMS)
    head = float(np.sum(np.arange(1, m + 1, dtype=np.float64) ** -theta))
    if n == m:
        return head
    # sum_{k=m+1..n} f(k) = int_m^n f + (f(n) - f(m))/2 + B2/2! (f'(n) - f'(m))
    #                       + B4/4! (f'''(n) - f'''(m)) + ...,  f(x) = x^-theta
    n_f, m_f = float(n), float(m)

    def f(x: float) -> float:
        return x**-theta

    def f1(x: float) -> float:
        return -theta * x ** (-theta - 1)

    def f3(x: float) -> float:
        return -theta * (theta + 1) * (theta + 2) * x ** (-theta - 3)

    tail = (
        (_g(n_f, theta) - _g(m_f, theta))
        + (f(n_f) - f(m_f)) / 2
        + (f1(n_f) - f1(m_f)) / 12
        - (f3(n_f) - f3(m_f)) / 720
    )
    return head + float(tail)


def rank_probabilities(n: int, theta: float) -> np.ndarray:
    """Zipf's law on ranks ``k = 1..n``: ``p(k) = k^-theta / sum_j j^-theta`` (index k-1)."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -theta
    return w / w.sum()


def ycsb_rank_probabilities(n: int, theta: float) -> np.ndarray:
    """The exact law of YCSB's ``ZipfianGenerator`` ranks ``0..n-1`` (Gray et al.'s
    closed form), derived from its inverse: ``P(rank <= r) = 1/zeta(n)`` for ``r = 0``
    and ``min(1, (((r+1)/n)^(1-theta) - 1)/eta + 1)`` for ``r >= 1``."""
    if n <= 2:
        p = np.array([1.0, 0.5**theta][:n])
        return p / p.sum()
    zn = zeta(n, theta)
    eta = (1 - (2 / n) ** (1 - theta)) / (1 - (1 + 0.5**theta) / zn)
    r = np.arange(n, dtype=np.float64)
    cdf = np.minimum(1.0, (((r + 1) / n) ** (1 - theta) - 1) / eta + 1)
    cdf[0] = 1 / zn
    cdf[-1] = 1.0
    return np.diff(cdf, prepend=0.0)


@lru_cache(maxsize=32)
def _head_cumsum(theta: float) -> np.ndarray:
    return np.cumsum(np.arange(1, _HEAD + 1, dtype=np.float64) ** -theta)


_GUIDE_CELLS = 1 << 14
_GUIDE_STEPS = 4


@lru_cache(maxsize=64)
def _guide(theta: float, m: int) -> tuple[np.ndarray, np.ndarray, float]:
    """A guide table for searching the first ``m`` cumulative sums of the head: cell j
    of ``[0, sum)`` starts at or after the rank it names, so a search starts there."""
    cs = _head_cumsum(theta)[:m]
    lows = np.arange(_GUIDE_CELLS) * (cs[-1] / _GUIDE_CELLS)
    # one rank earlier than the cell's start: t * scale may round into the next cell
    start = np.maximum(np.searchsorted(cs, lows, side="right") - 1, 0)
    return start, np.append(cs, np.inf), _GUIDE_CELLS / cs[-1]


def _search_head(t: np.ndarray, theta: float, m: int) -> np.ndarray:
    """``np.searchsorted(head[:m], t, side="right")`` (the same integers), three times
    as fast: from the guide table's rank, a few vectorized steps forward; what is not
    found in ``_GUIDE_STEPS`` steps (a steep law's crowded cells) is searched."""
    start, cs, scale = _guide(theta, m)
    r = start[np.minimum((t * scale).astype(np.int64), _GUIDE_CELLS - 1)]
    for _ in range(_GUIDE_STEPS):
        step = cs[r] <= t
        if not step.any():
            return r
        r += step
    rest = np.flatnonzero(cs[r] <= t)
    r[rest] = np.searchsorted(cs[:m], t[rest], side="right")
    return r


def _exact_ranks(u: np.ndarray, n: int, theta: float) -> np.ndarray:
    """0-based Zipf ranks by inverting the cumulative law at ``u``."""
    head = _head_cumsum(theta)
    if n <= _HEAD:
        r = _search_head(u * head[n - 1], theta, n)
        return np.minimum(r, n - 1)
    s_head = head[-1]
    g0 = _g(_HEAD + 0.5, theta)
    t = u * (s_head + _g(n + 0.5, theta) - g0)
    r = _search_head(t, theta, _HEAD)
    tail = r >= _HEAD
    if tail.any():
        # rank k (1-based) past the table owns [G(k-1/2), G(k+1/2)) of the integral
        x = _g_inv(t[tail] - s_head + g0, theta)
        r[tail] = np.clip(np.floor(x + 0.5), _HEAD + 1, n).astype(np.int64) - 1
    return r


def _ycsb_ranks(u: np.ndarray, n: int, theta: float) -> np.ndarray:
    """0-based ranks by YCSB ZipfianGenerator.nextLong's closed form."""
    zn = zeta(n, theta)
    uz = u * zn
    if n <= 2:  # eta is undefined; u*zeta(n) < zeta(2) anyway, so only ranks 0 and 1
        return np.where(uz < 1.0, 0, 1).astype(np.int64)
    alpha = 1.0 / (1.0 - theta)
    eta = (1 - (2 / n) ** (1 - theta)) / (1 - (1 + 0.5**theta) / zn)
    # the base is > 0 wherever the formula's rank is kept (u*zeta(n) >= zeta(2)); the
    # clamp only keeps the masked-out draws from warning
    base = np.maximum(eta * u - eta + 1, 1e-300)
    r = (n * base**alpha).astype(np.int64)  # Java's (long) truncates
    r = np.minimum(r, n - 1)
    r[uz < 1.0 + 0.5**theta] = 1
    r[uz < 1.0] = 0
    return r


# -- scrambling ----------------------------------------------------------------------


def fnvhash64(values: np.ndarray | int) -> np.ndarray:
    """FNV-1a 64-bit hash of each int64's 8 little-endian bytes (YCSB's ``fnvhash64``
    before its ``Math.abs``), as uint64."""
    v = np.atleast_1d(np.asarray(values, dtype=np.int64)).view(np.uint64)
    h = np.full(v.shape, _FNV_OFFSET, dtype=np.uint64)
    for i in range(8):
        h ^= (v >> np.uint64(8 * i)) & _U8
        h *= _FNV_PRIME  # wraps modulo 2^64, as Java's long multiply
    return h


def _ycsb_scramble(ranks: np.ndarray, n: int) -> np.ndarray:
    signed = fnvhash64(ranks).view(np.int64)
    # Java's Math.abs(Long.MIN_VALUE) stays negative; numpy's % keeps it in [0, n) anyway
    return np.abs(signed) % np.int64(n)


_ROUND_KEYS = tuple(
    np.uint64(k)
    for k in (0x243F6A8885A308D3, 0x13198A2E03707344, 0xA4093822299F31D0, 0x082EFA98EC4E6C89)
)


def _mix64(z: np.ndarray) -> np.ndarray:
    # splitmix64's finalizer: a cheap full-avalanche round function
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _feistel(x: np.ndarray, half: int) -> np.ndarray:
    mask = np.uint64((1 << half) - 1)
    sh = np.uint64(half)
    left, right = x >> sh, x & mask
    for key in _ROUND_KEYS:
        left, right = right, left ^ (_mix64(right ^ key) & mask)
    return (left << sh) | right


# Key spaces up to this size keep their whole permutation as a table (4 bytes a key):
# a lookup per key instead of a Feistel network per key (~10x fewer numpy operations).
_TABLE_MAX = 1 << 22


@lru_cache(maxsize=4)
def _permutation_table(n: int) -> np.ndarray:
    return _feistel_permute(np.arange(n, dtype=np.int64), n).astype(np.int32)


def _permute(ranks: np.ndarray, n: int) -> np.ndarray:
    """A fixed bijection of ``[0, n)`` (depends on ``n`` only)."""
    if n <= _TABLE_MAX:
        return _permutation_table(n)[ranks].astype(np.int64)
    return _feistel_permute(ranks, n)


def _feistel_permute(ranks: np.ndarray, n: int) -> np.ndarray:
    bits = max(2, (n - 1).bit_length())
    bits += bits & 1  # a balanced Feistel network needs an even width
    y = _feistel(ranks.astype(np.uint64), bits // 2)
    out = y >= np.uint64(n)
    # cycle-walking: a permutation of [0, 2^bits) restricted to [0, n) by re-applying
    # it until the value falls inside; the domain is < 4n: under 4 applications on average
    while out.any():
        y[out] = _feistel(y[out], bits // 2)
        out[out] = y[out] >= np.uint64(n)
    return y.astype(np.int64)


# -- the chooser ---------------------------------------------------------------------


class KeyChooser:
    """Seeded keys in ``[0, n_keys)`` by :class:`AccessConfig`'s law (module docstring).

    Thread-safe; one per worker with its own ``stream`` is the fast way.
    """

    def __init__(
        self,
        n_keys: int,
        access: AccessConfig,
        seed: int,
        stream: int = 0,
        *,
        scramble: bool = True,
    ) -> None:
        if int(n_keys) < 1:
            raise ValueError(f"n_keys must be >= 1, got {n_keys}")
        self.access = access
        self.scramble = scramble
        self._n = int(n_keys)
        self._rng = np.random.default_rng([int(seed) % _U64, int(stream) % _U64, _SEED_TAG])
        self._lock = threading.Lock()
        self._u = np.empty(0)  # the current chunk of uniforms
        self._upos = 0
        self._block_u = np.empty(0)  # next()'s converted block: its uniforms and keys
        self._block = np.empty(0, dtype=np.int64)
        self._blist: list[int] = []  # the same keys as Python ints: next() is on the hot path
        self._bpos = 0

    @property
    def n_keys(self) -> int:
        """The current size of the key space."""
        return self._n

    def grow(self, n_keys: int) -> None:
        """Enlarge the key space to ``n_keys`` (after inserts); later keys use it."""
        if int(n_keys) < self._n:
            raise ValueError(f"a key space only grows: {n_keys} < {self._n}")
        with self._lock:
            self._n = int(n_keys)
            # keys already converted but not handed out are redrawn from their uniforms
            self._block = self._keys(self._block_u) if len(self._block_u) else self._block
            self._blist = self._block.tolist()

    def next(self) -> int:
        """One key."""
        with self._lock:
            pos = self._bpos
            if pos >= len(self._blist):
                self._block_u = self._uniforms(_NEXT_BLOCK)
                self._block = self._keys(self._block_u)
                self._blist = self._block.tolist()
                pos = 0
            self._bpos = pos + 1
            return self._blist[pos]

    def stream(self) -> Iterator[int]:
        """An iterator over the same keys :meth:`next` would give, for one worker's hot
        path (no lock, no Python frame per key: ``next(it)`` is a C-level iterator).
        Not shared between threads."""
        blocks = iter(lambda: self.take(_NEXT_BLOCK).tolist(), None)  # endless
        return itertools.chain.from_iterable(blocks)

    def take(self, count: int) -> np.ndarray:
        """The next ``count`` keys, as int64 (the same keys ``count`` calls of
        :meth:`next` would give)."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        with self._lock:
            buffered = self._block[self._bpos : self._bpos + count]
            self._bpos += len(buffered)
            rest = self._keys(self._uniforms(count - len(buffered)))
            return np.concatenate([buffered, rest]).astype(np.int64, copy=False)

    def _uniforms(self, count: int) -> np.ndarray:
        parts = []
        while count > 0:
            if self._upos >= len(self._u):
                self._u = self._rng.random(_CHUNK)
                self._upos = 0
            part = self._u[self._upos : self._upos + count]
            self._upos += len(part)
            count -= len(part)
            parts.append(part)
        return np.concatenate(parts) if parts else np.empty(0)

    def _keys(self, u: np.ndarray) -> np.ndarray:
        a, n = self.access, self._n
        if a.distribution == "uniform":
            return np.minimum((u * n).astype(np.int64), n - 1)
        if a.distribution == "hotspot":
            return _hotspot(u, n, a.hot_fraction, a.hot_probability)
        ycsb = a.zipf_algorithm == "ycsb"
        if a.distribution == "latest":
            ranks = (_ycsb_ranks if ycsb else _exact_ranks)(u, n, a.theta)
            return n - 1 - ranks
        # zipfian
        if not self.scramble:
            return (_ycsb_ranks if ycsb else _exact_ranks)(u, n, a.theta)
        if ycsb:
            return _ycsb_scramble(_ycsb_ranks(u, max(n, YCSB_ITEM_COUNT), a.theta), n)
        return _permute(_exact_ranks(u, n, a.theta), n)


def _hotspot(u: np.ndarray, n: int, hot_fraction: float, p: float) -> np.ndarray:
    hot = int(n * hot_fraction)
    if hot == 0 or p == 0:
        lo, width = (0, n) if hot == 0 else (hot, n - hot)
        return np.minimum(lo + (u * width).astype(np.int64), lo + width - 1)
    if p == 1:
        return np.minimum((u * hot).astype(np.int64), hot - 1)
    # one uniform decides the set and, rescaled within its part, the key in it
    is_hot = u < p
    hot_key = np.minimum((u / p * hot).astype(np.int64), hot - 1)
    cold_key = hot + np.minimum(((u - p) / (1 - p) * (n - hot)).astype(np.int64), n - hot - 1)
    return np.where(is_hot, hot_key, cold_key)
