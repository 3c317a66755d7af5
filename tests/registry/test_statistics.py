"""benchflow.analysis.compare on synthetic data with known answers (no MLflow: pure statistics)."""

import numpy as np
import pytest

from benchflow.analysis.compare import (
    BETTER,
    NO_DATA,
    SAME,
    WORSE,
    Sample,
    Settings,
    compare_samples,
    judge,
)
from benchflow.load.histogram import LogHistogram

FAST = Settings(resamples=500)


def _runs(rng, median, reps, sd=0.03):
    """Per-run throughputs: run-to-run noise of `sd` (relative)."""
    return Sample(median * rng.normal(1, sd, reps))


def _hist(rng, median_ms, n, sigma=0.4):
    h = LogHistogram()
    h.record_many(rng.lognormal(np.log(median_ms * 1e6), sigma, n))
    return h


def _p99_runs(rng, median_ms, reps, n=2000, sd=0.02):
    hs = [_hist(rng, median_ms * rng.normal(1, sd), n) for _ in range(reps)]
    return Sample([h.percentile(99) / 1e6 for h in hs], hs, 99.0)


def _verdict(base, cand, metric="throughput", s=FAST, seed=0):
    row = compare_samples("c", metric, base, cand, s, np.random.default_rng(seed))
    judge([row], s)
    return row


def test_identical_distributions_give_no_change_in_at_least_95_percent_of_seeds():
    verdicts = []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        r = _verdict(_runs(rng, 1000, 10), _runs(rng, 1000, 10), seed=seed)
        verdicts.append(r.verdict)
    assert verdicts.count(SAME) / len(verdicts) >= 0.95, {
        v: verdicts.count(v) for v in set(verdicts)
    }


def test_identical_latency_histograms_give_no_change_in_at_least_95_percent_of_seeds():
    verdicts = []
    for seed in range(40):
        rng = np.random.default_rng(1000 + seed)
        r = _verdict(_p99_runs(rng, 2.0, 5, n=500), _p99_runs(rng, 2.0, 5, n=500), "latency_ms.p99")
        verdicts.append(r.verdict)
    assert verdicts.count(SAME) / len(verdicts) >= 0.95


def test_a_10_percent_shift_with_10_repetitions_is_found():
    for seed in range(20):
        rng = np.random.default_rng(seed)
        up = _verdict(_runs(rng, 1000, 10), _runs(rng, 1100, 10), seed=seed)
        assert up.verdict == BETTER, (seed, up)
        assert 1.05 < up.ratio < 1.15 and up.ci_low > 1
        down = _verdict(_runs(rng, 1000, 10), _runs(rng, 900, 10), seed=seed)
        assert down.verdict == WORSE, (seed, down)


def test_a_10_percent_p99_regression_is_found_with_requests_resampled():
    rng = np.random.default_rng(7)
    r = _verdict(_p99_runs(rng, 2.0, 10), _p99_runs(rng, 2.2, 10), "latency_ms.p99")
    assert r.resampling == "runs + requests"
    assert r.verdict == WORSE and r.ci_low > 1, r


def test_a_shift_below_the_floor_is_no_change_even_when_significant():
    rng = np.random.default_rng(3)
    r = _verdict(_runs(rng, 1000, 10, sd=0.002), _runs(rng, 1010, 10, sd=0.002))
    assert r.p_adjusted < 0.05, "the 1% shift is statistically clear..."
    assert r.verdict == SAME and "below the 2% floor" in r.note  # ...but below the floor


def test_too_few_repetitions_is_said_with_the_numbers():
    rng = np.random.default_rng(0)
    r = _verdict(_runs(rng, 1000, 2), _runs(rng, 2000, 2))
    assert r.verdict == NO_DATA
    assert "2 vs 2 runs" in r.note and "at least 3" in r.note
    assert r.ratio == pytest.approx(2, rel=0.1) and r.median_baseline is not None


def test_benjamini_hochberg_adjusts_across_the_table():
    s = Settings(resamples=300)
    rng = np.random.default_rng(11)
    rows = [
        compare_samples(f"c{i}", "throughput", _runs(rng, 1000, 5), _runs(rng, 1000, 5), s, rng)
        for i in range(30)
    ]
    judge(rows, s)
    raw = np.array([r.p_welch for r in rows])
    adj = np.array([r.p_adjusted for r in rows])
    assert (adj >= raw - 1e-12).all() and (adj > raw).any()
    from scipy.stats import false_discovery_control

    assert np.allclose(adj, false_discovery_control(raw, method="bh"))


def test_the_percentile_draw_matches_resampling_the_requests():
    """Beta(k, n-k+1) order statistics == bootstrap of the run's own requests."""
    rng = np.random.default_rng(5)
    values = rng.lognormal(np.log(2e6), 0.6, 300)
    h = LogHistogram()
    h.record_many(values)
    sample = Sample([h.percentile(99) / 1e6], [h], 99.0)
    fast = sample.draw_percentile(0, 20000, rng)
    # the run's own requests, at the resolution the histogram keeps them
    requests = np.clip(h.upper_edge(h.bucket_of(values)), h.vmin, h.vmax)
    slow = (
        np.array(
            [
                np.percentile(rng.choice(requests, 300), 99, method="inverted_cdf")
                for _ in range(4000)
            ]
        )
        / 1e6
    )
    assert np.mean(fast) == pytest.approx(np.mean(slow), rel=0.02)
    assert np.std(fast) == pytest.approx(np.std(slow), rel=0.15)


def test_resampling_requests_widens_the_p99_interval_when_runs_are_short():
    rng = np.random.default_rng(9)
    base, cand = _p99_runs(rng, 2.0, 5, n=150), _p99_runs(rng, 2.0, 5, n=150)
    both = compare_samples("c", "latency_ms.p99", base, cand, FAST, np.random.default_rng(1))
    runs_only = compare_samples(
        "c",
        "latency_ms.p99",
        Sample(base.values),
        Sample(cand.values),
        FAST,
        np.random.default_rng(1),
    )
    assert both.ci_high - both.ci_low > runs_only.ci_high - runs_only.ci_low
