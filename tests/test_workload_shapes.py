"""Workload shapes through the engine (docs/workloads.md): gamma arrivals, stages, mixes
and trace replay — as schedules, and as real trials against the sleep calibration
server; bad workload settings exit 2 naming the key.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST

from benchflow.load.mix import Mix
from benchflow.load.schedule import Schedule, Stage
from benchflow.workload.trace import TraceConfig, generate_trace, iter_trace

QUIET = ["tracking.upload=false", "monitor.interval_s=0.5"]


# --- schedules -------------------------------------------------------------------------


@pytest.mark.parametrize("burstiness", [0.25, 0.5, 1.0, 4.0])
def test_gamma_gaps_have_the_cv_burstiness_sets_and_the_count_is_exact(burstiness):
    sched = Schedule(1000, "gamma", seed=3, duration_s=200, burstiness=burstiness)
    t = sched.offsets()
    assert len(t) == 200_000  # conditioned on the count, like poisson
    assert t[0] >= 0 and t[-1] < 200e9 and np.all(np.diff(t) >= 0)
    gaps = np.diff(t)
    assert gaps.std() / gaps.mean() == pytest.approx(1 / np.sqrt(burstiness), rel=0.05)
    # bounded by a count instead: i.i.d. gamma gaps of mean 1/rate
    free = np.diff(Schedule(1000, "gamma", seed=4, count=100_000, burstiness=burstiness).offsets())
    assert free.mean() == pytest.approx(1e6, rel=0.03)
    assert free.std() / free.mean() == pytest.approx(1 / np.sqrt(burstiness), rel=0.05)


def test_gamma_of_burstiness_one_is_poisson_in_law():
    from scipy import stats

    gaps = np.diff(Schedule(500, "gamma", seed=1, duration_s=100).offsets()) / 1e9
    assert stats.kstest(gaps, "expon", args=(0, 1 / 500)).pvalue > 0.001


@pytest.mark.parametrize("arrival", ["constant", "poisson", "gamma"])
def test_stages_have_exact_counts_and_a_ramp_rises_linearly(arrival):
    stages = (Stage(100, 2), Stage(500, 4, ramp=True), Stage(300, 2))
    sched = Schedule(None, arrival, seed=2, stages=stages, burstiness=2.0)
    t = sched.offsets() / 1e9
    assert sched.stage_starts_ns == [0, 2_000_000_000, 6_000_000_000]
    assert sched.duration_s == 8
    counts = [((t >= a) & (t < b)).sum() for a, b in ((0, 2), (2, 6), (6, 8))]
    assert counts == [200, 1200, 600]  # ramp: (100 + 500) / 2 x 4 s
    # the ramp's rate at time x into the stage is 100 + 100 x: counts per second
    per_s = np.histogram(t[(t >= 2) & (t < 6)] - 2, bins=4, range=(0, 4))[0]
    expect = np.array([150, 250, 350, 450])
    tol = 0.02 if arrival == "constant" else 0.25
    assert np.all(np.abs(per_s - expect) <= tol * expect + 2)


def test_schedules_and_mixes_are_pure_functions_of_the_seed():
    stages = (Stage(200, 1), Stage(400, 1, ramp=True))
    a = Schedule(None, "gamma", seed=5, stages=stages, burstiness=0.5).offsets()
    b = Schedule(None, "gamma", seed=5, stages=stages, burstiness=0.5).offsets()
    c = Schedule(None, "gamma", seed=6, stages=stages, burstiness=0.5).offsets()
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    m1, m2 = Mix((("a", 0.2), ("b", 0.8)), seed=1), Mix((("a", 0.2), ("b", 0.8)), seed=1)
    seq1 = [m1.class_of(i) for i in range(40_000)]
    assert seq1 == [m2.class_of(i) for i in range(40_000)]
    assert np.mean(np.array(seq1) == 0) == pytest.approx(0.2, abs=0.01)
    # lanes (closed-loop workers) draw their own sequences
    assert [m1.class_of(i, lane=1) for i in range(100)] != seq1[:100]


def test_a_trace_schedule_replays_the_trace_times_scaled_and_split_over_shards(tmp_path):
    path = tmp_path / "t.jsonl"
    generate_trace(path, requests=500, rate=200, seed=1)
    cfg = TraceConfig(path=str(path), time_scale=0.5)
    want = np.array([r.offset_ns for r in iter_trace(cfg)])
    got = Schedule(None, "poisson", seed=0, trace=cfg).offsets()
    assert np.array_equal(got, want)
    halves = [Schedule(None, "poisson", 0, trace=cfg, shard=(i, 2)).offsets() for i in (0, 1)]
    assert np.array_equal(np.sort(np.concatenate(halves)), want)
    # a warm-up replays only the trace's first duration_s
    warm = Schedule(None, "poisson", 0, duration_s=0.2, trace=cfg).offsets()
    assert np.array_equal(warm, want[want < 0.2e9])


# --- real trials on the sleep server ----------------------------------------------------


def _one_trial(workdir, *args) -> dict:
    proc = workdir.run("service=sleep", *FAST, *QUIET, *args)
    assert proc.returncode == 0, workdir.explain(proc)
    (trial,) = workdir.trial_dirs()
    return workdir.metrics(trial) | {"_dir": str(trial)}


def test_stages_on_the_sleep_server_reach_each_stage_rate(workdir):
    m = _one_trial(
        workdir,
        "service.service_ms=2",
        "concurrency=16",
        "stages=[{rate: 150, duration_s: 3}, {rate: 400, duration_s: 3}]",
    )
    assert m["load"]["mode"] == "open" and m["load"]["duration_s"] == 6
    assert set(m["stages"]) == {"0", "1"}
    for k, rate in (("0", 150), ("1", 400)):
        st = m["stages"][k]
        assert st["target_rate"] == rate
        assert st["achieved_rate"] == pytest.approx(rate, rel=0.01)
        assert st["throughput"]["value"] == pytest.approx(rate, rel=0.01)
        assert st["latency_ms"]["p50"] >= 2.0
    assert m["stages"]["0"]["latency_ms"]["count"] == 450
    assert m["stages"]["1"]["latency_ms"]["count"] == 1200
    assert m["latency_ms"]["count"] == 1650
    assert m["validity"]["valid"], m["validity"]
    # the server's side on the same time axis: the sleep server's /state, each interval
    from benchflow.results.files import read_csv
    from benchflow.tracking.upload import series_metrics

    trial = Path(m["_dir"])
    rows = read_csv(trial / "server.csv")
    served = [float(r["served"]) for r in rows if r["served"]]
    # (the last sample may come before the last requests end)
    assert len(served) >= 8 and served == sorted(served) and served[-1] >= 1500
    names = {x.key for x in series_metrics(trial, workdir.meta(trial))}
    assert {"server/in_flight", "server/served", "timeseries/throughput"} <= names


def test_concurrency_stages_step_the_requests_in_flight(workdir):
    m = _one_trial(
        workdir,
        "service.service_ms=10",
        "concurrency=6",
        "duration_s=1",
        "stages=[{concurrency: 1, duration_s: 2}, {concurrency: 6, duration_s: 2}]",
    )
    assert m["load"]["mode"] == "closed" and m["load"]["duration_s"] == 4
    one, six = m["stages"]["0"], m["stages"]["1"]
    assert (one["concurrency"], six["concurrency"]) == (1, 6)
    # closed loop at 10 ms: ~100/s per request in flight (less the harness's own time)
    assert 70 < one["throughput"]["value"] <= 100
    assert six["throughput"]["value"] / one["throughput"]["value"] == pytest.approx(6, rel=0.2)
    assert one["target_rate"] is None and m["load"]["target_rate"] is None


def test_a_mix_on_the_sleep_server_reports_each_class_at_its_own_service_time(workdir):
    m = _one_trial(
        workdir,
        "service.service_ms=5",
        "concurrency=16",
        "rate=120",
        "duration_s=4",
        "mix={fast: 3, slow: 1}",  # normalized: 0.75 / 0.25
        "+service.classes={slow: {service_ms: 25}}",
    )
    fast, slow = m["classes"]["fast"], m["classes"]["slow"]
    assert (fast["weight"], slow["weight"]) == (0.75, 0.25)
    # each at its own service time plus the same harness and loopback overhead (the
    # overhead moves with the machine's load; the 20 ms between the classes does not)
    assert 5.0 <= fast["latency_ms"]["p50"] < 15.0
    assert 25.0 <= slow["latency_ms"]["p50"] < 35.0
    gap = slow["service_time_ms"]["p50"] - fast["service_time_ms"]["p50"]
    assert gap == pytest.approx(20.0, abs=2.0)
    n_fast, n_slow = fast["latency_ms"]["count"], slow["latency_ms"]["count"]
    n = m["latency_ms"]["count"]
    assert n_fast + n_slow == n == 480
    assert n_slow / n == pytest.approx(0.25, abs=4 * np.sqrt(0.25 * 0.75 / n))
    # the totals are the union: the whole's mean is the classes' weighted mean
    union = (fast["latency_ms"]["mean"] * n_fast + slow["latency_ms"]["mean"] * n_slow) / n
    assert m["latency_ms"]["mean"] == pytest.approx(union, rel=1e-6)
    assert fast["throughput"]["value"] + slow["throughput"]["value"] == pytest.approx(
        m["throughput"]["value"]
    )
    # MLflow's view: one metric per class and figure
    from benchflow.results.schema import TrialResult, metrics_flat

    res = TrialResult.model_validate({k: v for k, v in m.items() if k != "_dir"})
    flat = metrics_flat(res)
    assert flat["classes.slow.latency_ms.p50"] == slow["latency_ms"]["p50"]
    assert flat["classes.slow.throughput"] == slow["throughput"]["value"]
    # compare reads a class's metrics like the whole's: its direction, its own histogram
    from benchflow.analysis.compare.statistics import higher_is_better, histogram_of

    assert higher_is_better("classes.slow.throughput")
    assert not higher_is_better("stages.1.latency_ms.p99")
    assert histogram_of("classes.slow.latency_ms.p99") == ("classes.slow.latency", 99.0)
    hists = json.loads((Path(m["_dir"]) / "histograms.json").read_text())
    assert hists["classes.slow.latency"]["count"] == n_slow


def test_a_replayed_trace_follows_its_times_and_its_sha_is_in_the_lineage(workdir, tmp_path):
    import hashlib

    path = tmp_path / "burst.jsonl"
    generate_trace(path, requests=3000, rate=500, seed=7, burstiness=0.5)
    m = _one_trial(
        workdir,
        "service.service_ms=1",
        "concurrency=64",
        f"trace.path={path}",
        "trace.time_scale=0.5",  # 1,000 requests/s
    )
    meta = json.loads((workdir.trial_dirs()[0] / "meta.json").read_text())
    assert meta["lineage"]["trace"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert m["load"]["arrival"] == "trace"
    assert m["latency_ms"]["count"] == 3000
    last = max(r.offset_ns for r in iter_trace(TraceConfig(path=str(path), time_scale=0.5)))
    # the last request may leave late on a loaded machine: its lag stretches the span
    assert m["load"]["achieved_rate"] == pytest.approx(2999 / (last / 1e9), rel=0.05)
    # How late requests left against the trace's times: a gross check here (the suite
    # shares 2 cores); the fidelity figures are `make bench` rows (bench/workloads.py).
    assert m["load"]["dispatch_lag_ms"]["p50"] < 5.0, m["load"]["dispatch_lag_ms"]


# --- bad input --------------------------------------------------------------------------


def test_bad_workload_settings_exit_2_naming_the_key(workdir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"timestamp": 0, "input_length": 5}\nnot json\n')
    cases = [
        (["arrival_burstiness=0.5"], "arrival_burstiness"),  # without arrival=gamma
        (["arrival=gamma", "arrival_burstiness=0"], "arrival_burstiness"),
        (["rate=10", "stages=[{rate: 5, duration_s: 1}]"], "stages"),
        (["stages=[{rate: 5}]"], "stages.0.duration_s"),
        (["stages=[{duration_s: 1}]"], "stages.0"),  # neither rate nor concurrency
        (["stages=[{concurrency: 2, duration_s: 1, ramp: true}]"], "stages.0"),
        (
            ["concurrency=4", "stages=[{rate: 5, duration_s: 1}, {concurrency: 2, duration_s: 1}]"],
            "stages",
        ),
        (["stages=[{concurrency: 4, duration_s: 1}]"], "stages"),  # concurrency=1 < 4
        (["mix={a: -1, b: 2}"], "mix"),
        (["service=triton", "mix={infer: 1}"], "mix"),  # a driver without classes
        ([f"trace.path={tmp_path}/missing.jsonl"], "trace.path"),
        ([f"trace.path={bad}", "rate=10"], "trace.path"),
        (["access.distribution=pareto"], "access.distribution"),
    ]
    for args, key in cases:
        proc = workdir.run("service=sleep", *FAST, *QUIET, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert f"invalid config: {key}" in proc.stderr, (args, proc.stderr)


def test_a_malformed_trace_line_fails_the_trial_naming_the_file_and_line(workdir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"timestamp": 0}\n{"timestamp": 5}\n{"timestamp": oops}\n')
    proc = workdir.run("service=sleep", *FAST, *QUIET, f"trace.path={bad}")
    assert proc.returncode != 0
    (trial,) = workdir.trial_dirs()
    error = json.dumps(workdir.meta(trial).get("error"))
    assert f"{bad}:3" in error or (str(bad) in error and "line 3" in error), error


def test_workload_keys_at_their_defaults_leave_params_and_hashes_as_they_were():
    from benchflow.config.compose import compose_trials

    (spec,) = compose_trials(["service=sleep"], multirun=False)
    for key in ("stages", "mix", "trace", "access", "arrival_burstiness"):
        assert key not in spec.resolved
    (staged,) = compose_trials(["service=sleep", "stages=[{rate: 5, duration_s: 1}]"], False)
    assert staged.resolved["stages"] == [
        {"rate": 5, "concurrency": None, "duration_s": 1, "ramp": False}
    ]
    (mixed,) = compose_trials(["service=sleep", "mix={a: 1, b: 3}"], False)
    assert mixed.resolved["mix"] == {"a": 0.25, "b": 0.75}


def test_compare_defaults_cover_each_class_and_stage_both_sides_have():
    """`benchflow compare` lists each class's and each stage's headline metrics after the
    whole trial's, where both sides have them (pure: no server)."""
    from benchflow.analysis.compare import default_metrics
    from benchflow.analysis.compare.selection import RunRecord, Selection

    def side(*names):
        keys = ["throughput", "latency_ms.p50", "latency_ms.p99", "errors.rate"]
        metrics = {k: 1.0 for k in keys}
        metrics |= {f"{n}.{k}": 1.0 for n in names for k in keys}
        return Selection("x", "runs", "x", [RunRecord("r", {}, metrics, {})])

    got = default_metrics(side("classes.get", "classes.put"), side("classes.get", "stages.0"))
    assert got[:4] == ["throughput", "latency_ms.p50", "latency_ms.p99", "errors.rate"]
    assert got[4:] == [
        "classes.get.throughput",
        "classes.get.latency_ms.p50",
        "classes.get.latency_ms.p99",
        "classes.get.errors.rate",
    ]
