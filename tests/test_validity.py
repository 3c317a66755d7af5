"""The validity rule on sample counts is the driver's to declare: a load driver's
trial without enough requests for a p99 is invalid; a quality driver's is not
(``Driver.headline_figures``), and says so in a note."""

from __future__ import annotations

from types import SimpleNamespace

from benchflow import results
from drivers.base import Driver


def _result(n: int, error_rate: float = 0.0):
    return SimpleNamespace(
        latency_ms=SimpleNamespace(count=n),
        load=SimpleNamespace(target_rate=None, achieved_rate=None),
        errors=SimpleNamespace(rate=error_rate, by_class={}),
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
