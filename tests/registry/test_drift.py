"""Verdicts that hold on a drifting machine (issue 19), on real trials.

The sleep calibration service in drift mode is a machine whose speed drifts by a
known amount: its service time follows ``service_ms × (1 + P/100 × sin(2π (t − t0) /
T))`` of the wall clock. The sweeps here set t0 so that the level rises through the
middle of the sweep (the sine's steepest part), so the first half of a sweep runs
faster than the second by several percent — more than the run-to-run noise, and
more than the 2 % floor.

- blocked A/A: one configuration, its first 5 runs against its last 5 → no verdict;
- interleaved A/A: the same 10 runs, even against odd → no verdict;
- interleaved A/B with a real +10 % service time → "worse";
- ``benchflow calibrate`` on the sleep server, its figures logged, then used by
  ``compare`` for sides run apart.

The trials run the service in process (``transport=inprocess``: the same drifting
service model as the server, without a loopback hop), so the drift, not the noise
of a shared machine, is what the statistics face.
"""

from __future__ import annotations

import json
import math
import time

import pytest
from conftest import Workdir
from fixtures.quiet import quiet

from .conftest import cli, client

PERIOD_S, DRIFT_PCT = 240, 15
TRIAL = [
    "service=sleep",
    "service.transport=inprocess",
    "concurrency=4",
    "duration_s=2",
    "warmup_s=0.5",
    "monitor.interval_s=0.5",
    "progress=off",
]
# A/A comparisons check that drift makes no verdict: noise still does at the rate alpha
# allows; 0.01 keeps that chance out of the test's way.
AA = ["--alpha", "0.01", "--resamples", "1000"]


def _drift(origin: float) -> list[str]:
    return [
        f"service.drift_pct={DRIFT_PCT}",
        f"service.drift_period_s={PERIOD_S}",
        f"service.drift_origin={origin:.3f}",
    ]


def _trial_runs(wd: Workdir, scenario: str):
    runs = wd.runs(scenario)
    runs = runs[runs["tags.benchflow.trial_id"].notna()].copy()
    runs["t"] = runs["tags.benchflow.started_at"].astype(float)
    return runs.sort_values("t")


@pytest.fixture(scope="module")
def drift_lab(tmp_path_factory, data_dir) -> Workdir:
    """Two sweeps on the drifting service: an A/A of 10 repetitions of one
    configuration, and an interleaved A/B (service_ms 5 vs 5.5) of 5 repetitions."""
    wd = Workdir.at(tmp_path_factory.mktemp("drift"), data_dir)
    with quiet():  # the drift under test is the server's, not the other worker's
        _sweeps(wd)
    return wd


def _sweeps(wd: Workdir) -> None:
    # ~10 s until the first trial, ~3 s a trial: the level's zero crossing mid-sweep
    origin = time.time() + 10 + 15
    wd.run(
        "-m",
        "scenario=drift-aa",
        *TRIAL,
        "service.service_ms=5",
        *_drift(origin),
        "repetitions=10",
        check=True,
        timeout=600,
    )
    origin = time.time() + 10 + 15
    wd.run(
        "-m",
        "scenario=drift-ab",
        *TRIAL,
        "service.service_ms=5,5.5",
        *_drift(origin),
        "repetitions=5",
        check=True,
        timeout=600,
    )


def _compare(wd: Workdir, tmp_path, base: list[str], cand: list[str], *extra: str) -> dict:
    out = tmp_path / f"cmp-{time.monotonic_ns()}.json"
    proc = cli(
        wd,
        "compare",
        "--baseline",
        ",".join(base),
        "--candidate",
        ",".join(cand),
        "--json",
        str(out),
        *extra,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())


def _rows(cmp: dict) -> dict[str, dict]:
    return {r["metric"]: r for r in cmp["rows"]}


def test_the_drift_is_real_and_fools_statistics_that_ignore_time(drift_lab):
    """The sweep's first half ran faster than its second: by more than the floor."""
    runs = _trial_runs(drift_lab, "drift-aa")
    assert len(runs) == 10
    p50 = runs["metrics.latency_ms.p50"].to_numpy()
    first, second = sorted(p50[:5])[2], sorted(p50[5:])[2]
    assert second / first > 1.03, p50  # the level moved ≥ 3% between the blocks

    from benchflow.analysis.compare import Settings, compare_selections, select

    c = client(drift_lab)
    ids = list(runs["run_id"])
    naive = compare_selections(
        select(",".join(ids[:5]), c),
        select(",".join(ids[5:]), c),
        ["latency_ms.p50"],
        Settings(design="independent", alpha=0.01, resamples=1000),
    )
    assert naive.rows[0].verdict == "worse", naive.to_markdown()


def test_blocked_a_a_under_drift_gives_no_verdict_and_states_the_mde(drift_lab, tmp_path):
    ids = list(_trial_runs(drift_lab, "drift-aa")["run_id"])
    cmp = _compare(drift_lab, tmp_path, ids[:5], ids[5:], *AA)
    rows = _rows(cmp)
    assert set(rows) >= {"throughput", "latency_ms.p50", "latency_ms.p99", "errors.rate"}
    for r in cmp["rows"]:
        assert r["design"] == "blocked", r
        assert r["verdict"] in ("no significant change", "not enough data"), r
        if not r["constant"]:
            assert r["mde"] is not None and r["mde"] > 0.02, r
    for m in ("throughput", "latency_ms.p50"):
        r = rows[m]
        assert r["verdict"] == "not enough data", r
        assert "below the minimal detectable effect" in r["note"], r
        assert r["min_effect"] == r["mde"] > abs(r["ratio"] - 1)
        # the between-block SD (trend or assumption) is wider than the drift between blocks
        assert "no calibration" in r["drift_source"] and r["drift"] > 0.02, r
    # p50 barely varies from run to run: the trend within the sides is what saw the drift
    assert "within-side trend" in rows["latency_ms.p50"]["drift_source"]
    assert rows["errors.rate"]["constant"] and rows["errors.rate"]["p_adjusted"] is None
    caveats = "\n".join(cmp["caveats"])
    assert "blocked" in caveats and "no calibration" in caveats
    assert "minimal detectable effect" in caveats
    assert cmp["mde"]["latency_ms.p50"] > 0.02


def test_interleaved_a_a_under_drift_gives_no_verdict(drift_lab, tmp_path):
    ids = list(_trial_runs(drift_lab, "drift-aa")["run_id"])
    cmp = _compare(drift_lab, tmp_path, ids[0::2], ids[1::2], *AA)
    for r in cmp["rows"]:
        assert r["design"] == "paired" and r["pairs"] == 5, r
        assert r["verdict"] == "no significant change", r
    p50 = _rows(cmp)["latency_ms.p50"]
    assert abs(p50["ratio"] - 1) < 0.01, p50  # the drift within a pair is taken out
    assert "level drift" in p50["drift_source"]
    assert p50["mde"] < 0.02  # paired, the run-to-run noise of p50 is tiny
    assert "paired" in "\n".join(cmp["caveats"])


def test_interleaved_a_b_finds_a_real_10_percent_regression_under_drift(drift_lab, tmp_path):
    runs = _trial_runs(drift_lab, "drift-ab")
    base = list(runs[runs["params.service.service_ms"] == "5"]["run_id"])
    cand = list(runs[runs["params.service.service_ms"] == "5.5"]["run_id"])
    assert len(base) == len(cand) == 5
    cmp = _compare(drift_lab, tmp_path, base, cand, "--ignore", "service.service_ms")
    rows = _rows(cmp)
    p50, thr = rows["latency_ms.p50"], rows["throughput"]
    assert p50["design"] == "paired" and p50["verdict"] == "worse", p50
    assert p50["ratio"] == pytest.approx(1.1, abs=0.02)
    # throughput in process feels every hiccup of a shared 2-core machine (other tests
    # running): worse, unless a stalled run made its pairs too noisy to tell
    assert thr["design"] == "paired" and thr["ratio"] < 0.97, thr
    assert thr["verdict"] in ("worse", "no significant change"), thr
    assert thr["verdict"] == "worse" or thr["mde"] > 0.05, thr
    assert rows["latency_ms.p99"]["verdict"] != "better"
    # through the CLI's gate as well
    gated = cli(
        drift_lab,
        "compare",
        "--baseline",
        ",".join(base),
        "--candidate",
        ",".join(cand),
        "--ignore",
        "service.service_ms",
        "--fail-on-regression",
    )
    assert gated.returncode == 1 and "regression" in gated.stderr
    assert "paired" in gated.stdout and "MDE" in gated.stdout


def test_calibrate_logs_its_figures_and_compare_uses_them(drift_lab, tmp_path, quiet_machine):
    """`benchflow calibrate` on the sleep server (over loopback HTTP, as by default):
    an A/A of 4 interleaved pairs; its figures go to MLflow as the calibration of this
    host, and the next `compare` of sides run apart on this host uses them."""
    out = tmp_path / "cal.json"
    proc = drift_lab.run(
        "calibrate",
        "--pairs",
        "4",
        "--group",
        "4",
        "--json",
        str(out),
        "--",
        "duration_s=1.5",
        "warmup_s=0.3",
        "monitor.interval_s=0.5",
        timeout=600,
    )
    assert proc.returncode == 0, drift_lab.explain(proc, "calibration")
    assert "false positives" in proc.stdout and "MDE paired n=5" in proc.stdout
    cal = json.loads(out.read_text())
    assert cal["pairs"] == 4 and cal["service"] == "sleep" and cal["host"]
    assert "service=sleep" in cal["overrides"] and "duration_s=1.5" in cal["overrides"]
    figures = {m["metric"]: m for m in cal["metrics"]}
    assert {"throughput", "latency_ms.p50", "latency_ms.p99"} <= set(figures)
    for m in figures.values():
        assert m["runs"] == 8 and m["noise_cv"] > 0 and m["drift_sd"] >= 0
        mp, mb = m["mde_paired"], m["mde_blocked"]
        assert mp["3"] > mp["5"] > mp["10"] > 0 and mb["10"] > 0
    assert cal["comparisons"] == 1 and 0 <= cal["false_positive_rate"] <= 1

    # logged to MLflow, tagged with the host
    c = client(drift_lab)
    exp = c.get_experiment_by_name("benchflow-calibrations")
    (run,) = c.search_runs([exp.experiment_id])
    assert run.info.run_id == cal["run_id"]
    assert run.data.tags["benchflow.role"] == "calibration"
    assert run.data.tags["benchflow.host"] == cal["host"]
    thr = figures["throughput"]
    assert run.data.metrics["drift_sd.throughput"] == pytest.approx(thr["drift_sd"])
    assert run.data.metrics["mde.paired.5.throughput"] == pytest.approx(thr["mde_paired"]["5"])
    arts = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"calibration.json", "calibration.md"} <= arts

    # the next compare of blocks run apart on this host uses it: the calibration's own
    # runs, first half against second half
    runs = _trial_runs(drift_lab, "calibration")
    ids = list(runs["run_id"])
    cmp = _compare(drift_lab, tmp_path, ids[:4], ids[4:], *AA)
    assert list(cmp["calibrations"].values()) == [cal["run_id"]]
    for r in cmp["rows"]:
        assert r["design"] == "blocked" and r["min_effect"] is None, r
        assert r["verdict"] in ("no significant change", "not enough data"), r
        if r["metric"] in figures:
            # the between-block SD is at least the calibration's, for two blocks
            assert r["drift"] >= math.sqrt(2) * figures[r["metric"]]["drift_sd"] - 1e-9, r
    assert any(cal["run_id"] in line for line in cmp["caveats"])
    # ... and not when told not to
    plain = _compare(drift_lab, tmp_path, ids[:4], ids[4:], "--calibration", "none")
    assert plain["calibrations"] == {}
    assert all(r["min_effect"] is not None for r in plain["rows"] if not r["constant"])
