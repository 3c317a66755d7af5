"""A benchmark package from another team, installed with pip and run through
``python -m benchflow``: discovery, versions, inputs/outputs, data, custom
metadata, deprecation, and the package version in the config hash."""

from __future__ import annotations

import json

from fixtures.benchmark_packages import EXAMPLE_CONF, bench_dir, copy_example, pip_install_target

CD = ["-cd", str(EXAMPLE_CONF)]
QUICK = ["warmup_s=0", "monitor.interval_s=0.2"]


def test_installed_experiments_are_listed_with_versions_and_deprecation(bench):
    out = bench.run("drivers", "--json", check=True).stdout
    rows = {d["name"]: d for d in json.loads(out)}
    for name in ("intent", "intent_shipped", "intent_v0"):
        assert rows[name]["package"] == "benchflow-intent"
        assert rows[name]["version"] == "0.1.0"
        assert rows[name]["family"] == "quality"
    assert rows["intent"]["fixed"] is False and rows["intent_shipped"]["fixed"] is True
    assert rows["intent"]["needs"] == {
        "gpus": 0,
        "cpus": 1,
        "mem_gb": 0.5,
        "time_min": 2,
        "nodes": 1,
    }
    assert rows["intent_v0"]["deprecated"].endswith("use intent")
    assert rows["intent"]["deprecated"] is False
    assert rows["noop"]["package"] == "benchflow"  # the built-ins, found the same way

    schema = json.loads(bench.run("drivers", "--schema", "intent", check=True).stdout)
    assert schema["inputs"]["target"] == ["target", "target_args"]
    props = schema["inputs"]["settings"]["properties"]
    assert {"target", "dataset", "n_items", "resources", "isolation"} <= set(props)
    assert set(schema["outputs"]["quality"]["required"]) >= {"accuracy", "macro_f1"}
    assert schema["version"] == "0.1.0"


def test_example_benchmark_runs_with_its_data_outputs_and_custom_metadata(bench):
    bench.run(*CD, "service=intent", "scenario=pkg-run", "target=keyword/1", *QUICK, check=True)
    (tdir,) = bench.trials("pkg-run")
    meta = json.loads((tdir / "meta.json").read_text())
    m = json.loads((tdir / "metrics.json").read_text())
    assert meta["status"] == "finished" and meta["driver_package"] == "benchflow-intent==0.1.0"
    # One pass over the shipped set: every item classified exactly once.
    q = m["quality"]
    assert q["items"] == 104 and m["load"]["completed"] == 104 and q["unanswered"] == 0
    assert 0.5 < q["accuracy"] < 1.0  # the keyword model misses the hard phrasings
    assert {"accuracy.alarm", "accuracy.music", "accuracy.shopping", "accuracy.weather"} <= set(q)
    assert m["validity"]["valid"] is True
    assert meta["resources"] == {"gpus": 0, "cpus": 1, "mem_gb": 0.5, "time_min": 2, "nodes": 1}

    custom = json.loads((tdir / "custom.json").read_text())
    assert custom["dataset"]["source"] == "shipped" and len(custom["dataset"]["sha256"]) == 64
    confusion = custom["confusion"]
    assert sum(sum(row.values()) for row in confusion.values()) == 104
    correct = sum(confusion[label].get(label, 0) for label in confusion)
    assert correct / 104 == q["accuracy"]
    wrong = (tdir / "custom" / "misclassified.jsonl").read_text().splitlines()
    assert len(wrong) == 104 - correct and all(json.loads(w)["got"] for w in wrong)

    run = bench.runs("pkg-run").iloc[0]
    assert run["tags.benchflow.target"] == "keyword/1"
    assert run["tags.benchflow.driver_package"] == "benchflow-intent==0.1.0"
    assert run["params.custom.dataset.source"] == "shipped"
    assert run["params.custom.target.factory"] == "benchflow_intent.targets:keyword"
    assert run["metrics.quality.accuracy"] == q["accuracy"]
    arts = {a.path for a in bench.client().list_artifacts(run.run_id, "custom")}
    assert "custom/misclassified.jsonl" in arts
    assert "custom.json" in {a.path for a in bench.client().list_artifacts(run.run_id)}


def test_generated_workload_is_a_parameter(bench):
    bench.run(
        *CD,
        "service=intent",
        "scenario=pkg-gen",
        "service.dataset=generated",
        "service.n_items=150",
        "tracking.upload=false",
        *QUICK,
        check=True,
    )
    (tdir,) = bench.trials("pkg-gen")
    m = json.loads((tdir / "metrics.json").read_text())
    assert m["quality"]["items"] == 150 and m["load"]["completed"] == 150
    custom = json.loads((tdir / "custom.json").read_text())
    assert custom["dataset"] == {"source": "generated", "n": 150, "seed": 0, "items": 150}


def test_a_deprecated_experiment_warns_and_is_recorded(bench):
    proc = bench.run(*CD, "service=intent_v0", "scenario=pkg-dep", *QUICK, check=True)
    shown = proc.stdout + proc.stderr
    assert "intent_v0 (benchflow-intent 0.1.0) is deprecated" in shown
    assert "use intent" in shown
    (tdir,) = bench.trials("pkg-dep")
    meta = json.loads((tdir / "meta.json").read_text())
    assert meta["deprecated"] is True and "deprecated" in meta["warnings"][0]
    run = bench.runs("pkg-dep").iloc[0]
    assert run["tags.benchflow.deprecated"] == "true"
    assert "use intent" in run["tags.benchflow.warnings"]


def test_config_hash_includes_the_third_party_package_version(bench, tmp_path):
    """Same name and parameters, another release of the package: another identity."""
    args = [*CD, "service=intent", "scenario=pkg-hash", "tracking.upload=false", *QUICK]
    bench.run(*args, check=True)
    bench.run(*args, check=True)  # a repetition: the same identity
    site2 = tmp_path / "site2"
    pip_install_target(copy_example(tmp_path / "src", "0.2.0"), site2)
    newer = bench_dir(bench.path, site2, tmp_path / "data", tmp_path / "envs")
    newer.run(*args, check=True)
    metas = [json.loads((d / "meta.json").read_text()) for d in bench.trials("pkg-hash")]
    assert [m["driver_package"] for m in metas] == ["benchflow-intent==0.1.0"] * 2 + [
        "benchflow-intent==0.2.0"
    ]
    assert metas[0]["config_hash"] == metas[1]["config_hash"] != metas[2]["config_hash"]
