"""Errors of a benchmark experiment, as the person who ran it sees them: a handled
error (DriverError: code + message) and an unexpected one (with its traceback),
in process and across the worker process used under limits."""

from __future__ import annotations

import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fixtures.benchmark_packages import EXAMPLE, EXAMPLE_CONF

CD = ["-cd", str(EXAMPLE_CONF)]
QUICK = ["warmup_s=0", "monitor.interval_s=0.2"]
# Under a limit the trial runs in a worker process: errors cross a process boundary.
WHERE = {"in_process": [], "worker": ["limits.trial.time_s=120"]}


@pytest.mark.parametrize("where", WHERE)
def test_a_handled_error_shows_its_code_and_message(bench, where):
    scenario = f"err-handled-{where}"
    proc = bench.run(
        *CD,
        "service=intent",
        f"scenario={scenario}",
        "service.target=benchflow_intent.targets:no_such_model",
        *WHERE[where],
        *QUICK,
    )
    assert proc.returncode == 1
    assert "FAILED [target_not_found] cannot load the target" in proc.stdout
    assert "no_such_model" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr  # known errors need no traceback
    (tdir,) = bench.trials(scenario)
    meta = json.loads((tdir / "meta.json").read_text())
    assert meta["status"] == "failed"
    assert meta["error"]["kind"] == "handled" and meta["error"]["class"] == "target_not_found"
    run = bench.runs(scenario).iloc[0]
    assert run["status"] == "FAILED"
    assert run["tags.benchflow.error_class"] == "target_not_found"
    assert run["tags.benchflow.error_kind"] == "handled"
    assert "no_such_model" in run["tags.benchflow.error"]


@pytest.mark.parametrize("where", WHERE)
def test_an_unexpected_error_shows_its_traceback(bench, where):
    scenario = f"err-unexpected-{where}"
    proc = bench.run(
        *CD,
        "service=intent",
        f"scenario={scenario}",
        "service.target=benchflow_intent.targets:broken",
        *WHERE[where],
        *QUICK,
    )
    assert proc.returncode == 1
    assert "FAILED, unexpected KeyError: 'encoder'" in proc.stdout
    # The traceback is on the console and in the trial's files, down to the target's line.
    assert 'return weights["encoder"]' in proc.stdout + proc.stderr
    (tdir,) = bench.trials(scenario)
    tb = (tdir / "logs" / "traceback.txt").read_text()
    assert "benchflow_intent/targets.py" in tb and tb.rstrip().endswith("KeyError: 'encoder'")
    meta = json.loads((tdir / "meta.json").read_text())
    assert meta["error"] == {"kind": "unexpected", "class": "KeyError", "message": "'encoder'"}
    run = bench.runs(scenario).iloc[0]
    assert run["tags.benchflow.error_kind"] == "unexpected"
    assert run["tags.benchflow.error_class"] == "KeyError"
    arts = {a.path for a in bench.client().list_artifacts(run.run_id, "logs")}
    assert "logs/traceback.txt" in arts
    # What the experiment recorded before it failed is kept.
    custom = json.loads((tdir / "custom.json").read_text())
    assert custom["dataset"]["source"] == "shipped"


@pytest.fixture
def http_files(tmp_path):
    """A plain HTTP server over a directory (the experiment downloads its data from it)."""
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(root))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_downloaded_data_is_checked_and_a_mismatch_is_a_handled_error(bench, http_files):
    import hashlib

    root, url = http_files
    data = (EXAMPLE / "src/benchflow_intent/data/intents.jsonl").read_bytes()
    (root / "intents.jsonl").write_bytes(data)
    good = hashlib.sha256(data).hexdigest()
    common = [*CD, "service=intent", "service.dataset=url", "tracking.upload=false", *QUICK]
    src = f"service.dataset_url={url}/intents.jsonl"
    bench.run(*common, "scenario=err-url", src, f"service.dataset_sha256={good}", check=True)
    (tdir,) = bench.trials("err-url")
    assert json.loads((tdir / "metrics.json").read_text())["quality"]["items"] == 104
    bad = "0" * 64
    proc = bench.run(*common, "scenario=err-url-bad", src, f"service.dataset_sha256={bad}")
    assert proc.returncode == 1 and "FAILED [data_corrupt]" in proc.stdout
    assert f"does not match the expected {bad}" in proc.stdout
