"""Length distributions: input and output tokens, object and value sizes.

:class:`LengthSampler` draws integer lengths by :class:`LengthConfig`'s
``distribution``; every draw is rounded to the nearest integer, then clipped to
``[min, max]``:

- ``fixed``: ``mean`` every time.
- ``uniform``: integers uniform on ``[floor(mean*(1-r)), ceil(mean*(1+r))]``, both
  ends included, ``r = range_ratio`` (vLLM ``benchmark_serving``'s
  ``--random-range-ratio``).
- ``normal``: ``Normal(mean, std)``.
- ``lognormal``: ``exp(Normal(mu, sigma))`` with ``sigma^2 = ln(1 + std^2/mean^2)`` and
  ``mu = ln(mean) - sigma^2/2``, so that the lengths themselves have mean ``mean``
  and standard deviation ``std``.
- ``empirical``: resampling with replacement from the lengths in a file (``path``):
  JSONL, one number or one object per line (``column`` names its field), or CSV with
  a header (``column`` names the column; optional when there is one). The file is
  read once per process and kept as an int64 array (8 bytes a length), shared by
  every sampler of the same file.

Determinism: the lengths are a function of ``(config, seed, stream)`` and of the
sequence of ``take`` counts (``numpy.random.default_rng([seed, stream, 0x6C656E73])``,
seed and stream modulo 2^64).

:func:`summarize` gives a trial's result the lengths it drew: ``count``, ``mean``,
``std`` (population, ``ddof=0``), ``min``, ``p50``, ``p90``, ``p99`` (numpy's linear
interpolation), ``max``; plain Python numbers, ``None`` for the statistics of an
empty array.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["LengthConfig", "LengthSampler", "load_lengths", "summarize"]

_U64 = 1 << 64  # seeds are taken modulo 2^64: numpy's seeding refuses negative numbers
_SEED_TAG = 0x6C656E73  # "lens"


class LengthConfig(BaseModel):
    """How long requests are (tokens, bytes): the law :class:`LengthSampler` draws by."""

    model_config = ConfigDict(extra="forbid")

    distribution: Literal["fixed", "uniform", "normal", "lognormal", "empirical"] = Field(
        "fixed", description="fixed, uniform, normal, lognormal or empirical (from a file)"
    )
    mean: float | None = Field(None, description="the mean length (> 0); all but empirical need it")
    range_ratio: float = Field(
        0.0,
        description="uniform: lengths on [mean*(1-r), mean*(1+r)], 0 <= r < 1 "
        "(vLLM's --random-range-ratio)",
    )
    std: float | None = Field(
        None, description="normal and lognormal: the standard deviation of the lengths (> 0)"
    )
    min: int = Field(1, description="the smallest length drawn (lengths are clipped), >= 0")
    max: int | None = Field(None, description="the largest length drawn (clip); none: no cap")
    path: str | None = Field(None, description="empirical: a JSONL or CSV file of lengths")
    column: str | None = Field(
        None, description="empirical: the JSONL field or CSV column holding the length"
    )

    @model_validator(mode="after")
    def _check(self) -> LengthConfig:
        d = self.distribution
        if d == "empirical":
            if not self.path:
                raise ValueError("distribution=empirical needs path (a JSONL or CSV file)")
        elif self.mean is None or not (self.mean > 0 and math.isfinite(self.mean)):
            raise ValueError(f"mean must be a number > 0 for distribution={d}, got {self.mean}")
        if d in ("normal", "lognormal") and (
            self.std is None or not (self.std > 0 and math.isfinite(self.std))
        ):
            raise ValueError(f"distribution={d} needs std, a number > 0, got {self.std}")
        if not 0 <= self.range_ratio < 1:
            raise ValueError(f"range_ratio must be in [0, 1), got {self.range_ratio}")
        if self.min < 0:
            raise ValueError(f"min must be >= 0, got {self.min}")
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max must be >= min ({self.min}), got {self.max}")
        return self


class LengthSampler:
    """Seeded integer lengths by :class:`LengthConfig`'s law (module docstring)."""

    def __init__(self, cfg: LengthConfig, seed: int, stream: int = 0) -> None:
        self.cfg = cfg
        self._rng = np.random.default_rng([int(seed) % _U64, int(stream) % _U64, _SEED_TAG])
        empirical = cfg.distribution == "empirical"
        self._values = load_lengths(cfg.path, cfg.column) if empirical else None

    def take(self, count: int) -> np.ndarray:
        """The next ``count`` lengths, int64, each in ``[min, max]``."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        c, rng = self.cfg, self._rng
        if c.distribution == "fixed":
            raw = np.full(count, round(c.mean))
        elif c.distribution == "uniform":
            lo = math.floor(c.mean * (1 - c.range_ratio))
            hi = math.ceil(c.mean * (1 + c.range_ratio))
            raw = rng.integers(lo, hi, size=count, endpoint=True)
        elif c.distribution == "normal":
            raw = np.rint(rng.normal(c.mean, c.std, size=count))
        elif c.distribution == "lognormal":
            sigma2 = math.log1p((c.std / c.mean) ** 2)
            mu = math.log(c.mean) - sigma2 / 2
            raw = np.rint(rng.lognormal(mu, math.sqrt(sigma2), size=count))
        else:
            raw = self._values[rng.integers(0, len(self._values), size=count)]
        hi = np.inf if c.max is None else c.max
        return np.clip(raw, c.min, hi).astype(np.int64)


def load_lengths(path: str | os.PathLike, column: str | None = None) -> np.ndarray:
    """The lengths in a JSONL or CSV file (``.csv``: CSV, anything else: JSONL), as a
    read-only int64 array; read once per process and file version (path, size, mtime)."""
    p = Path(path).expanduser().resolve()
    try:
        st = p.stat()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read lengths: {exc.strerror or exc}") from None
    return _load(str(p), column, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=16)
def _load(path: str, column: str | None, _size: int, _mtime: int) -> np.ndarray:
    out: list[int] = []
    with open(path, newline="", encoding="utf-8") as f:
        if path.endswith(".csv"):
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise ValueError(f"{path}: empty CSV (a header line is needed)")
            if column is None and len(header) != 1:
                raise ValueError(f"{path}: several columns {header}: set column")
            col = header[0] if column is None else column
            if col not in header:
                raise ValueError(f"{path}:1: no column {col!r} in the header {header}")
            i = header.index(col)
            for row in reader:
                if row:
                    out.append(_length(row[i] if i < len(row) else "", path, reader.line_num))
        else:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{line_no}: not JSON: {exc.msg}") from None
                if isinstance(obj, dict):
                    if column is None or column not in obj:
                        raise ValueError(
                            f"{path}:{line_no}: an object needs column naming its length "
                            f"field (column={column!r}, fields: {sorted(obj)})"
                        )
                    obj = obj[column]
                out.append(_length(obj, path, line_no))
    if not out:
        raise ValueError(f"{path}: no lengths in the file")
    arr = np.array(out, dtype=np.int64)
    arr.setflags(write=False)
    return arr


def _length(value: object, path: str, line: int) -> int:
    if isinstance(value, str) and value.strip():
        with contextlib.suppress(ValueError):  # not a number: reported below as it is
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{path}:{line}: a length must be a number, got {value!r}")
    if not (math.isfinite(value) and float(value).is_integer() and value >= 0):
        raise ValueError(f"{path}:{line}: a length must be an integer >= 0, got {value!r}")
    return int(value)


def summarize(lengths: np.ndarray) -> dict[str, float | int | None]:
    """``count``, ``mean``, ``std`` (ddof=0), ``min``, ``p50``, ``p90``, ``p99``, ``max``
    of the lengths drawn, as plain Python numbers (``None`` when there are none)."""
    a = np.asarray(lengths, dtype=np.float64)
    keys = ("mean", "std", "min", "p50", "p90", "p99", "max")
    if a.size == 0:
        return {"count": 0, **dict.fromkeys(keys)}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    values = (a.mean(), a.std(), a.min(), p50, p90, p99, a.max())
    return {"count": int(a.size), **{k: float(v) for k, v in zip(keys, values, strict=True)}}
