"""Trace replay input: round trips through the generator, windows and scaling,
formats, malformed lines, lineage hashes, the shipped sample, streaming."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from pydantic import ValidationError

from benchflow.workload.trace import (
    SAMPLE_TRACE,
    TraceConfig,
    TraceError,
    generate_trace,
    iter_trace,
    main,
    trace_sha256,
    trace_summary,
)


def read(path, **kw):
    return list(iter_trace(TraceConfig(path=str(path), **kw)))


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "t.jsonl"
    generate_trace(path, requests=2000, rate=100, seed=7)
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    return path, raw


def test_round_trip(trace):
    path, raw = trace
    got = read(path)
    assert len(got) == len(raw) == 2000
    ts = np.array([r["timestamp"] for r in raw])
    offsets = np.array([r.offset_ns for r in got])
    assert (np.diff(offsets) >= 0).all() and offsets[0] == 0
    assert np.array_equal(offsets, np.round((ts - ts[0]) * 1e6).astype(np.int64))
    for i, (r, rec) in enumerate(zip(got, raw, strict=True)):
        assert (r.index, r.line) == (i, i + 1)
        assert r.input_length == rec["input_length"]
        assert r.output_length == rec["output_length"]
        assert r.hash_ids == tuple(rec["hash_ids"])
        assert (len(r.hash_ids) - 1) * 512 < r.input_length <= len(r.hash_ids) * 512
        assert 16 <= r.output_length <= 128


def test_time_scale_scales_offsets(trace):
    path, _ = trace
    full = np.array([r.offset_ns for r in read(path)])
    half = np.array([r.offset_ns for r in read(path, time_scale=0.5)])
    assert np.abs(half - full / 2).max() <= 1


def test_window_and_limit(trace):
    path, raw = trace
    ts = np.array([r["timestamp"] for r in raw])
    got = read(path, start_s=5.0, end_s=10.0)
    inside = np.flatnonzero((ts >= 5000) & (ts < 10000))
    assert [r.line for r in got] == (inside + 1).tolist()
    assert [r.index for r in got] == list(range(len(inside)))
    expected = np.round((ts[inside] - 5000) * 1e6 * 2).astype(np.int64)  # base: start_s
    assert [r.offset_ns for r in read(path, start_s=5.0, end_s=10.0, time_scale=2)] == (
        expected.tolist()
    )
    limited = read(path, start_s=5.0, limit=7)
    assert [r.line for r in limited] == (inside[:7] + 1).tolist()
    # no start_s: the window starts at the first request kept
    assert read(path, end_s=1.0)[0].offset_ns == 0


def test_csv_format(tmp_path):
    path = tmp_path / "t.csv"
    generate_trace(path, requests=300, rate=20, seed=3, fmt="csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "offset_s,input_length,output_length"
    got = read(path, format="csv")
    assert len(got) == 300 and got[0].hash_ids == ()
    offs = np.array([float(line.split(",")[0]) for line in lines[1:]])
    assert [r.offset_ns for r in got] == np.round((offs - offs[0]) * 1e9).astype(int).tolist()
    assert got[5].input_length == int(lines[6].split(",")[1]) and got[5].line == 7
    ms = tmp_path / "ms.csv"
    ms.write_text("timestamp_ms,output_length\n100,5\n\n250,\n")
    got = read(ms, format="csv")
    assert [(r.offset_ns, r.input_length, r.output_length, r.line) for r in got] == [
        (0, None, 5, 2),
        (150_000_000, None, None, 4),
    ]


def test_gzip_reads_like_plain(tmp_path, trace):
    path, _ = trace
    gz = tmp_path / "t.jsonl.gz"
    generate_trace(gz, requests=2000, rate=100, seed=7)
    assert gzip.decompress(gz.read_bytes()) == path.read_bytes()
    assert read(gz) == read(path)
    renamed = tmp_path / "no_suffix"  # recognised by its magic bytes, not its name
    renamed.write_bytes(gz.read_bytes())
    assert read(renamed) == read(path)


BAD = [
    ('{"timestamp": 0}\n{"timestamp": 1}\n{"timestamp": 2,\n', "not JSON"),
    ('{"timestamp": 0}\n{"timestamp": 1}\n{"input_length": 5}\n', "missing timestamp"),
    ('{"timestamp": 0}\n{"timestamp": 10}\n{"timestamp": 9}\n', "must not decrease"),
    (
        '{"timestamp": 0}\n\n{"timestamp": 1, "input_length": 12.5}\n',
        "input_length must be an integer",
    ),
    (
        '{"timestamp": 0}\n{"timestamp": 1}\n{"timestamp": 2, "output_length": "x"}\n',
        "output_length must be an integer",
    ),
    ('{"timestamp": 0}\n{"timestamp": 1}\n{"timestamp": -2}\n', "timestamp must be >= 0"),
    ('{"timestamp": 0}\n{"timestamp": 1}\n{"timestamp": 2, "hash_ids": [1, "a"]}\n', "hash_ids"),
    ('{"timestamp": 0}\n{"timestamp": 1}\n[1, 2]\n', "JSON object"),
    ('{"timestamp": 0}\n{"timestamp": 1}\n{"timestamp": 2, "input_length": -1}\n', ">= 0"),
]


@pytest.mark.parametrize(("content", "what"), BAD)
def test_malformed_lines_name_the_file_and_line(tmp_path, content, what):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(TraceError) as err:
        read(path)
    assert f"{path}:3: " in str(err.value) and what in str(err.value)
    assert isinstance(err.value, ValueError)


def test_unreadable_traces(tmp_path):
    with pytest.raises(TraceError, match=r"missing\.jsonl: cannot read the trace"):
        read(tmp_path / "missing.jsonl")
    csv = tmp_path / "bad.csv"
    csv.write_text("time,input_length\n1,2\n")
    with pytest.raises(TraceError, match=r"bad.csv:1: .*offset_s or timestamp_ms"):
        read(csv, format="csv")
    csv.write_text("offset_s\n0.5\nsoon\n")
    with pytest.raises(TraceError, match=r"bad.csv:3: offset_s must be a number"):
        read(csv, format="csv")
    gz = tmp_path / "cut.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"timestamp": 0}\n' * 5000)[:200])
    with pytest.raises(TraceError, match=r"cut\.jsonl\.gz: cannot read the trace after line"):
        read(gz)
    with pytest.raises(TraceError, match=r"trace\.path"):
        list(iter_trace(TraceConfig()))


def test_sha256_is_of_the_bytes(trace):
    path, _ = trace
    assert trace_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_summary(tmp_path):
    path = tmp_path / "s.jsonl"
    rows = [
        {"timestamp": 0, "input_length": 100, "hash_ids": [1, 2]},
        {"timestamp": 500, "input_length": 300, "output_length": 10, "hash_ids": [1, 3]},
        {"timestamp": 1000, "output_length": 30, "hash_ids": [4]},
        {"timestamp": 2000, "hash_ids": [4, 1, 5]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = trace_summary(TraceConfig(path=str(path), time_scale=0.5))
    assert s == {
        "count": 4,
        "duration_s": 1.0,
        "rate": 3.0,
        "mean_input_length": 200.0,
        "mean_output_length": 20.0,
        "prefix_reuse_share": 0.5,
        "block_reuse_share": 3 / 8,
    }


def test_the_sample_trace_ships_and_is_the_generators():
    assert SAMPLE_TRACE.is_file() and SAMPLE_TRACE.parent.name == "data"
    got = list(iter_trace(TraceConfig(path=str(SAMPLE_TRACE))))
    assert len(got) == 300
    s = trace_summary(TraceConfig(path=str(SAMPLE_TRACE)))
    assert 40 < s["rate"] < 60 and s["prefix_reuse_share"] > 0.5


def test_the_sample_is_reproducible(tmp_path):
    again = generate_trace(tmp_path / "again.jsonl", requests=300, rate=50, seed=0)
    assert again.read_bytes() == SAMPLE_TRACE.read_bytes()


@pytest.mark.parametrize("burstiness", [0.5, 1.0, 4.0])
def test_generated_gaps_have_the_asked_burstiness(tmp_path, burstiness):
    path = tmp_path / "b.csv"  # CSV: no hash ids to write, and microsecond offsets
    generate_trace(path, requests=20_000, rate=50, seed=1, fmt="csv", burstiness=burstiness)
    gaps = np.diff([r.offset_ns for r in read(path, format="csv")]) / 1e9
    assert gaps.mean() == pytest.approx(1 / 50, rel=0.03)
    cv2 = gaps.var() / gaps.mean() ** 2
    assert cv2 == pytest.approx(1 / burstiness, rel=0.10)


def test_generated_requests_share_their_groups_prefixes(trace):
    path, _ = trace
    got = read(path)
    firsts = {r.hash_ids[0] for r in got}
    assert len(firsts) <= 8  # each request starts with its group's prefix
    counts = sorted((sum(r.hash_ids[0] == f for r in got) for f in firsts), reverse=True)
    assert counts[0] > 3 * counts[-1]  # popularity is Zipf-weighted
    # a request's own blocks are its alone
    last_ids = [r.hash_ids[-1] for r in got]
    assert len(set(last_ids)) == len(last_ids)


def test_streaming_keeps_memory_constant(tmp_path):
    path = tmp_path / "big.jsonl"
    generate_trace(path, requests=200_000, rate=1000, seed=2)
    assert path.stat().st_size > 15_000_000
    # Traced reading is ~6x slower, so the first 25,000 requests are read under
    # tracemalloc: reading the file whole would cost its 17 MB at once, keeping the
    # requests read ~7 MB; streaming costs one line and a read buffer.
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_trace(TraceConfig(path=str(path), limit=25_000)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 25_000
    assert peak < 2_000_000, f"peak {peak} bytes: the trace is not streamed"


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"time_scale": 0}, ["time_scale", "> 0"]),
        ({"start_s": 5, "end_s": 5}, ["end_s", "> start_s"]),
        ({"start_s": -1}, ["start_s", ">= 0"]),
        ({"limit": 0}, ["limit", ">= 1"]),
        ({"format": "parquet"}, ["format"]),
        ({"speed": 2}, ["speed", "Extra inputs"]),
    ],
)
def test_bad_trace_configs(fields, words):
    with pytest.raises(ValidationError) as err:
        TraceConfig(**fields)
    for w in words:
        assert w in str(err.value)


def test_cli_generates_the_same_trace(tmp_path, capsys):
    out = tmp_path / "cli.csv"
    assert (
        main(
            [
                "generate",
                str(out),
                "--requests",
                "50",
                "--rate",
                "10",
                "--seed",
                "1",
                "--format",
                "csv",
            ]
        )
        == 0
    )
    ref = generate_trace(tmp_path / "ref.csv", requests=50, rate=10, seed=1, fmt="csv")
    assert out.read_bytes() == ref.read_bytes()
    assert main(["summary", str(out), "--format", "csv"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["count"] == 50
    # as a module, with warnings as errors (the package must not import it first)
    proc = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-m",
            "benchflow.workload.trace",
            "generate",
            str(tmp_path / "m.jsonl"),
            "--requests",
            "5",
            "--rate",
            "1",
            "--seed",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(read(tmp_path / "m.jsonl")) == 5
