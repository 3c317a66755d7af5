"""Trace replay input: requests with their start times (and lengths, and prompt
blocks) read from a file, streamed line by line in constant memory.

Formats (:class:`TraceConfig` ``format``; a gzip file, by its magic bytes, is read
transparently; blank lines are skipped):

- ``mooncake``: JSONL as Mooncake's published traces: one object per line with
  ``timestamp`` (milliseconds since the trace's start, non-decreasing; a number),
  ``input_length`` and ``output_length`` (tokens, integers >= 0, optional) and
  ``hash_ids`` (optional list of integers: one id per 512-token block of the prompt;
  requests that share a prefix share its first ids).
- ``csv``: a header line, then one request a row: ``offset_s`` (seconds) or
  ``timestamp_ms`` (milliseconds), required, non-decreasing; ``input_length``,
  ``output_length`` optional (an empty cell: unknown).

:func:`iter_trace` yields :class:`TraceRequest` records. The window
``[start_s, end_s)`` cuts the trace on its own unscaled time (reading stops at the
first request at or past ``end_s``, so later lines are not checked); the window's
start (``start_s``, or the first request's time without one) becomes offset 0, and
``offset_ns = round((t_ms - start_ms) * 1e6 * time_scale)``: ``time_scale = 0.5``
replays twice as fast. ``limit`` keeps the first requests only. A malformed trace
raises :class:`TraceError`, a ``ValueError`` whose message is
``"<path>:<line>: <what is wrong>"`` (``"<path>: ..."`` when the file cannot be read).

:func:`trace_sha256` is the SHA-256 of the file's bytes as stored (compressed, for a
``.gz``), streamed, for lineage. :func:`trace_summary` reads a (cut) trace once:
``count``; ``duration_s`` (the last offset, scaled: how long the replay lasts);
``rate`` (``count - 1`` over the time from the first request to the last: the inverse
of the mean gap; ``None`` under two requests or no time between them);
``mean_input_length`` and ``mean_output_length`` (over the requests that give them;
``None`` when none do); ``prefix_reuse_share`` (the share of requests with a hash id
seen in an earlier request) and ``block_reuse_share`` (the share of all hash ids that
were seen before: an upper bound of a prefix cache's block hit rate). It
keeps the set of hash ids seen: memory grows with the number of distinct ids.

:func:`generate_trace` writes a synthetic Mooncake-like trace (its docstring
gives the definition); ``SAMPLE_TRACE`` is the one this
package ships (300 requests at 50 req/s, seed 0). From a shell::

    python -m benchflow.workload.trace generate OUT --requests N --rate R --seed S [--format csv]
    python -m benchflow.workload.trace summary PATH [--format csv]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BLOCK_TOKENS",
    "SAMPLE_TRACE",
    "TraceConfig",
    "TraceError",
    "TraceRequest",
    "generate_trace",
    "iter_trace",
    "trace_sha256",
    "trace_summary",
]

SAMPLE_TRACE: Path = Path(__file__).resolve().parent / "data" / "sample_trace.jsonl"
BLOCK_TOKENS = 512  # tokens per hash id in Mooncake's traces
_GZIP_MAGIC = b"\x1f\x8b"
_U64 = 1 << 64  # seeds are taken modulo 2^64: numpy's seeding refuses negative numbers
_SEED_TAG = 0x7472616365  # "trace"
_CHUNK = 65_536


class TraceError(ValueError):
    """A trace that cannot be replayed; the message names the file and line."""


class TraceConfig(BaseModel):
    """Which trace to replay and which part of it, how fast."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="the trace file (.gz read as gzip); none: no trace")
    format: Literal["mooncake", "csv"] = Field(
        "mooncake", description="mooncake (JSONL: timestamp ms, lengths, hash_ids) or csv"
    )
    time_scale: float = Field(
        1.0, description="offsets are multiplied by it (> 0): 0.5 replays at twice the speed"
    )
    start_s: float | None = Field(
        None, description="replay from this time of the trace (seconds, unscaled); it is 0"
    )
    end_s: float | None = Field(
        None, description="replay up to (not including) this time of the trace (s, unscaled)"
    )
    limit: int | None = Field(None, description="replay at most this many requests (>= 1)")

    @model_validator(mode="after")
    def _check(self) -> TraceConfig:
        if not (self.time_scale > 0 and math.isfinite(self.time_scale)):
            raise ValueError(f"time_scale must be a number > 0, got {self.time_scale}")
        if self.start_s is not None and not self.start_s >= 0:
            raise ValueError(f"start_s must be >= 0, got {self.start_s}")
        if self.end_s is not None and not self.end_s > (self.start_s or 0):
            raise ValueError(f"end_s must be > start_s ({self.start_s or 0}), got {self.end_s}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        return self


@dataclass(frozen=True, slots=True)
class TraceRequest:
    """One request of a trace.

    ``offset_ns``: its intended start from the phase's start (window start = 0, after
    ``time_scale``); lengths are ``None`` where the trace does not give them;
    ``line``: its 1-based line number in the file.
    """

    index: int
    offset_ns: int
    input_length: int | None
    output_length: int | None
    hash_ids: tuple[int, ...]
    line: int


def _open(path: str) -> IO[str]:
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == _GZIP_MAGIC
        if gz:
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
        return open(path, encoding="utf-8", newline="")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read the trace: {exc.strerror or exc}") from None


def _int_field(value: Any, name: str, path: str, line: int) -> int | None:
    if type(value) is int and value >= 0:  # the usual case, first: this runs per line
        return value
    if value is None or value == "":
        return None
    shown = value
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            value = None
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and float(value).is_integer()
    )
    if not ok:
        raise TraceError(f"{path}:{line}: {name} must be an integer, got {shown!r}")
    if value < 0:
        raise TraceError(f"{path}:{line}: {name} must be >= 0, got {shown!r}")
    return int(value)


def _time_ms(value: Any, name: str, path: str, line: int, to_ms: float) -> float:
    if (type(value) is int or type(value) is float) and 0 <= value < math.inf:
        return value * to_ms
    if value is None or value == "":
        raise TraceError(f"{path}:{line}: missing {name}")
    shown = value
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TraceError(f"{path}:{line}: {name} must be a number, got {shown!r}")
    if value < 0:
        raise TraceError(f"{path}:{line}: {name} must be >= 0, got {shown!r}")
    return value * to_ms


_INT_ONLY = {int}


def _hash_ids(ids: Any, path: str, line: int) -> tuple[int, ...]:
    if ids is None:
        return ()
    # set(map(type, ...)) runs in C: much cheaper per id than a Python loop
    if type(ids) is list and (not ids or set(map(type, ids)) == _INT_ONLY):
        return tuple(ids)
    raise TraceError(f"{path}:{line}: hash_ids must be a list of integers, got {ids!r}")


def _rows(path: str, fmt: str, f: IO[str]) -> Iterator[tuple[int, float, Any, Any, Any]]:
    """(line, time ms, input length, output length, hash ids) per request; the time
    is checked, the rest is left to the caller."""
    if fmt == "mooncake":
        loads = json.loads
        for line_no, line in enumerate(f, 1):
            try:
                obj = loads(line)
            except json.JSONDecodeError as exc:
                if not line.strip():
                    continue
                raise TraceError(f"{path}:{line_no}: not JSON: {exc.msg}") from None
            if type(obj) is not dict:
                raise TraceError(f"{path}:{line_no}: a request must be a JSON object")
            if "timestamp" not in obj:
                raise TraceError(f"{path}:{line_no}: missing timestamp (milliseconds)")
            t = _time_ms(obj["timestamp"], "timestamp", path, line_no, 1.0)
            yield line_no, t, obj.get("input_length"), obj.get("output_length"), obj.get("hash_ids")
        return
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None:
        raise TraceError(f"{path}:1: empty CSV (a header line is needed)")
    cols = {name.strip(): i for i, name in enumerate(header)}
    if "offset_s" in cols:
        t_col, t_name, to_ms = cols["offset_s"], "offset_s", 1000.0
    elif "timestamp_ms" in cols:
        t_col, t_name, to_ms = cols["timestamp_ms"], "timestamp_ms", 1.0
    else:
        raise TraceError(f"{path}:1: the header needs offset_s or timestamp_ms, got {header}")
    i_col, o_col = cols.get("input_length"), cols.get("output_length")

    def cell(row: list[str], i: int | None) -> str | None:
        return row[i].strip() if i is not None and i < len(row) else None

    for row in reader:
        if not row or not any(c.strip() for c in row):
            continue
        n = reader.line_num
        t = _time_ms(cell(row, t_col), t_name, path, n, to_ms)
        yield n, t, cell(row, i_col), cell(row, o_col), None


def iter_trace(cfg: TraceConfig) -> Iterator[TraceRequest]:
    """The requests of ``cfg``'s trace (window, scale and limit applied), streamed.

    Raises :class:`TraceError` (a ``ValueError``) on a malformed line, naming the file
    and the 1-based line.
    """
    if cfg.path is None:
        raise TraceError("no trace: trace.path is not set")
    path = os.fspath(cfg.path)
    start_ms = None if cfg.start_s is None else cfg.start_s * 1000.0
    end_ms = None if cfg.end_s is None else cfg.end_s * 1000.0
    ns_per_ms = 1e6 * cfg.time_scale
    limit = cfg.limit or -1
    f = _open(path)
    with f:
        base = start_ms
        last = -math.inf
        index = line_no = 0
        try:
            for line_no, t, inp, out, ids in _rows(path, cfg.format, f):
                if t < last:
                    raise TraceError(
                        f"{path}:{line_no}: timestamps must not decrease: "
                        f"{t:g} ms after {last:g} ms"
                    )
                last = t
                if start_ms is not None and t < start_ms:
                    continue
                if end_ms is not None and t >= end_ms:
                    return
                if base is None:
                    base = t
                yield TraceRequest(
                    index,
                    round((t - base) * ns_per_ms),
                    _int_field(inp, "input_length", path, line_no),
                    _int_field(out, "output_length", path, line_no),
                    _hash_ids(ids, path, line_no),
                    line_no,
                )
                index += 1
                if index == limit:
                    return
        except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
            # a truncated gzip, bytes that are not UTF-8: where reading stopped
            raise TraceError(f"{path}: cannot read the trace after line {line_no}: {exc}") from None


def trace_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of the file's bytes as stored, read in 1 MiB blocks."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    except OSError as exc:
        raise TraceError(f"{path}: cannot read the trace: {exc.strerror or exc}") from None
    return h.hexdigest()


def trace_summary(cfg: TraceConfig) -> dict[str, float | int | None]:
    """One streamed pass over the (cut, scaled) trace: count, duration_s, rate,
    mean lengths and prefix reuse (module docstring)."""
    count = 0
    first_ns = last_ns = 0
    sums = {"input": [0, 0], "output": [0, 0]}  # [sum, how many gave it]
    seen: set[int] = set()
    reused_requests = blocks = reused_blocks = 0
    for r in iter_trace(cfg):
        if count == 0:
            first_ns = r.offset_ns
        count += 1
        last_ns = r.offset_ns
        for key, v in (("input", r.input_length), ("output", r.output_length)):
            if v is not None:
                sums[key][0] += v
                sums[key][1] += 1
        again = sum(1 for h in r.hash_ids if h in seen)
        reused_requests += again > 0
        blocks += len(r.hash_ids)
        reused_blocks += again
        seen.update(r.hash_ids)
    span = (last_ns - first_ns) / 1e9
    return {
        "count": count,
        "duration_s": last_ns / 1e9,
        "rate": (count - 1) / span if count > 1 and span > 0 else None,
        "mean_input_length": sums["input"][0] / sums["input"][1] if sums["input"][1] else None,
        "mean_output_length": (
            sums["output"][0] / sums["output"][1] if sums["output"][1] else None
        ),
        "prefix_reuse_share": reused_requests / count if count else None,
        "block_reuse_share": reused_blocks / blocks if blocks else None,
    }


def generate_trace(
    path: str | os.PathLike,
    *,
    requests: int,
    rate: float,
    seed: int,
    fmt: Literal["mooncake", "csv"] = "mooncake",
    burstiness: float = 1.0,
    prefix_groups: int = 8,
    shared_blocks: tuple[int, int] = (1, 4),
    blocks_per_prompt: tuple[int, int] = (2, 8),
    output_length: tuple[int, int] = (16, 128),
    zipf_theta: float = 1.1,
    block_tokens: int = BLOCK_TOKENS,
) -> Path:
    """Write a synthetic Mooncake-like trace of ``requests`` requests; return its path.

    - Arrivals: the first at 0, then gaps ~ Gamma(shape=burstiness,
      scale=1/(rate*burstiness)): mean ``1/rate``, squared coefficient of variation
      ``1/burstiness`` (vLLM's ``--burstiness``; 1 is Poisson).
    - Shared prefixes: ``prefix_groups`` groups, each with a prefix of ``P_g`` blocks,
      ``P_g`` uniform on ``shared_blocks`` (inclusive); a request joins group ``g``
      with probability ∝ ``(g+1)^-zipf_theta``.
    - A request has ``B`` blocks, uniform on ``blocks_per_prompt`` (inclusive): its
      group's first ``min(P_g, B-1)`` prefix ids, then ids of its own (a counter past
      the prefixes'), so no two requests are identical.
    - ``input_length = B*block_tokens - j``, ``j`` uniform on ``[0, block_tokens)`` (a
      partial last block); ``output_length`` uniform on its range (inclusive).

    Mooncake format: ``timestamp`` in milliseconds, rounded to the microsecond (3
    decimals). CSV: ``offset_s,input_length,output_length`` (6 decimals). The same
    arguments give the same bytes; drawn in chunks, so memory stays constant whatever ``requests``.
    """
    if requests < 0 or not rate > 0 or not burstiness > 0 or prefix_groups < 1:
        raise ValueError("requests >= 0, rate > 0, burstiness > 0, prefix_groups >= 1 needed")
    if fmt not in ("mooncake", "csv"):
        raise ValueError(f"fmt must be mooncake or csv, got {fmt!r}")
    lo_b, hi_b = blocks_per_prompt
    lo_s, hi_s = shared_blocks
    if not (1 <= lo_b <= hi_b and 0 <= lo_s <= hi_s and output_length[0] <= output_length[1]):
        raise ValueError("ranges must be (low, high) with low <= high (blocks >= 1)")
    rng = np.random.default_rng([int(seed) % _U64, _SEED_TAG])
    prefix_len = rng.integers(lo_s, hi_s, size=prefix_groups, endpoint=True)
    starts = np.concatenate([[0], np.cumsum(prefix_len)])  # group g: ids starts[g]..
    next_id = int(starts[-1])
    prefix_len_l, starts_l = prefix_len.tolist(), starts.tolist()
    weights = np.arange(1, prefix_groups + 1, dtype=np.float64) ** -zipf_theta
    weights /= weights.sum()
    out = Path(path)
    t = 0.0  # seconds
    opener = gzip.open if out.suffix == ".gz" else open
    with opener(out, "wt", encoding="utf-8", newline="") as f:
        if fmt == "csv":
            f.write("offset_s,input_length,output_length\n")
        done = 0
        while done < requests:
            m = min(_CHUNK, requests - done)
            gaps = rng.gamma(burstiness, 1.0 / (rate * burstiness), size=m)
            if done == 0:
                gaps[0] = 0.0  # the first request starts the trace
            times = t + np.cumsum(gaps)
            t = float(times[-1])
            groups = rng.choice(prefix_groups, size=m, p=weights)
            n_blocks = rng.integers(lo_b, hi_b, size=m, endpoint=True)
            partial = rng.integers(0, block_tokens, size=m)
            outs = rng.integers(output_length[0], output_length[1], size=m, endpoint=True)
            # plain lists and f-strings: numpy scalars and json.dumps cost ~3x per line
            times_l = times.tolist()
            ts_ms = [round(x * 1000.0, 3) for x in times_l]
            groups_l, blocks_l = groups.tolist(), n_blocks.tolist()
            partial_l, outs_l = partial.tolist(), outs.tolist()
            lines = []
            for i in range(m):
                b, g = blocks_l[i], groups_l[i]
                shared = min(prefix_len_l[g], b - 1)
                own = b - shared
                inp = b * block_tokens - partial_l[i]
                if fmt == "csv":
                    lines.append(f"{times_l[i]:.6f},{inp},{outs_l[i]}\n")
                else:  # the bytes json.dumps writes
                    ids = [*range(starts_l[g], starts_l[g] + shared)]
                    ids += range(next_id, next_id + own)
                    id_list = ", ".join(map(str, ids))
                    lines.append(
                        f'{{"timestamp": {ts_ms[i]!r}, "input_length": {inp}, '
                        f'"output_length": {outs_l[i]}, "hash_ids": [{id_list}]}}\n'
                    )
                next_id += own
            f.writelines(lines)
            done += m
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchflow.workload.trace generate|summary ...``."""
    ap = argparse.ArgumentParser(prog="python -m benchflow.workload.trace")
    sub = ap.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write a synthetic Mooncake-like trace")
    g.add_argument("out", help="the file to write (.gz: gzip)")
    g.add_argument("--requests", type=int, required=True)
    g.add_argument("--rate", type=float, required=True, help="mean requests per second")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--format", choices=("mooncake", "csv"), default="mooncake")
    g.add_argument("--burstiness", type=float, default=1.0, help="gamma shape; 1: Poisson")
    g.add_argument("--prefix-groups", type=int, default=8)
    s = sub.add_parser("summary", help="count, duration, rate, lengths, prefix reuse")
    s.add_argument("path")
    s.add_argument("--format", choices=("mooncake", "csv"), default="mooncake")
    args = ap.parse_args(argv)
    try:
        if args.command == "generate":
            out = generate_trace(
                args.out,
                requests=args.requests,
                rate=args.rate,
                seed=args.seed,
                fmt=args.format,
                burstiness=args.burstiness,
                prefix_groups=args.prefix_groups,
            )
            print(out)
        else:
            summary = trace_summary(TraceConfig(path=args.path, format=args.format))
            print(json.dumps({"sha256": trace_sha256(args.path), **summary}, indent=2))
    except ValueError as exc:  # TraceError included
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
