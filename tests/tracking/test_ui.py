"""The newcomer's path through the MLflow UI, in a real browser: a sweep, the link
benchflow prints at its end, the real ``mlflow server`` on that store, and headless
Chromium with a fresh profile (nothing chosen before). The page must be the
experiment's runs table (MLflow 3's UI otherwise opens the GenAI "Overview", empty for
a benchmark), with the sweep's trials and their figures; the sweep's parent run must
carry the summary table as its description. docs/results.md shows the same pages.
"""

from __future__ import annotations

import math
import re

import pytest

SWEEP = ["-m", "service=noop", "concurrency=1,2", "duration_s=1", "warmup_s=0"]
KIND_TAG = "mlflow.experimentKind"


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def test_the_link_after_a_sweep_opens_the_runs_table_with_the_trials(
    workdir, mlflow_ui, browser, ui
):
    proc = workdir.run(*SWEEP, timeout=600)
    assert proc.returncode == 0, workdir.explain(proc)

    # what benchflow tells the user: start `mlflow ui` on this store, then open a link
    assert f"see them in MLflow: mlflow ui --backend-store-uri {workdir.tracking_uri}" in (
        proc.stdout
    )
    link = re.search(r"then open (http://\S+)", proc.stdout)
    assert link, f"no link to the experiment at the end of the sweep:\n{proc.stdout[-2000:]}"

    exp = _client(workdir.tracking_uri).get_experiment_by_name("adhoc")
    runs = workdir.runs()
    trials = runs[runs["tags.benchflow.role"] != "sweep"]
    (sweep_name,) = runs.loc[runs["tags.benchflow.role"] == "sweep", "tags.mlflow.runName"]
    assert len(trials) == 2

    base = mlflow_ui(workdir.tracking_uri, workdir.path)
    browser.get(ui.on_server(link.group(1), base))
    ui.wait_for_runs_table(browser)
    assert re.search(rf"#/experiments/{exp.experiment_id}/runs\b", browser.current_url)
    assert "/overview" not in browser.current_url
    assert "No data available" not in ui.page_text(browser)
    assert sweep_name in ui.run_names(browser)
    # what UIs without the GenAI / Model training switch go by: MLflow's "Machine learning"
    assert exp.tags.get(KIND_TAG) == "custom_model_development"

    ui.close_assistant(browser)
    ui.expand_sweeps(browser)
    assert sorted(ui.run_names(browser)) == sorted([sweep_name, *trials["tags.mlflow.runName"]])

    ui.show_benchmark_columns(browser, ["throughput"])
    shown = [float(v) for v in ui.column_values(browser, "throughput") if v not in ("", "-")]
    expected = list(trials["metrics.throughput"])
    assert len(shown) == len(expected), ui.column_values(browser, "throughput")
    for want in expected:
        assert any(math.isclose(got, want, rel_tol=1e-6) for got in shown), (want, shown)

    # the sweep's own page: its description is the summary table, with the same figures
    sweep_id = runs.loc[runs["tags.benchflow.role"] == "sweep", "run_id"].iloc[0]
    browser.get(f"{base}/#/experiments/{exp.experiment_id}/runs/{sweep_id}")
    ui.wait(browser, lambda d: "Description" in ui.page_text(d), what="the sweep run's page")
    ui.expand_description(browser)
    text = ui.page_text(browser)
    assert "2 finished, 0 failed, 0 invalid" in text
    for trial_id, throughput in zip(
        trials["tags.benchflow.trial_id"], trials["metrics.throughput"], strict=True
    ):
        assert trial_id[:12] in text
        assert (f"{throughput:,.0f}" if throughput >= 1000 else f"{throughput:.4g}") in text


def test_an_experiment_gets_its_kind_once_and_keeps_one_someone_chose(tmp_path):
    from benchflow.tracking.client import ensure_experiment

    c = _client(f"sqlite:///{tmp_path}/mlflow.db")
    new = ensure_experiment(c, "new")
    assert c.get_experiment(new).tags[KIND_TAG] == "custom_model_development"

    old = c.create_experiment("made-before")  # by an earlier benchflow, or by hand
    assert KIND_TAG not in c.get_experiment(old).tags
    assert ensure_experiment(c, "made-before") == old
    assert c.get_experiment(old).tags[KIND_TAG] == "custom_model_development"

    chosen = c.create_experiment("chosen", tags={KIND_TAG: "genai_development"})
    assert ensure_experiment(c, "chosen") == chosen
    assert c.get_experiment(chosen).tags[KIND_TAG] == "genai_development"

    c.delete_experiment(old)
    assert ensure_experiment(c, "made-before") == old  # restored, still tagged
    assert c.get_experiment(old).lifecycle_stage == "active"


def test_the_sweep_description_is_a_table_without_secrets():
    from benchflow.tracking.sweep_runs import NOTE_MAX, sweep_description

    def row(job, over, **figures):
        base = {"trial": f"t{job:011d}", "job": str(job), "overrides": over, "status": "finished"}
        return {**base, "valid": True, "unit": "requests_per_s", "error": None, **figures}

    common = "service=x service.password=hunter2-secret tracking.uri=http://u:pw-in-uri@h:5000"
    rows = [
        row(
            0, f"{common} concurrency=1", throughput=1234.5, p50_ms=1.0, p99_ms=2.5, error_rate=0.0
        ),
        row(1, f"{common} concurrency=2", throughput=2345.0, p50_ms=1.1, p99_ms=3.25, error_rate=0),
        {"trial": "t2", "job": "2", "status": "unreadable", "valid": None},
    ]
    counts = {"total": 3, "finished": 2, "failed": 1, "invalid": 0, "retried": 0}
    text = sweep_description(rows, counts)
    assert "hunter2-secret" not in text and "pw-in-uri" not in text
    assert "**2 finished, 1 failed, 0 invalid** of 3 trials" in text
    assert "| 0 | t00000000000 | concurrency=1 | finished | yes | 1,234 | 1 | 2.5 | 0 |" in text
    assert "| 2 | t2 |  | **unreadable** |" in text
    assert "throughput in requests_per_s" in text

    many = [row(i, f"concurrency={i} " + "x" * 200, throughput=float(i)) for i in range(200)]
    long = sweep_description(many, {"total": 200, "finished": 200})
    assert len(long) <= NOTE_MAX
    assert re.search(r"\.\.\. and \d+ more trials: see `summary.md`", long)


@pytest.mark.parametrize(
    ("uri", "hint"),
    [
        ("http://mlflow.example:5000", "http://mlflow.example:5000/#/experiments/7?workflowType="),
        ("sqlite:///x.db", "then open http://127.0.0.1:5000/#/experiments/7?workflowType="),
    ],
)
def test_the_hint_links_to_the_runs_view(uri, hint):
    from benchflow.tracking.client import ui_hint

    assert hint + "machine_learning" in ui_hint(uri, "7")
