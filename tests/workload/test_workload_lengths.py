"""LengthSampler: each law's mean and spread, the bounds, resampling a file, and
configs that cannot work."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pydantic import ValidationError

from benchflow.workload.lengths import LengthConfig, LengthSampler, load_lengths, summarize

N = 100_000


def draw(seed: int = 0, stream: int = 0, count: int = N, **fields) -> np.ndarray:
    return LengthSampler(LengthConfig(**fields), seed=seed, stream=stream).take(count)


def test_fixed():
    x = draw(distribution="fixed", mean=128.4, count=10)
    assert x.tolist() == [128] * 10 and x.dtype == np.int64


def test_uniform_is_vllms_range_ratio():
    x = draw(distribution="uniform", mean=1000, range_ratio=0.5)
    assert x.min() == 500 and x.max() == 1500  # both ends drawn
    assert x.mean() == pytest.approx(1000, rel=0.01)
    assert x.std() == pytest.approx(math.sqrt((1001**2 - 1) / 12), rel=0.02)


def test_normal_mean_and_std():
    x = draw(distribution="normal", mean=500, std=50)
    assert x.mean() == pytest.approx(500, rel=0.005)
    assert x.std() == pytest.approx(50, rel=0.02)


def test_lognormal_mean_and_std_are_those_of_the_lengths():
    x = draw(distribution="lognormal", mean=1000, std=500)
    assert x.mean() == pytest.approx(1000, rel=0.02)
    assert x.std() == pytest.approx(500, rel=0.05)
    assert np.median(x) < x.mean()  # skewed right


def test_lengths_are_clipped_to_min_and_max():
    x = draw(distribution="normal", mean=100, std=100, min=20, max=150)
    assert x.min() == 20 and x.max() == 150
    y = draw(distribution="lognormal", mean=10, std=30)  # many would round to 0
    assert y.min() == 1


def test_empirical_resamples_only_values_of_its_file(tmp_path):
    values = [10, 20, 20, 20, 3000, 7]
    jsonl = tmp_path / "lengths.jsonl"
    jsonl.write_text("\n".join(json.dumps({"n": v, "other": "x"}) for v in values) + "\n\n")
    bare = tmp_path / "bare.jsonl"
    bare.write_text("\n".join(str(v) for v in values))
    csv = tmp_path / "lengths.csv"
    csv.write_text("id,tokens\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
    for path, column in ((jsonl, "n"), (bare, None), (csv, "tokens")):
        x = draw(distribution="empirical", path=str(path), column=column, count=60_000)
        assert set(np.unique(x).tolist()) == set(values)
        assert (x == 20).mean() == pytest.approx(0.5, abs=0.01)  # as often as in the file
    assert load_lengths(csv, "tokens").tolist() == values


@pytest.mark.parametrize(
    ("content", "column", "words"),
    [
        ('{"n": 1}\n{"n": 2.5}\n', "n", ["lengths.jsonl:2", "integer"]),
        ('{"n": 1}\n{"m": 2}\n', "n", ["lengths.jsonl:2", "column"]),
        ("1\nnot json\n", None, ["lengths.jsonl:2", "not JSON"]),
        ("", None, ["no lengths"]),
    ],
)
def test_empirical_file_errors_name_the_file_and_line(tmp_path, content, column, words):
    path = tmp_path / "lengths.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError) as err:
        LengthSampler(LengthConfig(distribution="empirical", path=str(path), column=column), 0)
    for w in words:
        assert w in str(err.value)
    with pytest.raises(ValueError, match="cannot read"):
        load_lengths(tmp_path / "missing.jsonl")


def test_deterministic_from_seed_and_stream():
    cfg = {"distribution": "lognormal", "mean": 300, "std": 100}
    assert np.array_equal(draw(seed=1, count=1000, **cfg), draw(seed=1, count=1000, **cfg))
    assert not np.array_equal(draw(seed=1, count=1000, **cfg), draw(seed=2, count=1000, **cfg))
    assert not np.array_equal(
        draw(seed=1, count=1000, **cfg), draw(seed=1, stream=1, count=1000, **cfg)
    )
    assert np.array_equal(draw(seed=-5, count=100, **cfg), draw(seed=2**64 - 5, count=100, **cfg))


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"distribution": "normal", "mean": 10}, ["std"]),
        ({"distribution": "lognormal", "mean": 10, "std": 0}, ["std", "> 0"]),
        ({"distribution": "uniform"}, ["mean", "> 0"]),
        ({"distribution": "fixed", "mean": -1}, ["mean", "> 0"]),
        ({"distribution": "uniform", "mean": 10, "range_ratio": 1}, ["range_ratio", "[0, 1)"]),
        ({"distribution": "empirical"}, ["path"]),
        ({"mean": 10, "min": 5, "max": 4}, ["max", "min"]),
        ({"mean": 10, "min": -1}, ["min", ">= 0"]),
        ({"mean": 10, "avg": 3}, ["avg", "Extra inputs"]),
    ],
)
def test_bad_configs_name_the_field(fields, words):
    with pytest.raises(ValidationError) as err:
        LengthConfig(**fields)
    for w in words:
        assert w in str(err.value)


def test_summarize():
    s = summarize(np.arange(1, 101))
    assert s == {
        "count": 100,
        "mean": 50.5,
        "std": pytest.approx(np.arange(1, 101).std()),
        "min": 1.0,
        "p50": 50.5,
        "p90": pytest.approx(90.1),
        "p99": pytest.approx(99.01),
        "max": 100.0,
    }
    assert all(type(v) in (int, float) for v in s.values())
    assert json.dumps(s)
    empty = summarize(np.array([], dtype=np.int64))
    assert empty["count"] == 0 and empty["mean"] is None and empty["p99"] is None
