"""The ``qa`` benchmark through ``python -m benchflow`` against a **stand-in**
OpenAI-compatible server (``standin_openai.py``: a real HTTP server with scripted
answers and failures), where every figure is known in advance: retries with
exponential backoff on 5xx, a question that still fails counted as an error (not
as wrong), a judge at another endpoint with a judge failure counted, and the
errors for a malformed line and a missing file."""

from __future__ import annotations

import itertools
import json

import pytest
from standin_openai import StandInOpenAI, serve

QUICK = ["warmup_s=0", "monitor.interval_s=0.2", "progress=off", "tracking.upload=false"]


@pytest.fixture
def standin():
    state = StandInOpenAI()
    server, url = serve(state)
    yield state, url
    server.shutdown()
    server.server_close()


def qa_args(url: str, data, *extra: str) -> list[str]:
    return [
        "service=qa",
        f"service.endpoint={url}",
        "service.model=standin-model",
        "service.api=completions",
        f"service.dataset={data}",
        *QUICK,
        *extra,
    ]


def write_set(path, items) -> str:
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return str(path)


def copy_item(id_: str, words: str, **kw) -> dict:
    return {"id": id_, "question": f"Repeat the words: {words}", "answer": words, **kw}


def one_trial(workdir, scenario: str, *args: str):
    proc = workdir.run(f"scenario={scenario}", *args)
    (tdir,) = workdir.trial_dirs(scenario)
    return proc, tdir


def answers(tdir) -> dict[str, dict]:
    rows = (tdir / "custom" / "answers.jsonl").read_text().splitlines()
    return {r["id"]: r for r in map(json.loads, rows)}


def gaps(calls) -> list[float]:
    return [b.t - a.t for a, b in itertools.pairwise(calls)]


def test_api_errors_are_retried_with_backoff_and_counted_as_errors_not_wrong(workdir, standin):
    """Stand-in server: 503 on the first attempts of some questions, always for one,
    400 for another. Retried questions are answered and scored; the ones that still
    fail are errors, outside the accuracy's denominator."""
    state, url = standin
    data = write_set(
        workdir.path / "set.jsonl",
        [
            copy_item("ok1", "alpha", category="copy"),
            copy_item("ok2", "beta", category="copy"),
            copy_item("flaky", "delta [flaky:2]", category="copy"),
            copy_item("after", "eps [flaky-retry-after:1]", category="copy"),
            copy_item("down", "zeta [down]", category="copy"),
            copy_item("bad", "eta [bad]", category="copy"),
            {
                "id": "wrong",
                "question": "What is the capital of Peru?",
                "answer": "Lima",
                "category": "fact",
            },
        ],
    )
    retry = [
        "service.retry.attempts=4",
        "service.retry.backoff_s=0.2",
        "service.retry.multiplier=3",
        "service.retry.max_backoff_s=1.0",
    ]
    proc, tdir = one_trial(workdir, "retries", *qa_args(url, data, *retry))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = workdir.metrics(tdir)
    q = m["quality"]
    assert (q["items"], q["answered"], q["errors"], q["scored"]) == (7, 5, 2, 5)
    assert q["accuracy"] == pytest.approx(4 / 5)  # the wrong answer is the only miss
    assert q["category.copy.accuracy"] == 1.0 and q["category.copy.scored"] == 4
    assert q["category.fact.accuracy"] == 0.0
    assert m["errors"]["by_class"] == {"http_503": 1, "http_400": 1}
    rows = answers(tdir)
    assert rows["down"]["error"] == "http_503" and rows["bad"]["error"] == "http_400"
    assert "score" not in rows["down"]  # an error is never scored

    # Attempts and the waits between them, as the server saw them
    assert len(state.calls_for("[flaky:2]")) == 3
    assert len(state.calls_for("[bad]")) == 1  # a 400 is not worth a retry
    down = state.calls_for("[down]")
    assert len(down) == 4  # attempts in all
    for gap, wait in zip(gaps(down), [0.2, 0.6, 1.0], strict=True):  # x3 each, capped at 1
        assert gap >= wait * 0.95, gaps(down)
    assert gaps(state.calls_for("[flaky-retry-after"))[0] >= 0.5 * 0.95  # Retry-After: 0.5
    assert m["extra"]["retries"] == 2 + 3 + 1
    custom = json.loads((tdir / "custom.json").read_text())
    assert custom["retries_by_class"] == {"http_503": 6}
    # Errors above validity.max_error_rate make the trial invalid; too few requests
    # for a p99 does not (qa's headline is quality), it is a note.
    reasons = m["validity"]["reasons"]
    assert not m["validity"]["valid"] and len(reasons) == 1 and "error rate" in reasons[0]
    assert "p99 needs at least 100" in m["notes"]


def test_judge_at_another_endpoint_scores_and_counts_its_failures(workdir, standin):
    """A stand-in judge (a second stand-in server) under the fixed rubric: it gives 5
    for a right answer and 1 for a wrong one, and no score at all for one answer —
    a judge failure, counted, not scored. Tokens and cost of both are recorded."""
    _state, url = standin
    judge_state = StandInOpenAI(model="standin-judge")
    judge_server, judge_url = serve(judge_state)
    try:
        data = write_set(
            workdir.path / "set.jsonl",
            [
                copy_item("a", "alpha"),
                copy_item("b", "beta"),
                copy_item("flaky", "theta [flaky:1]"),
                copy_item("garbled", "[garble] omega"),
                {"id": "wrong", "question": "Name a prime above 10.", "answer": "11"},
            ],
        )
        prices = [
            "service.prices.prompt_token=0.001",
            "service.prices.completion_token=0.002",
            "service.judge.prices.prompt_token=0.0001",
            "service.judge.prices.completion_token=0.0003",
        ]
        judge_args = [
            "service.scoring=judge",
            f"service.judge.endpoint={judge_url}",
            "service.judge.model=standin-judge",
            "service.judge.api=chat",
            "service.retry.backoff_s=0.05",
        ]
        proc, tdir = one_trial(workdir, "judge", *qa_args(url, data, *judge_args, *prices))
    finally:
        judge_server.shutdown()
        judge_server.server_close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    m = workdir.metrics(tdir)
    q = m["quality"]
    assert (q["answered"], q["scored"], q["judge_failures"], q["errors"]) == (5, 4, 1, 0)
    assert q["accuracy"] == pytest.approx((1 + 1 + 1 + 0) / 4)  # (score - 1) / 4 per answer
    rows = answers(tdir)
    assert rows["garbled"]["judge_failure"] == "no_score" and rows["garbled"]["score"] is None
    assert rows["garbled"]["judge_reply"] == "I cannot grade this."
    assert rows["wrong"]["judge_score"] == 1.0 and rows["a"]["judge_score"] == 5.0
    # Each answer was judged once (the flaky one after one retry), at the judge's endpoint
    judged = [c for c in judge_state.calls if c.status == 200]
    assert len(judged) == 5 and all(c.path == "/v1/chat/completions" for c in judged)
    assert m["extra"]["retries"] == 1 and m["extra"]["retries.judge"] == 1
    x = m["extra"]
    assert x["cost.target"] == pytest.approx(
        x["tokens.prompt"] * 0.001 + x["tokens.completion"] * 0.002
    )
    assert x["cost.judge"] == pytest.approx(
        x["tokens.judge_prompt"] * 0.0001 + x["tokens.judge_completion"] * 0.0003
    )
    assert x["cost.total"] == pytest.approx(x["cost.target"] + x["cost.judge"])
    assert x["tokens.judge_completion"] == 4 * 2 + 4  # "Score: N" x4, "I cannot grade this."
    assert m["phases"]["judge"]["requests"] == 5
    custom = json.loads((tdir / "custom.json").read_text())
    assert custom["scoring"]["rubric"] == "qa-correctness-v1"
    assert custom["tokens_counted_from"] == {"usage": 5}
    # one judge failure in five answers is above judge.max_failure_rate (10%)
    assert m["validity"]["reasons"] == ["the judge failed on 1 of 5 answers (20%; allowed 10%)"]


def test_answers_wait_for_a_judge_that_was_down(workdir, standin):
    """Stand-in target and judge. The judge is down for the first run: no answer can be
    scored, so the trial fails (handled), keeping the answers. The same command once
    the judge is back asks no question again, judges every answer and finishes."""
    state, url = standin
    judge_state = StandInOpenAI(model="standin-judge", down=True)
    judge_server, judge_url = serve(judge_state)
    items = [copy_item(f"q{i}", f"word{i}") for i in range(3)]
    data = write_set(workdir.path / "set.jsonl", items)
    args = qa_args(
        url,
        data,
        "service.scoring=judge",
        f"service.judge.endpoint={judge_url}",
        "service.judge.model=standin-judge",
        "service.retry.attempts=2",
        "service.retry.backoff_s=0.05",
    )
    try:
        first = workdir.run("scenario=judge-down", *args)
        judge_state.down = False
        second = workdir.run("scenario=judge-down", *args)
    finally:
        judge_server.shutdown()
        judge_server.server_close()
    assert first.returncode == 1
    assert "FAILED [nothing_scored] no question could be scored: 3 answered" in first.stdout
    assert second.returncode == 0, second.stdout + second.stderr
    done = [d for d in workdir.trial_dirs("judge-down") if workdir.meta(d)["status"] == "finished"]
    m = workdir.metrics(done[0])
    assert m["load"]["completed"] == 0  # every answer was in: nothing asked again
    assert json.loads((done[0] / "custom.json").read_text())["resumed_items"] == 3
    assert m["quality"]["scored"] == 3 and m["quality"]["accuracy"] == 1.0
    assert len([c for c in state.calls if "word" in c.question]) == 3  # once per question
    assert len(judge_state.calls) == 3 * 2 + 3  # two attempts each while down, then once


def test_a_malformed_line_fails_the_trial_naming_the_line(workdir, standin):
    _, url = standin
    data = workdir.path / "set.jsonl"
    data.write_text(json.dumps(copy_item("a", "x")) + "\n" + '{"question": "q", "answer": }\n')
    proc, tdir = one_trial(workdir, "badline", *qa_args(url, data))
    assert proc.returncode == 1
    assert f"FAILED [bad_dataset] {data}:2: not valid JSON" in proc.stdout
    meta = workdir.meta(tdir)
    assert meta["error"]["kind"] == "handled" and meta["error"]["class"] == "bad_dataset"


def test_a_missing_file_is_refused_before_anything_starts(workdir, standin):
    _, url = standin
    missing = workdir.path / "nowhere.jsonl"
    proc = workdir.run(*qa_args(url, missing))
    assert proc.returncode == 2
    assert f"service.dataset = '{missing}': no such file" in proc.stdout + proc.stderr
    assert not (workdir.results / "adhoc").exists()


def test_the_target_is_needed_to_run_but_not_to_register_the_benchmark(workdir):
    """The target (endpoint + model) is chosen per run: a trial without it is refused
    (exit 2), a benchmark definition without it is registered."""
    proc = workdir.run("service=qa", "service.model=m")
    assert proc.returncode == 2
    assert "service.endpoint = None: the target; or target=NAME@ALIAS" in proc.stdout + proc.stderr
    proc = workdir.run("benchmarks", "register", "qa-smoke", "-s", "qa", "service.max_tokens=8")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "registered qa-smoke (revision 1, parameterised benchmark of qa" in proc.stdout
    proc = workdir.run("benchmarks", "register", "qa-x", "-s", "qa", "service.endpoint=http://h:1")
    assert proc.returncode == 2 and "the target varies between runs" in proc.stdout + proc.stderr
