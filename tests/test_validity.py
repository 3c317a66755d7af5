"""The validity rule on sample counts is the driver's to declare: a load driver's
trial without enough requests for a p99 is invalid; a quality driver's is not
(``Driver.headline_figures``), and says so in a note."""

from __future__ import annotations

from types import SimpleNamespace

from benchflow import results
from drivers.base import Driver


def _result(n: int, error_rate: float = 0.0, extra=None, window_s=None):
    return SimpleNamespace(
        latency_ms=SimpleNamespace(count=n),
        load=SimpleNamespace(target_rate=None, achieved_rate=None, duration_s=window_s),
        errors=SimpleNamespace(rate=error_rate, by_class={}),
        extra=extra or {},
    )


REC = SimpleNamespace(abandoned=False, failed_clients=[])
RULES = SimpleNamespace(max_rate_shortfall=0.05, max_error_rate=0.01)


def test_too_few_samples_is_a_reason_for_load_drivers_only():
    assert Driver.headline_figures == "load"  # the default keeps the rule
    load = results.judge(_result(99), REC, RULES)
    assert not load.valid and load.reasons == [
        "only 99 successful requests; p99 needs at least 100"
    ]
    quality = results.judge(_result(99), REC, RULES, few_samples_invalid=False)
    assert quality.valid and quality.reasons == []
    assert results.judge(_result(100), REC, RULES).valid
    assert results.too_few_samples(100) is None


def test_other_rules_still_apply_to_quality_drivers():
    v = results.judge(_result(10, error_rate=0.2), REC, RULES, ["sut restarted"], False)
    assert not v.valid and v.reasons[0] == "sut restarted" and "error rate" in v.reasons[1]


def test_a_lost_shard_is_invalid_only_above_the_allowed_share():
    """One of four shards failed: 25% of the load lost. The default (0) makes the trial
    invalid; ``validity.max_lost_client_share=0.25`` keeps it, the loss still counted."""
    rec = SimpleNamespace(abandoned=False, failed_clients=["client 3: killed"], clients=4)
    strict = results.judge(_result(500), rec, RULES)
    assert not strict.valid
    assert strict.reasons == [
        "1 client shard(s) failed, 25% of the load lost (allowed 0%): client 3: killed"
    ]
    lenient = SimpleNamespace(**vars(RULES), max_lost_client_share=0.25)
    assert results.judge(_result(500), rec, lenient).valid
    two = SimpleNamespace(abandoned=False, failed_clients=["a", "b"], clients=4)
    assert not results.judge(_result(500), two, lenient).valid  # 50% > 25%


def test_clock_error_is_judged_against_the_measured_window():
    """Default bound: 0.1% of the window (30 s -> 30 ms); a set bound wins."""
    ok = _result(500, extra={"clients.clock_error_ms_max": 20.0}, window_s=30)
    assert results.judge(ok, REC, RULES).valid
    short = _result(500, extra={"clients.clock_error_ms_max": 20.0}, window_s=5)
    v = results.judge(short, REC, RULES)
    assert not v.valid and "client clocks may disagree by 20 ms" in v.reasons[0]
    assert "allowed 5 ms" in v.reasons[0]
    tight = SimpleNamespace(**vars(RULES), max_clock_error_ms=10.0)
    assert not results.judge(ok, REC, tight).valid
    assert results.judge(_result(500, window_s=5), REC, RULES).valid  # one client: no figure
