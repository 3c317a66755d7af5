"""The measurement core: histogram accuracy, merging, schedules, the engine."""

import asyncio
import time

import numpy as np
import pytest

from benchflow.load.engine import Engine, Phase
from benchflow.load.histogram import LogHistogram
from benchflow.load.recorder import Recording
from benchflow.load.schedule import Schedule

DISTRIBUTIONS = {
    "lognormal": lambda r, n: r.lognormal(13, 1.2, n),
    "bimodal": lambda r, n: np.concatenate(
        [r.normal(2e6, 1e5, n - n // 2), r.normal(9e7, 4e6, n // 2)]
    ),
    "exponential": lambda r, n: r.exponential(5e6, n) + 1e3,
    "constant": lambda r, n: np.full(n, 5_000_000.0),
    "tiny": lambda r, n: r.uniform(50, 400, n),
}
QS = [0, 1, 25, 50, 90, 95, 99, 99.9, 99.99, 100]


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
@pytest.mark.parametrize("n", [1, 7, 1000, 200_000])
def test_percentiles_match_numpy_within_the_stated_error(dist, n):
    rng = np.random.default_rng(n)
    x = np.maximum(DISTRIBUTIONS[dist](rng, n), 10.0)
    h = LogHistogram()
    h.record_many(x)
    for q in QS:
        exact = np.percentile(x, q, method="inverted_cdf")
        got = h.percentile(q)
        assert exact <= got * (1 + 1e-12), (q, exact, got)
        assert got <= exact * (1 + h.rel_error) * (1 + 1e-12), (q, exact, got)
    assert h.mean() == pytest.approx(x.mean(), rel=1e-9)
    assert (h.vmin, h.vmax) == (x.min(), x.max())


def test_merged_histograms_equal_one_histogram_of_all_samples():
    rng = np.random.default_rng(3)
    parts = [rng.lognormal(12 + i, 1, 5000) for i in range(4)]
    merged = LogHistogram()
    for p in parts:
        h = LogHistogram()
        h.record_many(p)
        merged.merge(LogHistogram.from_dict(h.to_dict()))
    whole = np.concatenate(parts)
    for q in QS:
        exact = np.percentile(whole, q, method="inverted_cdf")
        assert exact <= merged.percentile(q) <= exact * (1 + merged.rel_error) + 1e-6
    # never the average of the parts' percentiles
    avg_p99 = np.mean([np.percentile(p, 99) for p in parts])
    assert abs(merged.percentile(99) - avg_p99) / avg_p99 > 0.1


def test_same_seed_same_schedule_and_different_seed_different():
    for arrival in ("poisson", "constant"):
        a = Schedule(500, arrival, seed=7, duration_s=2).offsets()
        b = Schedule(500, arrival, seed=7, duration_s=2).offsets()
        assert np.array_equal(a, b) and len(a) == 1000
    c = Schedule(500, "poisson", seed=8, duration_s=2).offsets()
    assert not np.array_equal(a, c)
    const = Schedule(100, "constant", seed=0, duration_s=1).offsets()
    assert np.all(np.diff(const) == 10_000_000)
    # count-bounded Poisson: exponential gaps with the right mean
    gaps = np.diff(Schedule(1000, "poisson", seed=1, count=100_000).offsets()) / 1e9
    assert gaps.mean() == pytest.approx(1 / 1000, rel=0.02)
    assert np.std(gaps) == pytest.approx(1 / 1000, rel=0.05)


class _Driver:
    def __init__(self, op):
        self.operation = op

    def open_worker(self, w):
        return None

    def close_worker(self, s):
        pass

    def classify_error(self, exc):
        return type(exc).__name__


def test_closed_loop_count_bounded_and_errors_by_class():
    calls = []

    def op(ctx):
        calls.append(ctx.seq)
        if len(calls) % 10 == 0:
            raise ValueError("every tenth")
        return 3

    (rec,) = Engine(_Driver(op), concurrency=2).run([Phase("m", 2, requests=500)])
    assert rec.total == 500 and rec.ok == 450
    assert rec.errors == {"ValueError": 50} and rec.size_ok == 1350
    assert rec.hist["latency"].count == 450


def test_stalled_sut_is_abandoned_and_counted_as_timeouts():
    def op(ctx):
        if ctx.seq >= 5:
            time.sleep(30)  # the SUT stops answering
        return 1

    t0 = time.monotonic()
    (rec,) = Engine(_Driver(op), concurrency=2, stall_timeout_s=1).run(
        [Phase("m", 2, duration_s=60)]
    )
    assert time.monotonic() - t0 < 10
    assert rec.abandoned and rec.timeouts == 2 and rec.ok >= 5


def test_async_open_loop_keeps_the_rate_and_latency_from_intended_time():
    async def op(ctx):
        await asyncio.sleep(0.002)
        return 1

    (rec,) = Engine(_Driver(op), concurrency=16).run(
        [Phase("m", 16, duration_s=2, rate=300, arrival="constant")]
    )
    assert rec.achieved_rate() == pytest.approx(300, rel=0.02)
    assert rec.hist["latency"].percentile(50) >= 2e6


def test_first_byte_and_driver_histograms():
    def op(ctx):
        ctx.first_byte()
        ctx.observe("gap", 1_000_000)
        return 1

    (rec,) = Engine(_Driver(op), concurrency=1).run([Phase("m", 1, requests=200)])
    assert rec.hist["ttfb"].count == 200
    assert rec.hist["x.gap"].count == 200 and rec.hist["x.gap"].percentile(50) >= 1e6


def test_per_second_series_cover_whole_seconds_only():
    (rec,) = Engine(_Driver(lambda ctx: 1), concurrency=1).run([Phase("m", 1, duration_s=2.5)])
    rows = rec.per_second()
    assert [r["second"] for r in rows] == [0, 1]
    assert all(r["ok"] > 0 and r["p50_ms"] <= r["p99_ms"] for r in rows)


def test_recordings_merge_counts_and_series():
    a = Engine(_Driver(lambda ctx: 1), 1).run([Phase("m", 1, duration_s=1)])[0]
    b = Engine(_Driver(lambda ctx: 2), 1).run([Phase("m", 1, duration_s=1)])[0]
    total = a.ok + b.ok
    m = Recording().merge(a).merge(b)
    assert m.ok == total and m.sec_ok.sum() == a.sec_ok.sum() + b.sec_ok.sum()
    assert m.hist["latency"].count == total


def _columns(rng, n: int, closed: bool) -> dict[str, np.ndarray]:
    intended = np.sort(rng.integers(0, 10**10, n)).astype(np.int64)
    start = intended if closed else intended + rng.integers(0, 10**5, n)
    return {
        "intended": intended,
        "start": start,
        "first_byte": np.where(rng.random(n) < 0.5, start + rng.integers(1, 1000, n), 0),
        "end": start + rng.integers(1, 10**7, n),
        "size": rng.integers(0, 100, n),
        "code": np.where(rng.random(n) < 0.1, rng.integers(1, 3, n), 0).astype(np.int16),
        "cls": rng.integers(0, 3, n).astype(np.int16),
    }


@pytest.mark.parametrize("closed", [True, False])
def test_each_class_and_stage_recording_equals_one_folded_from_its_rows_alone(closed):
    """The fold buckets a batch once and hands each class and stage its rows (sorted by
    class, sliced); what it keeps per class and per stage must be exactly what a
    recording of only those requests keeps."""
    rng = np.random.default_rng(7)
    edges = [0, 3 * 10**9, 7 * 10**9]
    names = ["get", "put", "list"]
    rec = Recording(window_ns=10**10, class_names=names, stage_starts_ns=edges)
    batches = [_columns(rng, 4000, closed) for _ in range(4)]
    for c in batches:
        rec.fold({k: v.copy() for k, v in c.items()}, {}, ["ok", "refused", "timeout"])
    for key, sel, t0 in [
        *((f"classes.{n}", lambda c, k=k: c["cls"] == k, 0) for k, n in enumerate(names)),
        *(
            (
                f"stages.{k}",
                lambda c, k=k: np.searchsorted(edges[1:], c["intended"], "right") == k,
                e,
            )
            for k, e in enumerate(edges)
        ),
    ]:
        alone = Recording(window_ns=rec.subs[key].window_ns)
        for c in batches:
            part = {n: v[sel(c)] for n, v in c.items()}
            for n in ("intended", "start", "end"):
                part[n] = part[n] - t0
            part["first_byte"] = np.where(part["first_byte"] > 0, part["first_byte"] - t0, 0)
            alone.fold(part, {}, ["ok", "refused", "timeout"])
        sub = rec.subs[key]
        for name, h in alone.hist.items():
            assert np.array_equal(h.counts, sub.hist[name].counts), (key, name)
            assert (h.count, h.vmin, h.vmax) == (
                sub.hist[name].count,
                sub.hist[name].vmin,
                sub.hist[name].vmax,
            )
            assert h.total == pytest.approx(sub.hist[name].total, rel=1e-12)
        for f in ("ok", "size_ok", "errors", "timeouts", "started", "ended_in_window"):
            assert getattr(alone, f) == getattr(sub, f), (key, f)
        for f in ("sec_ok", "sec_err", "sec_size", "sec_start"):
            assert np.array_equal(getattr(alone, f), getattr(sub, f)), (key, f)
    # and the totals are every row's
    assert rec.started == 16000 == sum(rec.subs[f"classes.{n}"].started for n in names)
