"""The operators' view of a real sweep logged to the team server: the log bundle
(`benchflow logs SWEEP --component X --since T`), retention (`benchflow gc`) and the
Prometheus textfile export with the Grafana dashboard that reads it."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import REPO, Workdir
from prometheus_client.parser import text_string_to_metric_families

from benchflow.analysis.synthetic import SynthTrial, write_trial
from benchflow.tracking.prometheus import PREFIX

from .conftest import SERVER

SCHEMA = {"timestamp", "level", "trial_id", "component", "message"}
DAY = 86400.0


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tracking_server, data_dir):
    """Two real trials of the sleep service (a launched HTTP server whose output is
    captured) in one sweep, logged to the team server, each exporting a textfile."""
    root = tmp_path_factory.mktemp("ops")
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=tracking_server.url,
        BENCHFLOW_DATA_DIR=str(data_dir),
        BENCHFLOW_TEXTFILE_DIR=str(root / "textfiles"),
        MLFLOW_DISABLE_TELEMETRY="true",
        PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    wd = Workdir(root, env)
    scenario = f"ops{uuid.uuid4().hex[:8]}"
    wd.run(
        "-m",
        "service=sleep",
        "service.service_ms=1",
        "seed=1,2",
        f"scenario={scenario}",
        *SERVER,
        "duration_s=1",
        "warmup_s=0.2",
        "monitor.interval_s=0.2",
        check=True,
    )
    (sweep_dir,) = (wd.results / scenario / "_sweeps").iterdir()
    trials = sorted(wd.trial_dirs(scenario), key=lambda d: wd.meta(d)["started_at_epoch"])
    assert len(trials) == 2
    # a slow shared machine may cut a trial's own upload: sync completes it (test_outage)
    wd.run("sync", check=True)
    assert all(json.loads((d / "upload.json").read_text())["state"] == "complete" for d in trials)
    return wd, scenario, sweep_dir, trials


def _bundle(wd: Workdir, sweep_dir: Path, name: str, *args: str) -> dict[str, list[dict]]:
    out = wd.path / f"{name}.tar.gz"
    proc = wd.run("logs", sweep_dir.name, "-o", str(out), *args, check=True)
    assert str(out) in proc.stdout
    files = {}
    with tarfile.open(out) as tar:
        for m in tar.getmembers():
            text = tar.extractfile(m).read().decode()
            rel = m.name.split("/", 1)[1]
            if rel == "manifest.json":
                files[rel] = [json.loads(text)]
            else:
                files[rel] = [json.loads(line) for line in text.splitlines() if line]
    return files


def test_logs_bundle_holds_harness_sut_and_job_logs_in_one_schema(sweep):
    wd, _, sweep_dir, trials = sweep
    files = _bundle(wd, sweep_dir, "all")
    manifest = files.pop("manifest.json")[0]
    events = files.pop("events.jsonl")
    assert manifest["sweep_id"] == sweep_dir.name and manifest["records"] == len(events)
    for t in trials:  # each trial's harness log and its SUT's captured output
        assert f"trials/{t.name}/events.jsonl" in files
        assert f"trials/{t.name}/sleep_server.jsonl" in files, sorted(files)
    assert all(r.keys() >= SCHEMA for recs in files.values() for r in recs)
    assert all(SCHEMA | {"source"} <= r.keys() for r in events)
    times = [datetime.fromisoformat(r["timestamp"]).timestamp() for r in events]
    assert times == sorted(times)  # merged in time order
    comps = {r["component"] for r in events}
    assert "benchflow.trial" in comps and any(c.startswith("sut.") for c in comps), comps
    assert {r["trial_id"] for r in events} >= {t.name for t in trials}
    assert sum(manifest["by_component"].values()) == len(events)


def _comps(records: list[dict]) -> set[str]:
    return {r["component"] for r in records}


def test_logs_component_filter_keeps_that_component_and_its_children(sweep):
    wd, _, sweep_dir, _ = sweep
    files = _bundle(wd, sweep_dir, "sut", "--component", "sut")
    events = files["events.jsonl"]
    assert events and all(r["component"].startswith("sut.") for r in events)
    assert all(k.endswith("sleep_server.jsonl") for k in files if k.startswith("trials/"))
    trial = _bundle(wd, sweep_dir, "trial", "--component", "benchflow.trial")["events.jsonl"]
    assert trial
    assert all(c == "benchflow.trial" or c.startswith("benchflow.trial.") for c in _comps(trial))
    assert not _comps(trial) & _comps(events)


def test_logs_since_drops_what_came_before(sweep):
    wd, _, sweep_dir, trials = sweep
    everything = _bundle(wd, sweep_dir, "all2")["events.jsonl"]
    # from the second trial's start on (an ISO time), the first trial's records are gone
    t2 = datetime.fromtimestamp(wd.meta(trials[1])["started_at_epoch"], timezone.utc)
    later = _bundle(wd, sweep_dir, "since", "--since", t2.isoformat())["events.jsonl"]
    assert later and len(later) < len(everything)
    assert all(datetime.fromisoformat(r["timestamp"]) >= t2 for r in later)
    assert trials[0].name not in {r["trial_id"] for r in later}
    assert trials[1].name in {r["trial_id"] for r in later}
    # a duration back from now: an hour holds everything, a future ISO time nothing
    assert len(_bundle(wd, sweep_dir, "hour", "--since", "1h")["events.jsonl"]) == len(everything)
    bad = wd.run("logs", sweep_dir.name, "--since", "yesterday")
    assert bad.returncode == 2 and "--since 'yesterday'" in bad.stderr


def _backdate(trial_dir: Path, days: float) -> None:
    meta_path = trial_dir / "meta.json"
    meta = json.loads(meta_path.read_text())
    for k in ("started_at_epoch", "ended_at_epoch"):
        meta[k] -= days * DAY
    meta_path.write_text(json.dumps(meta))


def test_gc_prunes_only_old_uploaded_results(sweep, tracking_server, tmp_path):
    wd, scenario, sweep_dir, trials = sweep
    # a copy of the sweep's results (the runs it names are real ones on the server)
    results = tmp_path / "results"
    shutil.copytree(wd.results / scenario, results / scenario)
    old, young = (results / scenario / t.name for t in trials)
    copy_sweep = results / scenario / "_sweeps" / sweep_dir.name
    _backdate(old, 100)
    manifest = json.loads((copy_sweep / "sweep.json").read_text())
    manifest["started_at"] -= 100 * DAY
    (copy_sweep / "sweep.json").write_text(json.dumps(manifest))
    # an old trial never uploaded, and an old one whose run was deleted on the server
    never = write_trial(results, SynthTrial(scenario, scenario, tracking_uri=tracking_server.url))
    gone = write_trial(results, SynthTrial(scenario, scenario, tracking_uri=tracking_server.url))
    from benchflow import tracking

    tracking_server.client().delete_run(tracking.upload_trial(gone))
    for d in (never, gone):
        _backdate(d, 100)
    textfiles = tmp_path / "textfiles"
    shutil.copytree(wd.path / "textfiles", textfiles)
    old_prom = textfiles / f"{PREFIX}{old.name}.prom"
    os.utime(old_prom, (time.time() - 100 * DAY,) * 2)

    def gc(*args: str):
        return wd.run(
            "gc",
            "--older-than",
            "90d",
            "--results-dir",
            str(results),
            "--textfile-dir",
            str(textfiles),
            "-v",
            *args,
            check=True,
        ).stdout

    dry = gc()
    assert f"would delete trial {old} (100.0 d old)" in dry
    assert f"would delete textfile {old_prom}" in dry
    assert f"kept trial {never}: finished, not uploaded" in dry
    assert f"kept trial {gone}: deleted in MLflow: run " in dry
    assert f"kept sweep {copy_sweep}: holds kept trials: 1" in dry  # the young one
    assert str(young) not in dry  # younger than 90 days: not even considered
    assert "would delete 2 (1 trials), kept 3 older than 90d" in dry and "[dry run" in dry
    # the reasons, most frequent first, then by name (deterministic)
    assert "— 1 deleted in MLflow; 1 finished, not uploaded (run `benchflow sync` first); " in dry
    assert "; 1 holds kept trials [dry run" in dry
    assert old.is_dir() and old_prom.exists()  # a dry run deletes nothing

    done = gc("--delete")
    assert "deleted 2 (1 trials)" in done
    assert not old.exists() and not old_prom.exists()
    assert young.is_dir() and never.is_dir() and gone.is_dir() and copy_sweep.is_dir()

    _backdate(young, 100)  # now the whole sweep is old and uploaded: it goes, logs and all
    gc("--delete")
    assert not young.exists() and not copy_sweep.exists()
    assert never.is_dir() and gone.is_dir()  # never what is not (safely) in MLflow
    assert len(tracking.sync(results).uploaded) == 1  # and `never` still uploads


def test_prometheus_textfile_parses_and_matches_the_trial(sweep):
    wd, scenario, sweep_dir, trials = sweep
    for t in trials:
        path = wd.path / "textfiles" / f"{PREFIX}{t.name}.prom"
        text = path.read_text()
        assert text.endswith("\n")
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert all(f.type == "gauge" and f.documentation for f in families.values())
        samples = {}
        for f in families.values():
            for s in f.samples:
                assert s.labels["trial_id"] == t.name and s.labels["scenario"] == scenario
                assert s.labels["sweep_id"] == sweep_dir.name and s.labels["service"] == "sleep"
                samples[(s.name, s.labels.get("quantile"))] = s
        m = wd.metrics(t)
        assert samples[("benchflow_throughput", None)].value == m["throughput"]["value"]
        assert samples[("benchflow_latency_ms", "0.99")].value == m["latency_ms"]["p99"]
        assert samples[("benchflow_requests_completed", None)].value == m["load"]["completed"]
        info = samples[("benchflow_trial_info", None)]
        assert info.value == 1 and info.labels["status"] == "finished"
        assert info.labels["valid"] == str(m["validity"]["valid"]).lower()
        assert samples[("benchflow_trial_valid", None)].value == float(m["validity"]["valid"])
        end = samples[("benchflow_trial_end_timestamp_seconds", None)].value
        assert end == pytest.approx(wd.meta(t)["ended_at_epoch"])


def _exprs(node) -> list[str]:
    if isinstance(node, dict):
        own = [node["expr"]] if "expr" in node else []
        return own + [e for v in node.values() for e in _exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in _exprs(v)]
    return []


def test_grafana_dashboard_queries_only_metrics_the_exporter_writes(sweep):
    import re

    wd, _, _, trials = sweep
    written = set()
    for t in trials:
        text = (wd.path / "textfiles" / f"{PREFIX}{t.name}.prom").read_text()
        written |= {f.name for f in text_string_to_metric_families(text)}
    dash = json.loads((REPO / "docs" / "grafana" / "benchflow.json").read_text())
    panels = [p for p in dash["panels"] if p.get("type") != "row"]
    assert len(panels) >= 5
    used = set()
    for p in panels:
        exprs = _exprs(p.get("targets", []))
        assert exprs, f"panel {p['title']!r} queries nothing"
        for e in exprs:
            names = set(re.findall(r"\b(benchflow_[a-z0-9_]+)\b", e))
            assert names, f"panel {p['title']!r}: {e!r} reads no benchflow metric"
            assert names <= written, f"panel {p['title']!r}: {names - written} not exported"
            used |= names
    # the template variables read labels the exporter writes
    for var in dash["templating"]["list"]:
        if var.get("type") == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            assert set(re.findall(r"\b(benchflow_[a-z0-9_]+)\b", q)) <= written, q
    assert {"benchflow_throughput", "benchflow_latency_ms", "benchflow_trial_info"} <= used
