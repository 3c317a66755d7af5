"""The ``qa`` benchmark end to end against the real llama.cpp server (Gemma 3 270M,
the CPU stand-in for vLLM), through ``python -m benchflow``: accuracy overall and
per category with bootstrap intervals, tokens and cost, MLflow; a run killed
half-way (SIGKILL) resumes and ends with the scores of an uninterrupted run; the
judge path with the same llama.cpp server as the judge.

Decoding is deterministic (temperature 0, the trial's seed), so two runs of one
configuration give the same answers."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import Workdir

N = 15  # questions: three of each category of the shipped set (they are interleaved)
QUICK = ["warmup_s=0", "monitor.interval_s=0.2", "progress=off"]
PRICES = ["service.prices.prompt_token=2e-06", "service.prices.completion_token=8e-06"]


def qa_args(srv, *extra: str) -> list[str]:
    return [
        "service=qa",
        f"service.endpoint={srv.url}",
        f"service.model={srv.model}",
        "service.api=completions",  # a base model: the few-shot instructions, completed
        "service.max_tokens=8",
        f"service.n_items={N}",
        *QUICK,
        *extra,
    ]


@pytest.fixture(scope="module")
def qa_workdir(tmp_path_factory, data_dir) -> Workdir:
    """One working directory (and MLflow store) for this module's trials."""
    return Workdir.at(tmp_path_factory.mktemp("qa"), data_dir)


@pytest.fixture(scope="module")
def whole(qa_workdir, llamacpp_server):
    """An uninterrupted run over N questions, logged to MLflow."""
    qa_workdir.run("scenario=whole", *qa_args(llamacpp_server, *PRICES), check=True)
    (tdir,) = qa_workdir.trial_dirs("whole")
    return tdir


def answers(tdir) -> dict[str, dict]:
    rows = (tdir / "custom" / "answers.jsonl").read_text().splitlines()
    return {r["id"]: r for r in map(json.loads, rows)}


def test_qa_end_to_end_accuracy_categories_tokens_cost_mlflow(qa_workdir, whole):
    m, meta = qa_workdir.metrics(whole), qa_workdir.meta(whole)
    assert meta["status"] == "finished"
    q, x = m["quality"], m["extra"]
    rows = answers(whole)
    assert (q["items"], q["answered"], q["scored"], q["errors"]) == (N, N, N, 0)
    # accuracy is the mean exact match of the recorded answers, inside its interval
    em = [r["exact_match"] for r in rows.values()]
    assert q["accuracy"] == pytest.approx(sum(em) / N) == pytest.approx(q["exact_match"])
    assert 0 < q["accuracy"] < 1  # the 270M model gets some right, not all (see the set)
    assert q["accuracy_ci_low"] < q["accuracy"] < q["accuracy_ci_high"]
    cats = {"copy", "context", "arithmetic", "fact", "conversation"}
    assert {k.split(".")[1] for k in q if k.startswith("category.")} == cats
    for cat in cats:
        mine = [r["exact_match"] for r in rows.values() if r["category"] == cat]
        assert q[f"category.{cat}.scored"] == len(mine) == 3
        assert q[f"category.{cat}.accuracy"] == pytest.approx(sum(mine) / 3)
        assert q[f"category.{cat}.ci_low"] <= q[f"category.{cat}.accuracy"]
        assert q[f"category.{cat}.accuracy"] <= q[f"category.{cat}.ci_high"]
    # tokens from llama.cpp's usage (not streamed), and their cost
    assert x["tokens.prompt"] == sum(r["prompt_tokens"] for r in rows.values()) > 90 * N
    assert x["tokens.completion"] == sum(r["completion_tokens"] for r in rows.values()) > 0
    assert x["cost.target"] == pytest.approx(
        x["tokens.prompt"] * 2e-6 + x["tokens.completion"] * 8e-6
    )
    assert x["cost.total"] == x["cost.target"] and x["retries"] == 0
    assert json.loads((whole / "custom.json").read_text())["tokens_counted_from"] == {"usage": N}
    # latency per question as for any trial; valid although p99 needs 100 requests
    assert m["latency_ms"]["count"] == N and m["latency_ms"]["p50"] > 0
    assert m["latency_ms"]["p99"] is None and m["throughput"]["unit"] == "requests_per_s"
    assert m["validity"] == {"valid": True, "reasons": []}
    assert "p99 needs at least 100" in m["notes"]
    run = qa_workdir.runs("whole").iloc[0]
    assert run["metrics.quality.accuracy"] == pytest.approx(q["accuracy"])
    assert run["metrics.quality.accuracy_ci_high"] == pytest.approx(q["accuracy_ci_high"])
    assert run["metrics.quality.category.copy.accuracy"] == pytest.approx(
        q["category.copy.accuracy"]
    )
    assert run["metrics.extra.tokens.prompt"] == x["tokens.prompt"]
    assert run["metrics.extra.cost.total"] == pytest.approx(x["cost.total"])
    assert run["tags.benchflow.valid"] == "true"
    assert run["params.custom.scoring.method"] == "exact"


def test_an_interrupted_qa_run_resumes_and_scores_equal_an_uninterrupted_run(
    qa_workdir, whole, llamacpp_server, data_dir
):
    """SIGKILL mid-run (nothing gets to clean up), then the same command again: it
    asks only the questions left, and its scores equal the uninterrupted run's."""
    cmd = [sys.executable, "-m", "benchflow", "scenario=resume", "tracking.upload=false"]
    cmd += qa_args(llamacpp_server)
    proc = subprocess.Popen(
        cmd,
        cwd=qa_workdir.path,
        env=qa_workdir.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        log = _wait_for_answers(qa_workdir, "resume", data_dir, 4, proc)
    finally:
        proc.kill()
        proc.wait()
    asked = [json.loads(line)["id"] for line in log.read_text().splitlines()]
    assert 4 <= len(asked) < N and len(set(asked)) == len(asked)

    qa_workdir.run(
        "scenario=resume", "tracking.upload=false", *qa_args(llamacpp_server), check=True
    )
    first, second = qa_workdir.trial_dirs("resume")
    if qa_workdir.meta(first)["status"] != "running":
        first, second = second, first
    assert qa_workdir.meta(first)["status"] == "running"  # killed: never reported finished
    m = qa_workdir.metrics(second)
    assert json.loads((second / "custom.json").read_text())["resumed_items"] == len(asked)
    assert m["load"]["completed"] == N - len(asked)  # no question asked twice
    assert not log.parent.exists()  # a finished trial leaves no state behind

    assert m["quality"] == qa_workdir.metrics(whole)["quality"]
    got, want = answers(second), answers(whole)
    assert {k: r["answer"] for k, r in got.items()} == {k: r["answer"] for k, r in want.items()}
    # tokens cover the whole evaluation, the interrupted part included
    assert m["extra"]["tokens.prompt"] == qa_workdir.metrics(whole)["extra"]["tokens.prompt"]


def _wait_for_answers(workdir, scenario, data_dir, n, proc, timeout_s=180):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the trial ended before it could be interrupted"
        trials = workdir.trial_dirs(scenario) if (workdir.results / scenario).exists() else []
        if trials and (trials[0] / "meta.json").exists():
            digest = workdir.meta(trials[0])["config_hash"]
            log = data_dir / "state" / digest / "rep0" / "answers.jsonl"
            if log.exists() and len(log.read_text().splitlines()) >= n:
                return log
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} questions answered in {timeout_s} s")


def test_judge_path_with_llamacpp_as_the_judge(qa_workdir, llamacpp_server):
    """The same llama.cpp server as the judge (completions, the rubric ending in
    "Score:"). A 270M judge is a poor one: whatever it replies, every answer is
    either scored on the rubric's scale or counted as a judge failure. The target is
    streamed here: llama.cpp sends no usage in streams, so tokens are counted with
    the GGUF's tokenizer."""
    srv = llamacpp_server
    n = 4
    args = qa_args(
        srv,
        f"service.n_items={n}",
        "service.stream=true",
        f"service.tokenizer={srv.gguf}",
        "service.scoring=judge",
        f"service.judge.endpoint={srv.url}",
        f"service.judge.model={srv.model}",
        "service.judge.api=completions",
        "service.judge.max_tokens=4",
        "service.judge.prices.prompt_token=1e-06",
        "tracking.upload=false",
    )
    qa_workdir.run("scenario=judge", *args, check=True)
    (tdir,) = qa_workdir.trial_dirs("judge")
    m = qa_workdir.metrics(tdir)
    q, x = m["quality"], m["extra"]
    rows = answers(tdir)
    assert q["answered"] == n and q["scored"] + q["judge_failures"] == n
    for r in rows.values():
        if r["score"] is None:
            assert r["judge_failure"] == "no_score"
        else:
            assert 1 <= r["judge_score"] <= 5 and r["score"] == (r["judge_score"] - 1) / 4
    if q["scored"]:
        scored = [r["score"] for r in rows.values() if r["score"] is not None]
        assert q["accuracy"] == pytest.approx(sum(scored) / len(scored))
    assert m["phases"]["judge"]["requests"] == n
    assert x["tokens.judge_prompt"] > 100 * n and x["tokens.judge_completion"] > 0
    assert x["cost.judge"] == pytest.approx(x["tokens.judge_prompt"] * 1e-6)
    custom = json.loads((tdir / "custom.json").read_text())
    assert custom["tokens_counted_from"] == {"tokenizer": n}
    assert custom["scoring"]["rubric"] == "qa-correctness-v1"
    assert m["ttfb_ms"]["count"] == n  # streamed: time to first token per question
