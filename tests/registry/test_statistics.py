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


# -- drift-aware statistics (issue 19): designs from the runs' times ----------------------
def _level(t, amplitude=0.10, period=60.0):
    """A machine whose level drifts slowly: ±amplitude over a period (seconds)."""
    return 1 + amplitude * np.sin(2 * np.pi * t / period)


def _interleaved(rng, n, base, cand, noise=0.01, trial_s=3.0, t0=0.0, drift=_level):
    """n pairs run A, B, A, B, ... (trial_s each) under drift: the two Samples."""
    tb = t0 + np.arange(n) * 2 * trial_s
    tc = tb + trial_s
    b = base * drift(tb) * rng.normal(1, noise, n)
    c = cand * drift(tc) * rng.normal(1, noise, n)
    reps = np.arange(n)
    return (
        Sample(b, starts=tb, ends=tb + trial_s * 0.95, repetitions=reps),
        Sample(c, starts=tc, ends=tc + trial_s * 0.95, repetitions=reps),
    )


def _blocked(rng, n, base, cand, noise=0.01, trial_s=3.0, step=0.0):
    """Side A's n runs, then side B's, with the machine's level moved by ``step`` between."""
    tb = np.arange(n) * trial_s
    tc = tb + n * trial_s
    b = base * rng.normal(1, noise, n)
    c = cand * (1 + step) * rng.normal(1, noise, n)
    return (
        Sample(b, starts=tb, ends=tb + trial_s * 0.95),
        Sample(c, starts=tc, ends=tc + trial_s * 0.95),
    )


def test_the_design_comes_from_the_runs_times():
    from benchflow.analysis.compare.design import pair_by_time

    rng = np.random.default_rng(0)
    b, c = _interleaved(rng, 5, 1000, 1000)
    assert compare_samples("c", "throughput", b, c, FAST, rng).design == "paired"
    b, c = _blocked(rng, 5, 1000, 1000)
    assert compare_samples("c", "throughput", b, c, FAST, rng).design == "blocked"
    plain = compare_samples("c", "throughput", Sample(b.values), Sample(c.values), FAST, rng)
    assert plain.design == "independent" and plain.pairs is None
    # each run with its neighbour in time, even when the candidate ran first in one pair
    tb, tc = np.array([0.0, 10.0, 21.0]), np.array([1.0, 9.0, 20.0])
    assert pair_by_time(tb, tc) == [(0, 0), (1, 1), (2, 2)]
    assert pair_by_time(np.array([0.0, 2.0]), np.array([1.0, 3.0, 9.0])) == [(0, 0), (1, 1)]


def test_paired_finds_a_10_percent_effect_from_5_pairs_under_drift_where_unpaired_cannot():
    """The machine drifts ±10% (a minute's period) while 5 pairs run; runs are 1% noisy.
    Paired by time, the drift cancels within each pair: +10% is found every time. Read
    as independent samples, the drift swamps it."""
    paired, unpaired = [], []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        b, c = _interleaved(rng, 5, 1000, 1100, t0=rng.uniform(0, 60))
        r = _verdict(b, c, seed=seed)
        assert r.design == "paired" and r.pairs == 5
        paired.append(r.verdict)
        unpaired.append(_verdict(Sample(b.values), Sample(c.values), seed=seed).verdict)
        assert 1.05 < r.ratio < 1.15
    assert paired.count(BETTER) == 30, paired
    assert unpaired.count(BETTER) <= 20, unpaired  # the same runs, time ignored


def test_interleaved_a_a_under_drift_gives_no_verdict():
    verdicts = []
    for seed in range(60):
        rng = np.random.default_rng(100 + seed)
        b, c = _interleaved(rng, 5, 1000, 1000, t0=rng.uniform(0, 60))
        verdicts.append(_verdict(b, c, seed=seed).verdict)
    assert verdicts.count(SAME) >= 57, {v: verdicts.count(v) for v in set(verdicts)}


def test_a_paired_p99_resamples_each_runs_requests():
    rng = np.random.default_rng(4)
    b, c = _p99_runs(rng, 2.0, 5), _p99_runs(rng, 2.4, 5)
    t = np.arange(5) * 6.0
    b = Sample(b.values, b.hists, 99.0, starts=t, ends=t + 2)
    c = Sample(c.values, c.hists, 99.0, starts=t + 3, ends=t + 5)
    r = _verdict(b, c, "latency_ms.p99")
    assert r.design == "paired" and r.resampling == "runs + requests"
    assert r.verdict == WORSE and r.ci_low > 1, r


def test_blocked_a_a_under_a_step_gives_no_verdict_and_says_why():
    """Between side A's block and side B's the machine's level moved by 6%: the
    statistics that ignore time call it (confidently); drift-aware, a blocked
    comparison without a calibration gives no verdict below its MDE."""
    naive = Settings(resamples=500, design="independent")
    for seed in range(20):
        rng = np.random.default_rng(seed)
        b, c = _blocked(rng, 5, 1000, 1000, step=0.06)
        assert _verdict(b, c, s=naive).verdict == BETTER  # the trap
        r = _verdict(b, c, seed=seed)
        assert r.design == "blocked"
        assert r.verdict == NO_DATA, r
        assert r.min_effect == r.mde and r.mde > 0.06
        assert "below the minimal detectable effect" in r.note and "calibrate" in r.note
        assert "no calibration" in r.drift_source


def test_blocked_with_a_calibration_widens_by_its_drift():
    from benchflow.analysis.compare import BlockPrior

    drifty, quiet = BlockPrior(0.04, "calibration x"), BlockPrior(0.0, "calibration y")
    for seed in range(20):
        rng = np.random.default_rng(seed)
        b, c = _blocked(rng, 5, 1000, 1000, step=0.06)
        row = compare_samples("c", "throughput", b, c, FAST, rng, prior=drifty)
        judge([row], FAST)
        assert row.verdict == SAME and row.min_effect is None, row
        assert row.drift == pytest.approx(0.04 * np.sqrt(2)) and row.drift_source == "calibration x"
        assert row.p_mannwhitney is None  # no rank test holds the between-block variance
        # a host calibrated as quiet: a real +15% between blocks is found
        b, c = _blocked(rng, 5, 1000, 1150)
        row = compare_samples("c", "throughput", b, c, FAST, rng, prior=quiet)
        judge([row], FAST)
        assert row.verdict == BETTER, row


def test_blocked_sides_with_a_trend_within_them_are_widened_by_it():
    """The level falls 1% per trial through both blocks: the trend within each side
    says how far apart the blocks' levels are, whatever the sides' difference."""
    rng = np.random.default_rng(2)
    t = np.arange(10) * 3.0
    level = 1 - 0.01 * np.arange(10)
    v = 1000 * level * rng.normal(1, 0.002, 10)
    b = Sample(v[:5], starts=t[:5], ends=t[:5] + 2.9)
    c = Sample(v[5:], starts=t[5:], ends=t[5:] + 2.9)
    s = Settings(resamples=500, block_cv=0.0)
    naive = _verdict(Sample(b.values), Sample(c.values), s=s)
    assert naive.verdict == WORSE  # -5% between the blocks, all of it drift
    r = _verdict(b, c, s=s)
    assert r.design == "blocked" and "within-side trend" in r.drift_source
    assert r.drift == pytest.approx(0.05, rel=0.3)
    assert r.verdict in (SAME, NO_DATA), r


def test_constant_rows_are_shown_and_left_out_of_benjamini_hochberg():
    rng = np.random.default_rng(11)
    s = Settings(resamples=300)
    rows = [
        compare_samples(f"c{i}", "throughput", _runs(rng, 1000, 5), _runs(rng, 1030, 5), s, rng)
        for i in range(6)
    ]
    zeros = compare_samples("c0", "errors.rate", Sample(np.zeros(5)), Sample(np.zeros(5)), s, rng)
    recall = compare_samples(
        "c0", "quality.recall_at_10", Sample(np.full(5, 0.9)), Sample(np.full(5, 0.95)), s, rng
    )
    # open-loop throughput pinned by the schedule: repetition k the same on both sides
    t = np.arange(5) * 6.0
    sched = np.array([350.2, 349.1, 351.0, 348.7, 350.4])
    pinned = compare_samples(
        "c0",
        "throughput",
        Sample(sched, starts=t, ends=t + 2),
        Sample(sched.copy(), starts=t + 3, ends=t + 5),
        s,
        rng,
    )
    tb = np.arange(5) * 3.0
    apart = compare_samples(
        "c0",
        "errors.rate",
        Sample(np.zeros(5), starts=tb, ends=tb + 2),
        Sample(np.zeros(5), starts=tb + 20, ends=tb + 22),
        s,
        rng,
    )
    judge([*rows, zeros, recall, pinned, apart], s)
    assert apart.design == "blocked" and apart.constant and apart.verdict == SAME
    assert apart.p_adjusted is None
    assert zeros.constant and zeros.p_adjusted is None and zeros.verdict == SAME
    assert "left out of the multiple-testing correction" in zeros.note
    assert recall.constant and recall.p_adjusted is None
    assert recall.verdict == BETTER and "deterministic" in recall.note
    assert pinned.constant and pinned.design == "paired" and pinned.verdict == SAME
    assert pinned.p_adjusted is None
    from scipy.stats import false_discovery_control

    raw = [r.p_welch for r in rows]
    assert np.allclose([r.p_adjusted for r in rows], false_discovery_control(raw, method="bh"))


def test_every_row_has_a_minimal_detectable_effect_that_shrinks_with_repetitions():
    from benchflow.analysis.compare.design import mde_blocked, mde_paired

    # the formula: (t(1-α/2, n-1) + t(0.8, n-1)) × SD/√n
    assert mde_paired(0.02, 5, 0.05) == pytest.approx(
        np.expm1((2.776 + 0.941) * 0.02 / 5**0.5), rel=1e-3
    )
    assert mde_paired(0.02, 3, 0.05) > mde_paired(0.02, 5, 0.05) > mde_paired(0.02, 10, 0.05)
    # blocked: more repetitions cannot beat the drift between blocks
    assert mde_blocked(0.02, 0.03, 10, 0.05) > np.expm1(2.8 * 0.03 * 2**0.5) * 0.95
    assert mde_blocked(0.02, 0.0, 10, 0.05) < mde_blocked(0.02, 0.03, 10, 0.05)

    def mean_mde(n, design):
        out = []
        for seed in range(40):
            rng = np.random.default_rng(seed)
            if design == "paired":
                b, c = _interleaved(rng, n, 1000, 1000, noise=0.02, drift=lambda t: 1.0)
            else:
                b, c = Sample(1000 * rng.normal(1, 0.02, n)), Sample(1000 * rng.normal(1, 0.02, n))
            out.append(_verdict(b, c, seed=seed).mde)
        return float(np.mean(out))

    for design in ("paired", "independent"):
        m3, m5, m10 = (mean_mde(n, design) for n in (3, 5, 10))
        assert m3 > m5 > m10 > 0, (design, m3, m5, m10)
    # 2% noise per run, pairs of two runs: SD of a pair's log-ratio ~2.8%; 10 pairs
    assert mean_mde(10, "paired") == pytest.approx(
        np.expm1((2.262 + 0.883) * 0.0283 / 10**0.5), rel=0.25
    )


def test_at_its_minimal_detectable_effect_a_change_is_found_about_80_percent_of_the_time():
    from benchflow.analysis.compare.design import mde_paired

    sd_pair = 0.02 * 2**0.5
    effect = mde_paired(sd_pair, 5, 0.05)
    s = Settings(resamples=200, floor=0.0)
    found = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        b, c = _interleaved(rng, 5, 1000, 1000 * (1 + effect), noise=0.02, drift=lambda t: 1.0)
        found += _verdict(b, c, s=s, seed=seed).verdict == BETTER
    assert 0.65 <= found / 200 <= 0.92, found
