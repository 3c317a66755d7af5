"""Targets in the registry, resolution into trials, compare and promote — through the
real CLI, on real trials of the in-process sleep driver (tests/registry/conftest.py)."""

import json
from pathlib import Path

import pytest

from .conftest import TRIAL, cli, client


def test_runs_record_the_resolved_target(lab):
    runs = lab.runs("targets")
    trials = runs[runs["tags.benchflow.trial_id"].notna()]
    assert sorted(trials["tags.benchflow.target"].value_counts().items()) == [
        ("sleepy/1", 3),
        ("sleepy/2", 3),
        ("sleepy/3", 3),
    ]
    champ = trials[trials["tags.benchflow.target"] == "sleepy/1"]
    assert set(champ["tags.benchflow.target_ref"]) == {"sleepy@champion"}
    assert set(champ["params.service.service_ms"]) == {"2"}  # the spec was merged
    assert set(champ["params.service.transport"]) == {"inprocess"}
    # one workload for all three targets, three config hashes
    assert trials["tags.benchflow.workload_hash"].nunique() == 1
    assert trials["tags.benchflow.config_hash"].nunique() == 3
    meta = lab.meta(lab.trial_dirs("targets")[0])
    assert meta["target"].startswith("sleepy/") and meta["target_keys"] == ["service"]


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("sleepy@nope", ["target", "no alias 'nope'", "@champion -> 1"]),
        ("sleepy/42", ["target", "no version 42", "versions: 1, 2, 3"]),
        ("nobody@champion", ["target", "no registered target 'nobody'", "sleepy"]),
        ("sleepy", ["target", "NAME@ALIAS", "NAME/VERSION"]),
    ],
)
def test_a_target_that_does_not_resolve_is_a_config_error(lab, target, words, monkeypatch):
    from benchflow.config import ConfigError, compose_trials

    monkeypatch.setenv("MLFLOW_TRACKING_URI", lab.tracking_uri)
    with pytest.raises(ConfigError) as err:
        compose_trials([f"target={target}", "scenario=bad", *TRIAL], multirun=False)
    for w in words:
        assert w in str(err.value), str(err.value)


def test_through_the_entry_point_a_missing_alias_exits_2_before_anything_starts(lab):
    proc = lab.run("target=sleepy@nope", "scenario=bad", *TRIAL)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "benchflow: invalid config: target = 'sleepy@nope': "
        "sleepy has no alias 'nope'; aliases: @champion -> 1"
    )
    assert not (lab.results / "bad").exists()


def test_a_bad_spec_and_overriding_a_target_key_are_config_errors(lab, monkeypatch):
    from benchflow import registry
    from benchflow.config import ConfigError, compose_trials

    monkeypatch.setenv("MLFLOW_TRACKING_URI", lab.tracking_uri)
    bad = "service: sleep\nconfig:\n  service:\n    service_ms: -1\n"
    t = registry.register("sleepy-bad", bad, client=client(lab))
    with pytest.raises(ConfigError) as err:
        compose_trials([f"target={t.label}", *TRIAL], multirun=False)
    assert "service.service_ms = -1" in str(err.value)
    assert "set by target sleepy-bad/1" in str(err.value)
    other = "service = 'noop': target sleepy/1 runs on service 'sleep'"
    with pytest.raises(ConfigError, match=other):
        compose_trials(["target=sleepy/1", "service=noop", *TRIAL], multirun=False)
    with pytest.raises(registry.TargetError, match="unknown key"):
        registry.register("sleepy-bad", "servce: sleep\n", client=client(lab))


def test_targets_list_shows_benchmarks_and_filters(lab):
    out = cli(lab, "targets", "list", "--json").stdout
    found = {t["name"]: t for t in json.loads(out)}
    assert found["sleepy"]["benchmarks"] == {"targets": {"1": 3, "2": 3, "3": 3}}
    assert found["sleepy"]["aliases"]["champion"] == "1"
    v1 = found["sleepy"]["versions"][0]
    assert v1["stage"] == "production" and v1["tags"]["model"] == "sleep-2ms"
    assert v1["tags"]["service"] == "sleep"
    by_tag = json.loads(cli(lab, "targets", "list", "--json", "--tag", "model=sleep-1ms").stdout)
    assert [t["name"] for t in by_tag] == ["sleepy"]
    assert json.loads(cli(lab, "targets", "list", "--json", "--name", "zzz").stdout) == []
    fast = cli(lab, "targets", "list", "--json", "--metric", "throughput > 100000").stdout
    assert json.loads(fast) == []
    some = json.loads(cli(lab, "targets", "list", "--json", "--metric", "throughput > 100").stdout)
    assert "sleepy" in {t["name"] for t in some}
    shown = cli(lab, "targets", "show", "sleepy@champion").stdout
    assert "sleepy/1" in shown and "service_ms: 2" in shown


def test_compare_finds_the_faster_target_and_gates_on_regression(lab, tmp_path):
    proc = cli(
        lab,
        "compare",
        "--baseline",
        "sleepy@champion",
        "--candidate",
        "sleepy/2",
        "--json",
        str(tmp_path / "c.json"),
        "--fail-on-regression",
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["metric"]: r for r in json.loads((tmp_path / "c.json").read_text())["rows"]}
    assert rows["throughput"]["verdict"] == "better"
    assert rows["throughput"]["ratio"] == pytest.approx(2, rel=0.15)
    assert rows["latency_ms.p50"]["verdict"] == "better"
    assert rows["throughput"]["resampling"] == "runs"
    assert rows["latency_ms.p99"]["resampling"] == "runs + requests"
    slower = cli(
        lab, "compare", "--baseline", "sleepy/1", "--candidate", "sleepy/3", "--fail-on-regression"
    )
    assert slower.returncode == 1, slower.stdout + slower.stderr
    assert "regression" in slower.stderr and "throughput" in slower.stderr


def test_compare_says_so_when_nothing_matches(lab):
    proc = lab.run("service=noop", "scenario=other", "concurrency=2", *TRIAL, check=True)
    assert proc.returncode == 0
    runs = lab.runs("other")
    rid = runs["run_id"].iloc[0]
    bad = cli(lab, "compare", "--baseline", "sleepy/1", "--candidate", rid)
    assert bad.returncode == 2
    assert "no matching configurations" in bad.stderr and "concurrency (1 vs 2)" in bad.stderr
    missing = cli(lab, "compare", "--baseline", "sleepy@nope", "--candidate", rid)
    assert missing.returncode == 2 and "no alias 'nope'" in missing.stderr
    nothing = cli(lab, "compare", "--baseline", "no-such-thing", "--candidate", rid)
    assert nothing.returncode == 2 and "is not a target" in nothing.stderr


def test_promotion_is_refused_for_a_slower_version_and_accepted_for_a_faster_one(lab):
    import mlflow

    c = client(lab)
    refused = cli(lab, "promote", "sleepy", "--version", "3")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "refused" in refused.stderr and "throughput is significantly worse" in refused.stdout
    assert "verdict" in refused.stdout  # the table is printed
    assert str(c.get_registered_model("sleepy").aliases["champion"]) == "1"
    v3 = c.get_model_version("sleepy", "3")
    assert v3.tags["benchflow.promotion"].startswith("refused for @champion vs sleepy/1")
    arts = {a.path for a in c.list_artifacts(v3.tags["benchflow.promotion_run"], "promotion")}
    assert arts == {
        "promotion/comparison.json",
        "promotion/comparison.md",
        "promotion/decision.json",
    }

    accepted = cli(lab, "promote", "sleepy", "--version", "2")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "promoted sleepy/2 to @champion" in accepted.stdout
    aliases = {k: str(v) for k, v in c.get_registered_model("sleepy").aliases.items()}
    assert aliases["champion"] == "2" and aliases["previous-champion"] == "1"
    v2 = c.get_model_version("sleepy", "2")
    assert v2.tags["benchflow.stage"] == "production"
    assert v2.tags["benchflow.promotion"].startswith("accepted")
    path = mlflow.artifacts.download_artifacts(
        run_id=v2.tags["benchflow.promotion_run"],
        artifact_path="promotion/decision.json",
        tracking_uri=lab.tracking_uri,
    )
    decision = json.loads(Path(path).read_text())
    assert decision["decision"] == "accepted" and decision["baseline"] == "sleepy/1"
    # put the lab back as the other tests expect it
    c.set_registered_model_alias("sleepy", "champion", "1")


def test_a_target_registered_from_a_trial_run_carries_its_service_config(lab):
    runs = lab.runs("targets")
    trial = runs[runs["tags.benchflow.target"] == "sleepy/3"].iloc[0]
    out = cli(lab, "targets", "register", "from-run", "--from-run", trial["run_id"])
    assert out.returncode == 0, out.stderr
    from benchflow import registry

    t = registry.resolve("from-run/1", client=client(lab))
    assert t.spec.service == "sleep" and t.spec.config["service"]["service_ms"] == 3
    assert t.tags["benchflow.from_run"] == trial["run_id"]
    assert t.source.endswith("/target/spec.yaml") and trial["run_id"] in t.source
