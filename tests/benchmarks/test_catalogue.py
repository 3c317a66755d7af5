"""`benchflow benchmarks register|list|show|run|deprecate`: benchmarks recorded in
MLflow (one list for every team), and which targets have results for each.

The end-to-end test goes through the CLI and real trials; the rules (refusals,
revisions, matching runs to benchmarks) are checked through the Python API
against the same kind of MLflow store, with the example package importable in
this process for the duration of the test."""

from __future__ import annotations

import json
import sys
import time

import pytest
from fixtures.benchmark_packages import EXAMPLE_CONF

CD = ["-cd", str(EXAMPLE_CONF)]
QUICK = ["warmup_s=0", "monitor.interval_s=0.2"]


def test_register_run_list_and_show_through_the_cli(bench):
    out = bench.run(
        "benchmarks", "register", "intent-gen120", "-s", "intent", *CD,
        "service.dataset=generated", "service.n_items=120",
        "--description", "120 generated requests", check=True,
    ).stdout  # fmt: skip
    assert "registered intent-gen120 (revision 1, parameterised benchmark of intent" in out
    run = bench.run(
        "benchmarks", "run", "intent-gen120", *CD, "-m", "target=keyword/1,majority/1",
        "scenario=cat", *QUICK,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "service=intent service.dataset=generated service.n_items=120" in run.stderr
    refused = bench.run("benchmarks", "run", "intent-gen120", *CD, "service.n_items=7")
    assert refused.returncode == 2
    assert "service.n_items: part of benchmark intent-gen120's workload" in refused.stderr

    (g,) = json.loads(bench.run("benchmarks", "list", "--json", check=True).stdout)
    assert g["name"] == "intent-gen120" and g["kind"] == "parameterised"
    assert g["installed"] == "0.1.0" and g["registered_with"] == "benchflow-intent==0.1.0"
    assert g["workload"]["service.dataset"] == "generated"
    assert g["workload"]["service.n_items"] == "120"
    assert "service.target" not in g["workload"]  # the target varies; it is not the workload
    res = {r["target"]: r for r in g["results"]}
    assert set(res) == {"keyword/1", "majority/1"}
    assert res["keyword/1"]["runs"] == res["keyword/1"]["valid"] == 1
    assert res["majority/1"]["versions"] == ["0.1.0"]

    shown = bench.run("benchmarks", "show", "intent-gen120", check=True).stdout
    assert "parameterised benchmark of intent" in shown and "120 generated requests" in shown
    assert "keyword/1: 1 runs, 1 valid (v0.1.0)" in shown
    # In MLflow, for everyone: one run per definition in the catalogue experiment.
    cat = bench.runs("benchflow-benchmarks")
    assert list(cat["tags.benchflow.benchmark"]) == ["intent-gen120"]
    assert list(cat["params.workload.service.n_items"]) == ["120"]


def test_a_deprecated_benchmark_warns_when_run(bench):
    bench.run("benchmarks", "register", "old", "-s", "intent_v0", *CD, check=True)
    bench.run("benchmarks", "deprecate", "old", "--reason", "use intent-gen120", check=True)
    ran = bench.run(
        "benchmarks", "run", "old", *CD, "scenario=cat-old", "tracking.upload=false", *QUICK
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "benchmark old is deprecated: use intent-gen120" in ran.stderr
    assert "intent_v0 (benchflow-intent 0.1.0) is deprecated" in ran.stdout + ran.stderr


@pytest.fixture
def example_in_process(intent_site):
    """The example package importable here (entry points included), for this test only."""
    from drivers import discovery

    sys.path.insert(0, str(intent_site))
    discovery._entry_points.cache_clear()
    yield
    sys.path.remove(str(intent_site))
    discovery._entry_points.cache_clear()
    for name in [m for m in sys.modules if m.startswith("benchflow_intent")]:
        del sys.modules[name]


def test_definitions_refusals_and_revisions(bench, example_in_process):
    from benchflow.analysis import catalogue as cat
    from benchflow.config import ConfigError

    cd = str(EXAMPLE_CONF)
    refusals = [
        (("bad", "intent_v0", ["service.target=a:b"]), "the target varies between runs"),
        (("bad", "intent", ["limits.trial.time_s=5"]), "not part of a workload"),
        (("bad", "intent", ["tracking.upload=false"]), "not part of a workload"),
        (("bad name", "intent", []), "letters, digits"),
    ]
    for (name, service, overrides), words in refusals:
        with pytest.raises(cat.CatalogueError, match=words):
            cat.define(name, service, overrides, cd)
    with pytest.raises(ConfigError, match=r"service\.nope"):
        cat.define("bad", "intent", ["service.nope=1"], cd)
    # A fixed experiment has no workload settings to give.
    with pytest.raises(ConfigError, match="allowed keys here: driver, isolation, mode"):
        cat.define("bad", "intent_shipped", ["++service.dataset=generated"], cd)

    fixed = cat.define("shipped", "intent_shipped", [], cd)
    assert fixed.kind == "fixed" and fixed.workload == {}
    c, name = bench.client(), "test-catalogue"
    gen = ["service.dataset=generated", "requests=50", "service.n_items=50"]
    b1, status = cat.register(c, cat.define("rev", "intent", gen, cd), name)
    assert status == "created" and b1.workload["requests"] == "50"
    _, status = cat.register(c, cat.define("rev", "intent", gen, cd), name)
    assert status == "unchanged"
    changed = cat.define("rev", "intent", [*gen[:2], "service.n_items=60"], cd)
    with pytest.raises(cat.CatalogueError, match="pass --replace"):
        cat.register(c, changed, name)
    b2, status = cat.register(c, changed, name, replace=True)
    assert (status, b2.revision) == ("replaced", 2)
    assert [b.revision for b in cat.benchmarks(c, name)] == [2]
    assert [b.revision for b in cat.benchmarks(c, name, include_superseded=True)] == [2, 1]
    assert cat.get(c, "rev", name).workload["service.n_items"] == "60"
    cat.deprecate(c, "rev", "use something else", name)
    assert cat.get(c, "rev", name).deprecated == "use something else"


def test_results_are_matched_by_experiment_workload_and_version(bench, example_in_process):
    """Runs made any way (here: created directly in MLflow) count when their experiment
    and workload match, grouped by their benchflow.target tag."""
    from benchflow.analysis import catalogue as cat
    from benchflow.tracking import ensure_experiment

    c = bench.client()
    b = cat.define("match", "intent", ["service.dataset=generated"], str(EXAMPLE_CONF))
    b.experiment_version = ">=0.1,<0.2"
    exp = ensure_experiment(c, "somebody-elses-experiment")

    def run(target, version="0.1.0", **changes):
        params = {**b.workload, **changes}
        tags = {"benchflow.driver": "intent", "benchflow.valid": "true"}
        tags["benchflow.driver_package"] = f"benchflow-intent=={version}"
        if target:
            tags["benchflow.target"] = target
        r = c.create_run(exp, tags=tags, start_time=int(time.time() * 1000))
        for k, v in params.items():
            c.log_param(r.info.run_id, k, v)
        c.set_terminated(r.info.run_id, "FINISHED")

    run("a/1")
    run("a/1")
    run("b/2")
    run(None)
    run("c/1", **{"service.n_items": "999"})  # another workload
    run("d/1", version="0.2.0")  # outside the benchmark's experiment versions
    got = {r.target: r for r in cat.results(c, b, "benchflow-benchmarks")}
    assert set(got) == {"a/1", "b/2", cat.NO_TARGET}
    assert got["a/1"].runs == got["a/1"].valid == got["a/1"].finished == 2
    assert got["a/1"].versions == {"0.1.0"}
