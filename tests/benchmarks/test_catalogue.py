"""`benchflow benchmarks register|list|show|run|deprecate`: benchmarks recorded in
MLflow (one list for every team), and which targets have results for each."""

from __future__ import annotations

import json

from fixtures.benchmark_packages import EXAMPLE_CONF

CD = ["-cd", str(EXAMPLE_CONF)]
QUICK = ["warmup_s=0", "monitor.interval_s=0.2"]


def _listing(bench) -> dict[str, dict]:
    out = bench.run("benchmarks", "list", "--json", check=True).stdout
    return {b["name"]: b for b in json.loads(out)}


def test_register_run_and_list_benchmarks_with_their_targets(bench):
    gen = ["service.dataset=generated", "service.n_items=120"]
    out = bench.run(
        "benchmarks", "register", "intent-gen120", "-s", "intent", *CD, *gen,
        "--description", "120 generated requests", check=True,
    ).stdout  # fmt: skip
    assert "registered intent-gen120 (revision 1, parameterised benchmark of intent" in out
    out = bench.run(
        "benchmarks", "register", "intent-fixed", "-s", "intent_shipped", *CD,
        "--experiment-version", ">=0.1,<0.2", check=True,
    ).stdout  # fmt: skip
    assert "fixed benchmark of intent_shipped" in out

    # Runs: two targets on the registered workload, one on another workload (not counted).
    run = bench.run(
        "benchmarks", "run", "intent-gen120", *CD, "-m", "target=keyword/1,majority/1",
        "scenario=cat", *QUICK,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "service=intent service.dataset=generated service.n_items=120" in run.stderr
    bench.run(
        *CD, "service=intent", "service.dataset=generated", "service.n_items=121",
        "target=other/1", "scenario=cat", *QUICK, check=True,
    )  # fmt: skip
    bench.run(
        "benchmarks", "run", "intent-fixed", *CD, "target=keyword/1", "scenario=cat", *QUICK,
        check=True,
    )  # fmt: skip

    listed = _listing(bench)
    assert set(listed) == {"intent-gen120", "intent-fixed"}
    g = listed["intent-gen120"]
    assert g["kind"] == "parameterised" and g["installed"] == "0.1.0"
    assert g["workload"]["service.dataset"] == "generated"
    assert g["workload"]["service.n_items"] == "120"
    assert "service.target" not in g["workload"]  # the target varies; it is not the workload
    assert listed["intent-fixed"]["workload"] == {}
    res = {r["target"]: r for r in g["results"]}
    assert set(res) == {"keyword/1", "majority/1"}
    assert res["keyword/1"]["runs"] == res["keyword/1"]["valid"] == 1
    assert res["majority/1"]["versions"] == ["0.1.0"]
    assert [r["target"] for r in listed["intent-fixed"]["results"]] == ["keyword/1"]

    shown = bench.run("benchmarks", "show", "intent-gen120", check=True).stdout
    assert "parameterised benchmark of intent" in shown and "120 generated requests" in shown
    assert "keyword/1: 1 runs, 1 valid (v0.1.0)" in shown

    # In MLflow, for everyone: one run per definition in the catalogue experiment.
    cat = bench.runs("benchflow-benchmarks")
    assert set(cat["tags.benchflow.benchmark"]) == {"intent-gen120", "intent-fixed"}
    assert set(cat["params.workload.service.n_items"].dropna()) == {"120"}


def test_revisions_refusals_and_deprecation(bench):
    args = ["benchmarks", "register", "rev", "-s", "intent", *CD, "service.n_items=50"]
    bench.run(*args, "service.dataset=generated", check=True)
    again = bench.run(*args, "service.dataset=generated", check=True).stdout
    assert "already registered, unchanged: rev (revision 1" in again
    changed = bench.run(*args, "service.dataset=shipped")
    assert changed.returncode == 2 and "pass --replace" in changed.stderr
    replaced = bench.run(*args, "service.dataset=shipped", "--replace", check=True).stdout
    assert "registered a new revision of rev (revision 2" in replaced
    # Refused before MLflow is touched: a target is not a workload, nor are limits.
    target = bench.run("benchmarks", "register", "x", "-s", "intent_v0", *CD, "service.target=a:b")
    assert target.returncode == 2 and "the target varies between runs" in target.stderr
    limits = bench.run("benchmarks", "register", "x", "-s", "intent", *CD, "limits.trial.time_s=5")
    assert limits.returncode == 2 and "not part of a workload" in limits.stderr

    bench.run("benchmarks", "register", "old", "-s", "intent_v0", *CD, check=True)
    bench.run("benchmarks", "deprecate", "old", "--reason", "use intent-gen120", check=True)
    every = json.loads(bench.run("benchmarks", "list", "--all", "--json", check=True).stdout)
    revs = {b["revision"]: b for b in every if b["name"] == "rev"}
    assert set(revs) == {1, 2} and revs[2]["workload"]["service.dataset"] == "shipped"
    old = next(b for b in every if b["name"] == "old")
    assert old["deprecated"] == "use intent-gen120"
    assert old["experiment_deprecated"].endswith("use intent")

    workload = bench.run("benchmarks", "run", "rev", *CD, "service.n_items=7")
    assert workload.returncode == 2 and "part of benchmark rev's workload" in workload.stderr
    ran = bench.run(
        "benchmarks", "run", "old", *CD, "scenario=cat-old", "tracking.upload=false", *QUICK
    )  # fmt: skip
    assert ran.returncode == 0
    assert "benchmark old is deprecated: use intent-gen120" in ran.stderr
    assert "intent_v0 (benchflow-intent 0.1.0) is deprecated" in ran.stdout + ran.stderr
