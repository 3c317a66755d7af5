"""The pieces of the ``qa`` benchmark with known answers: SQuAD normalisation, exact
match and token F1, the bootstrap interval (against scipy's), the judge's score
parsing and rubric, the QA set's parsing and its errors, prompts, and backoff."""

from __future__ import annotations

import json

import numpy as np
import pytest

from drivers.base import DriverError
from drivers.quality import dataset, judge, prompt, scoring
from drivers.quality.client import RetrySettings, backoff_delay


# -- exact match and F1 ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("The Cat!", "cat"),
        ("  An  apple, please. ", "apple please"),
        ("Paris。", "paris"),  # Unicode punctuation goes too
        ("a theatre", "theatre"),  # only whole-word articles
        ("", ""),
    ],
)
def test_squad_normalisation(text, normal):
    assert scoring.normalize(text) == normal


def test_exact_match_after_normalisation_best_over_references():
    assert scoring.exact_match(" the Paris.", ["Paris"]) == 1.0
    assert scoring.exact_match("Paris, France", ["Paris"]) == 0.0
    assert scoring.exact_match("7", ["seven", "7"]) == 1.0
    assert scoring.exact_match("", ["x"]) == 0.0


def test_token_f1_known_values():
    # "cat sat on mat" vs "cat on mat": 3 shared tokens, P = 3/4, R = 3/3
    assert scoring.token_f1("the cat sat on the mat", ["a cat on a mat"]) == pytest.approx(6 / 7)
    # repeated tokens count as a multiset: "on on" shares one "on" with "on mat"
    assert scoring.token_f1("on on", ["on mat"]) == pytest.approx(0.5)
    assert scoring.token_f1("dog", ["cat"]) == 0.0
    assert scoring.token_f1("big red dog", ["dog", "red dog"]) == pytest.approx(0.8)  # best
    assert scoring.token_f1("the", ["a"]) == 1.0  # both empty after normalisation (SQuAD v2)
    assert scoring.token_f1("the", ["cat"]) == 0.0


# -- the bootstrap interval ------------------------------------------------------------
def test_bootstrap_is_seeded_and_brackets_the_mean():
    rng = np.random.default_rng(7)
    x = (rng.random(200) < 0.3).astype(float)
    a = scoring.bootstrap_mean(x, 0.95, 2000, seed=3)
    assert a == scoring.bootstrap_mean(x, 0.95, 2000, seed=3)
    assert a != scoring.bootstrap_mean(x, 0.95, 2000, seed=4)
    assert a.low < a.mean < a.high and a.n == 200
    assert a.mean == pytest.approx(x.mean())
    narrow = scoring.bootstrap_mean(x, 0.5, 2000, seed=3)
    assert a.low < narrow.low < narrow.high < a.high


def test_bootstrap_agrees_with_scipy():
    """An independent implementation (scipy.stats.bootstrap, percentile method) gives
    the same interval within resampling noise."""
    stats = pytest.importorskip("scipy.stats")
    x = np.random.default_rng(1).random(150)  # continuous scores, like F1
    ours = scoring.bootstrap_mean(x, 0.95, 20000, seed=0)
    ref = stats.bootstrap(
        (x,), np.mean, confidence_level=0.95, n_resamples=20000, method="percentile", random_state=0
    ).confidence_interval
    assert ours.low == pytest.approx(ref.low, abs=0.005)
    assert ours.high == pytest.approx(ref.high, abs=0.005)


def test_bootstrap_degenerate_sets():
    assert scoring.bootstrap_mean([1.0, 1.0, 1.0]) == scoring.Interval(1.0, 1.0, 1.0, 3)
    assert scoring.bootstrap_mean([0.25]) == scoring.Interval(0.25, 0.25, 0.25, 1)
    with pytest.raises(ValueError):
        scoring.bootstrap_mean([])


# -- the judge ------------------------------------------------------------------------
RUBRIC = judge.RUBRICS["qa-correctness-v1"]


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("Score: 4", 4.0),
        ("**Score:** 5", 5.0),
        ("The answer matches. [[5]]", 5.0),
        ("score = 2", 2.0),
        ("My score is 3.", 3.0),
        ("Score: 2\nOn reflection, Score: 4", 4.0),  # the last one counts
        ("I would give it 4/5.", 4.0),
        ("3 out of 5", 3.0),
        (" 5", 5.0),  # a completions judge continuing "Score:"
        ("4.5", 4.5),
        ("Score: 7", None),  # outside the scale: a failure, not a clamp
        ("0", None),
        ("The candidate is correct.", None),
        ("", None),
    ],
)
def test_judge_score_parsing(reply, score):
    assert judge.parse_score(reply, RUBRIC) == score


def test_the_rubric_is_fixed_and_normalises_to_unit_interval():
    """qa-correctness-v1 names one exact text: editing it must give a new id."""
    assert RUBRIC.sha256 == "fcdf012a82e720ac6e924f418c4ee22696e8ff6c8d16ea2063b94f33a4f97646"
    assert (RUBRIC.normalise(1), RUBRIC.normalise(3), RUBRIC.normalise(5)) == (0.0, 0.5, 1.0)
    item = dataset.QAItem(id="q", question="Who?", answers=("Ada", "Ada Lovelace"), context="Ada.")
    text = judge.completion_prompt(RUBRIC, item, " Ada ")
    assert "Reference answer(s): Ada | Ada Lovelace\nCandidate answer: Ada\n" in text
    assert "Context: Ada.\n" in text and text.endswith("Score:")


# -- the QA set -----------------------------------------------------------------------
def _lines(*objs) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)


def test_parse_items_in_every_form():
    items = dataset.parse(
        _lines(
            {"id": 1, "question": "Q1", "answer": "A"},
            "",
            {"question": "Q2", "answers": ["B", "b2"], "category": "cat-1", "note": "ignored"},
            {
                "id": "c",
                "question": "Q3",
                "answer": "C",
                "context": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yo"},
                ],
            },
        ),
        "set.jsonl",
    )
    assert items[0].id == "1" and items[0].answers == ("A",)
    assert items[1].id.startswith("h") and items[1].answers == ("B", "b2")
    assert items[1].category == "cat-1"
    assert items[2].context[1].role == "assistant"
    # an id made from the content is stable
    again = dataset.parse(_lines({"question": "Q2", "answers": ["B", "b2"]}), "x")
    assert again[0].id == items[1].id


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["{not json"], "set.jsonl:1: not valid JSON"),
        (
            [{"question": "ok", "answer": "a"}, {"question": "no answer"}],
            "set.jsonl:2: needs 'answer'",
        ),
        ([{"question": "", "answer": "a"}], "set.jsonl:1: question:"),
        ([{"question": "q", "answers": []}], "set.jsonl:1: answers:"),
        (
            [{"question": "q", "answer": " "}],
            "set.jsonl:1: answers: Value error, a reference answer is empty",
        ),
        ([{"question": "q", "answer": "a", "category": "a b"}], "set.jsonl:1: category:"),
        (
            [{"question": "q", "answer": "a", "context": [{"role": "bot", "content": "x"}]}],
            "set.jsonl:1: context",
        ),
        (["[1, 2]"], "set.jsonl:1: expected a JSON object"),
        (
            [
                {"id": "x", "question": "q", "answer": "a"},
                "",
                {"id": "x", "question": "r", "answer": "b"},
            ],
            "set.jsonl:3: id 'x' repeats line 1",
        ),
        ([""], "set.jsonl: no questions"),
    ],
)
def test_malformed_lines_name_file_and_line(lines, message):
    with pytest.raises(DriverError) as err:
        dataset.parse(_lines(*lines), "set.jsonl")
    assert err.value.code == "bad_dataset"
    assert str(err.value).startswith(message), str(err.value)


def test_a_missing_or_unreadable_file_names_its_path(tmp_path):
    with pytest.raises(
        DriverError, match=f"service.dataset = '{tmp_path}/nope.jsonl': cannot read"
    ):
        dataset.load(str(tmp_path / "nope.jsonl"))


def test_the_shipped_set():
    items, prov = dataset.load("shipped")
    assert prov == {"source": dataset.SHIPPED, "sha256": dataset.SHIPPED_SHA256, "items": 42}
    assert {i.category for i in items} == {"copy", "context", "arithmetic", "fact", "conversation"}
    first, prov5 = dataset.load("shipped", n_items=5)
    assert len(first) == 5 and len({i.category for i in first}) == 5  # interleaved categories
    assert prov5["sha256"] == prov["sha256"]


# -- prompts and backoff --------------------------------------------------------------
def test_prompts_for_completions_and_chat():
    ins = prompt.instructions_text("short-answer-v1")
    assert (
        ins.startswith("Answer each question")
        and prompt.instructions_text("Be brief.") == "Be brief."
    )
    passage = dataset.QAItem(id="p", question="What color?", answers=("red",), context="It is red.")
    talk = dataset.QAItem(
        id="t",
        question="My name?",
        answers=("Ola",),
        context=(
            dataset.Turn(role="user", content="I am Ola."),
            dataset.Turn(role="assistant", content="Hi."),
        ),
    )
    assert (
        prompt.completion_prompt(passage, "")
        == "Context: It is red.\nQuestion: What color?\nAnswer:"
    )
    assert prompt.completion_prompt(talk, "X") == (
        "X\n\nConversation:\nUser: I am Ola.\nAssistant: Hi.\nQuestion: My name?\nAnswer:"
    )
    assert prompt.chat_messages(talk, "X") == [
        {"role": "system", "content": "X"},
        {"role": "user", "content": "I am Ola."},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "My name?"},
    ]
    assert prompt.chat_messages(passage, "")[-1]["content"] == "Context: It is red.\n\nWhat color?"
    assert prompt.template_problem("Q: {question}") is None
    assert "must contain {question}" in prompt.template_problem("no field")
    assert "unknown field" in prompt.template_problem("{question} {answer}")


def test_backoff_is_exponential_capped_and_honours_retry_after():
    p = RetrySettings(backoff_s=0.5, multiplier=2, max_backoff_s=3)
    assert [backoff_delay(p, k, None) for k in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 3, 3]
    assert backoff_delay(p, 1, 2.0) == 2.0  # the server asked for longer
    assert backoff_delay(p, 3, 0.1) == 2.0  # ... or for less: the backoff stands
    assert backoff_delay(p, 1, 60) == 3  # never past the cap
