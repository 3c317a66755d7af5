"""Issue 14, parts 3 and 4: a measured phase that ends once its percentiles are known
(``duration_s=auto``), the trend of the 1-second series, and offered vs completed load
with the saturation of an open-loop SUT.

The statistics are checked exactly first (no server); then real trials run through
``python -m benchflow`` against the ``sleep`` calibration server: its plain mode (a
fixed service time, every request served at once), its queue mode (``workers=1``: an
M/D/1 queue of capacity 1000/service_ms requests/s, kept in virtual time so that the
capacity is exact) and its drift mode (the service time follows a sine of the clock).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from benchflow.load.histogram import LogHistogram
from benchflow.load.precision import MIN_REL, binom_ppf, interval, rank_bounds
from benchflow.results import steady

# percentiles, trends and saturation of real trials are timing: each test runs alone
# on the machine (tests/fixtures/quiet.py)
pytestmark = pytest.mark.usefixtures("quiet_machine")

QUIET = ["progress=off", "monitor.interval_s=0.5"]


def _only_trial(workdir, scenario: str = "adhoc") -> dict:
    (tdir,) = workdir.trial_dirs(scenario)
    return workdir.metrics(tdir)


# -- the statistics, exactly ------------------------------------------------------------
def test_binomial_quantiles_are_exact():
    for n in (1, 2, 7, 40, 199):
        for q in (0.5, 0.9, 0.99):
            cdf = np.cumsum([math.comb(n, k) * q**k * (1 - q) ** (n - k) for k in range(n + 1)])
            for p in (0.025, 0.5, 0.975):
                want = int(np.searchsorted(cdf, p * (1 - 1e-12)))
                assert binom_ppf(p, n, q) == want, (n, q, p)
    # the classic table: the 95 % interval of the median of 100 samples is [X(40), X(61)]
    assert rank_bounds(100, 50, 0.95) == (40, 61)


def test_percentile_intervals_cover_the_true_quantile_at_their_confidence():
    """Lognormal samples, whose quantiles are known exactly: over 300 repetitions the
    95 % intervals of p50 and p99 hold the true value at least ~95 % of the time (bucket
    edges only widen them), and are about 10x narrower with 100x the samples."""
    rng = np.random.default_rng(14)
    mu, sigma = 15.0, 0.4
    z = {50: 0.0, 99: 2.3263478740408408}
    truth = {q: math.exp(mu + sigma * z[q]) for q in z}
    hits = {q: 0 for q in z}
    reps = 300
    for _ in range(reps):
        h = LogHistogram()
        h.record_many(rng.lognormal(mu, sigma, 2000))
        for q in z:
            iv = interval(h, q, 0.95)
            hits[q] += iv.low <= truth[q] <= iv.high
    for q in z:  # expected >= 0.95; 0.92 is 2.4 standard deviations of 300 draws below
        assert hits[q] / reps >= 0.92, (q, hits[q] / reps)
    widths = []
    for n in (400, 40_000):  # (at 10^6 samples the bucket edges, 0.1 % apart, dominate)
        w = []
        for _ in range(5):
            h = LogHistogram()
            h.record_many(rng.lognormal(mu, sigma, n))
            w.append(interval(h, 50, 0.95).rel_half_width)
        widths.append(np.mean(w))
    assert 7 < widths[0] / widths[1] < 13, widths
    # below its finite-interval minimum a percentile has no interval (not a zero one)
    h = LogHistogram()
    h.record_many(rng.lognormal(mu, sigma, 300))
    assert interval(h, 99, 0.95).rel_half_width is None
    assert 2 * h.rel_error == MIN_REL


def test_trend_sees_a_ramp_and_not_noise():
    rng = np.random.default_rng(1)
    flat = list(rng.poisson(200, 30).astype(float))
    ramp = [200 * (1 + 0.5 * s / 30) + rng.normal(0, 5) for s in range(30)]
    c_flat, ci_flat = steady.change(flat)
    c_ramp, ci_ramp = steady.change(ramp)
    assert abs(c_flat) - ci_flat < 0.10  # not flagged at the default limit
    assert c_ramp - ci_ramp > 0.10 and c_ramp == pytest.approx(0.5 * 30 / 30 / 1.25, rel=0.1)
    assert steady.change(flat[:4]) is None  # too short to judge
    assert steady.t_quantile(0.975, 10) == pytest.approx(2.228139, rel=1e-3)


# -- configuration ---------------------------------------------------------------------
BAD = [
    (["duration_s=auto", "precision.rel=0.0005"], ["precision.rel", "at least 0.002", "0.1%"]),
    (["duration_s=auto", "requests=100"], ["requests = 100", "set one of them"]),
    (["duration_s=soon"], ["duration_s", "'soon'", "or auto"]),
    (["duration_s=auto", "precision.percentiles=[p42]"], ["precision.percentiles", "p99"]),
    (["duration_s=auto", "precision.min_s=30", "precision.max_s=10"], ["precision.max_s"]),
]


@pytest.mark.parametrize(("overrides", "words"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_precision_config_exits_2_naming_the_key(workdir, overrides, words):
    proc = workdir.run(*overrides)
    assert proc.returncode == 2, proc.stderr
    msg = proc.stderr.strip().splitlines()[-1]
    for w in words:
        assert w in msg, msg


# -- precision-driven duration ---------------------------------------------------------
def test_auto_duration_agrees_with_a_long_trial_and_ends_sooner(workdir):
    """One sweep: ``duration_s=auto`` and a fixed 30 s trial of the same configuration
    (closed loop, 64 in flight, on the sleep server). The two trials have different
    config hashes; the auto one ends well before 30 s with its precision reached, and
    its p50 and p99 agree with the long trial's.

    The server draws each service time uniformly from [100, 300] ms
    (``service_dist=uniform``), so the latency distribution is the server's, as a real
    server's is, and its percentiles move between trials by sampling: what the
    precision claim is about. (With a constant service time the spread is the
    scheduler's jitter alone, and the tail follows the machine's load rather than the
    sample: on a loaded 2-core machine p99 of a constant 200 ms moved from 207 to
    220 ms between two trials a minute apart, in CI.) A few ms of jitter added to a
    100 ms-wide distribution moves its percentiles by about the jitter's mean, well
    under 1 %.

    Tolerance: each estimate lies within its own 95 % interval of the true percentile,
    ±2 % (the goal) for the auto trial and ±h (its reported half-width) for the long
    one, so the two differ by at most 2 % + h when both hold (each fails 5 % of the
    time); 1.5 x that bound is 2.9 standard errors of the difference (< 0.5 % of runs
    fail by chance), for two trials measuring one distribution."""
    proc = workdir.run(
        "-m",
        "service=sleep",
        "service.service_ms=200",
        "service.service_dist=uniform",
        "concurrency=64",
        "duration_s=auto,30",
        "precision.rel=0.02",
        "precision.min_s=3",
        "precision.max_s=60",
        "precision.percentiles=[p50,p99]",
        "warmup_s=2",
        *QUIET,
        timeout=900,
    )
    assert proc.returncode == 0, workdir.explain(proc)
    trials = [(workdir.meta(d), workdir.metrics(d)) for d in workdir.trial_dirs()]
    assert len(trials) == 2 and len({meta["config_hash"] for meta, _ in trials}) == 2
    (auto,) = [m for _, m in trials if m["load"]["precision"]["auto"]]
    (long,) = [m for _, m in trials if not m["load"]["precision"]["auto"]]
    pa, pl = auto["load"]["precision"], long["load"]["precision"]
    assert pa["stopped_by"] == "precision" and pa["reached"] is True, pa
    assert pa["judged"] == ["p50", "p99"] and pa["rel"] == 0.02
    assert pa["samples_at_stop"] <= pa["samples"]
    assert pa["measured_s"] < 30 and auto["load"]["duration_s"] == pa["measured_s"]
    assert auto["load"]["elapsed_s"] < 30
    assert pl["auto"] is False and pl["reached"] is None and pl["measured_s"] == 30
    for name in ("p50", "p99"):
        assert pa["percentiles"][name]["rel_half_width_at_stop"] <= 0.02
        # the final histogram adds the requests that completed after the last check (a
        # few % more samples): its interval is about as wide
        assert pa["percentiles"][name]["rel_half_width"] <= 0.025
        a, ref = auto["latency_ms"][name], long["latency_ms"][name]
        h = pl["percentiles"][name]["rel_half_width"]
        tol = 1.5 * (0.02 + h)
        assert abs(a / ref - 1) <= tol, (
            f"{name}: auto {a:.3f} ms vs 30 s {ref:.3f} ms (tolerance ±{tol:.1%}); "
            f"the long trial's validity: {long['validity']}"
        )


def test_unreachable_precision_runs_to_max_s_and_says_so(workdir):
    """At 5 requests/s a p99 cannot get a finite interval within 4 s (it needs 368
    samples): the phase runs to max_s and the trial is invalid, saying why."""
    workdir.run(
        "service=sleep",
        "service.service_ms=1",
        "rate=5",
        "concurrency=4",
        "duration_s=auto",
        "precision.min_s=1",
        "precision.max_s=4",
        "warmup_s=0",
        *QUIET,
        check=True,
    )
    m = _only_trial(workdir)
    p = m["load"]["precision"]
    assert p["stopped_by"] == "max_s" and p["reached"] is False and p["measured_s"] == 4
    assert p["percentiles"]["p99"]["rel_half_width"] is None
    assert m["load"]["duration_s"] == 4 and m["load"]["elapsed_s"] >= 4
    assert not m["validity"]["valid"]
    (why,) = [r for r in m["validity"]["reasons"] if r.startswith("precision not reached")]
    assert "by max_s" in why and "p99 has no finite interval yet" in why, why


# -- offered vs completed, saturation ----------------------------------------------------
QUEUE = ["service=sleep", "service.workers=1", "service.service_ms=5", "arrival=poisson"]


def test_open_loop_beyond_capacity_is_saturated_and_below_is_not(workdir):
    """The queue-mode server serves exactly 200 requests/s (5 ms each, one at a time).
    Offered 260/s (130 %) with an in-flight cap above the backlog the window builds up
    (60/s x 8 s), it completes ~200/s and the trial says the SUT saturated; offered
    100/s (50 %), it completes what it is offered and is not saturated."""
    workdir.run(
        *QUEUE, "rate=260", "concurrency=768", "duration_s=8", "warmup_s=0", *QUIET, check=True
    )
    m = _only_trial(workdir)
    load = m["load"]
    assert load["offered_rate"] == pytest.approx(260, rel=0.03)
    assert load["achieved_rate"] == pytest.approx(260, rel=0.05)  # what was sent, as before
    # the server's capacity is exact (virtual time): what it completes cannot exceed it,
    # and the queue keeps it busy from the first second on
    assert 200 * 0.9 <= load["completed_rate"] <= 200 * 1.02, load
    assert load["saturated"] is True and load["steady"] is False
    assert not m["validity"]["valid"]
    reasons = m["validity"]["reasons"]
    assert any(r.startswith("completed ") and "the SUT saturated" in r for r in reasons), reasons
    assert any(r.startswith("p50 latency rose") for r in reasons), reasons  # the queue grows

    workdir.run(
        *QUEUE,
        "rate=100",
        "concurrency=32",
        "duration_s=8",
        "warmup_s=1",
        "scenario=below",
        *QUIET,
        check=True,
    )
    m = _only_trial(workdir, "below")
    load = m["load"]
    assert load["offered_rate"] == pytest.approx(100, rel=0.03)
    assert load["completed_rate"] == pytest.approx(100, rel=0.05)
    assert load["saturated"] is False
    assert not any("saturated" in r for r in m["validity"]["reasons"])


def test_closed_loop_is_never_judged_saturated(workdir):
    workdir.run(*QUEUE, "concurrency=4", "duration_s=5", "warmup_s=0.5", *QUIET, check=True)
    load = _only_trial(workdir)["load"]
    assert load["saturated"] is None
    assert load["offered_rate"] == pytest.approx(load["completed_rate"], abs=5)
    assert load["completed_rate"] == pytest.approx(200, rel=0.1)


# -- steady state --------------------------------------------------------------------------
def test_a_drifting_server_is_flagged_and_a_steady_one_is_not(workdir):
    """Drift mode: service_ms(t) = 10 x (1 + 0.9 sin(2π (t − t0) / 60 s)), with t0 set
    to about the middle of the measured window, which then covers the sine's steepest
    stretch (−30° to +30°: the service time rises from ~5.5 to ~14.5 ms; an error of 5 s
    in the guess still leaves a rise of more than half of it). Closed loop, throughput
    falls and p50 rises well beyond the limits. The same server without drift, at a
    fixed rate, is steady."""
    # process start and composition, setup, warm-up, half the window
    origin = time.time() + 10
    workdir.run(
        "service=sleep",
        "service.service_ms=10",
        "service.drift_pct=90",
        "service.drift_period_s=60",
        f"service.drift_origin={origin}",
        "concurrency=2",
        "duration_s=10",
        "warmup_s=0.5",
        *QUIET,
        check=True,
    )
    m = _only_trial(workdir)
    tr = m["load"]["trend"]
    assert tr["seconds"] == 10 and m["load"]["steady"] is False, tr
    assert tr["latency_p50"] - tr["latency_p50_ci"] > 0.2, tr
    assert tr["throughput"] + tr["throughput_ci"] < -0.1, tr
    reasons = m["validity"]["reasons"]
    assert any(r.startswith("p50 latency rose") and "degrading" in r for r in reasons), reasons
    assert any(r.startswith("throughput fell") for r in reasons), reasons

    workdir.run(
        "service=sleep",
        "service.service_ms=5",
        "rate=100",
        "arrival=constant",
        "concurrency=8",
        "duration_s=10",
        "warmup_s=1",
        "scenario=flat",
        *QUIET,
        check=True,
    )
    m = _only_trial(workdir, "flat")
    assert m["load"]["trend"]["seconds"] == 10
    assert m["load"]["steady"] is True, (m["load"]["trend"], m["validity"])
    assert not any("over the 10 s window" in r for r in m["validity"]["reasons"])
