"""Scoring answers with a judge model at another endpoint, under a fixed rubric.

A rubric is versioned: its id names one exact text, which is never edited (a
changed rubric gets a new id), so judge scores under one id stay comparable.
The id and the sha256 of its text are recorded with every trial.

The judge's reply is parsed for the score, robustly, in this order:

1. ``[[N]]`` (MT-Bench's convention);
2. the last ``Score: N`` (also ``score = N``, ``score is N``; any case);
3. ``N/5`` (``N out of 5``) for the rubric's top mark;
4. a number the reply starts with (a completions judge continuing ``Score:``).

A score outside the rubric's scale, or a reply without one, is a **judge
failure** — counted and reported, never scored as wrong or right.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from drivers.quality.dataset import QAItem

_NUM = r"(\d+(?:\.\d+)?)"


@dataclass(frozen=True)
class Rubric:
    id: str
    low: int  # the scale: integers low..high
    high: int
    system: str
    template: str  # fields: question, context, references, answer

    @property
    def sha256(self) -> str:
        blob = "\x00".join([self.id, str(self.low), str(self.high), self.system, self.template])
        return hashlib.sha256(blob.encode()).hexdigest()

    def normalise(self, score: float) -> float:
        """The score on [0, 1] (low -> 0, high -> 1)."""
        return (score - self.low) / (self.high - self.low)


RUBRICS = {
    "qa-correctness-v1": Rubric(
        id="qa-correctness-v1",
        low=1,
        high=5,
        system=(
            "You grade answers to questions. Compare the candidate answer with the "
            "reference answer(s) and rate how correct it is."
        ),
        template=(
            "Question: {question}\n"
            "{context}"
            "Reference answer(s): {references}\n"
            "Candidate answer: {answer}\n\n"
            "Rate the candidate answer from 1 to 5:\n"
            "5 = correct: it means the same as a reference answer (wording, case and "
            "politeness do not matter)\n"
            "4 = correct, with a small inaccuracy or unneeded extra content\n"
            "3 = partly correct\n"
            "2 = mostly wrong, with one correct element\n"
            "1 = wrong, off-topic, or no answer\n"
            'Reply with "Score: N", where N is 1, 2, 3, 4 or 5.'
        ),
    ),
}


def _context(item: QAItem) -> str:
    if isinstance(item.context, str):
        return f"Context: {item.context}\n"
    if item.context:
        turns = "".join(f"{t.role.capitalize()}: {t.content}\n" for t in item.context)
        return f"Conversation before the question:\n{turns}"
    return ""


def grading_text(rubric: Rubric, item: QAItem, answer: str) -> str:
    """The rubric filled in for one answer."""
    return rubric.template.format(
        question=item.question,
        context=_context(item),
        references=" | ".join(item.answers),
        answer=answer.strip() or "(no answer)",
    )


def chat_messages(rubric: Rubric, item: QAItem, answer: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": rubric.system},
        {"role": "user", "content": grading_text(rubric, item, answer)},
    ]


def completion_prompt(rubric: Rubric, item: QAItem, answer: str) -> str:
    # Ends with "Score:" so a base model's continuation is the score itself.
    return f"{rubric.system}\n\n{grading_text(rubric, item, answer)}\n\nScore:"


def parse_score(reply: str, rubric: Rubric) -> float | None:
    """The score in a judge's reply, or None (no score, or one outside the scale)."""
    patterns = (
        rf"\[\[\s*{_NUM}\s*\]\]",
        rf"\bscore\b\s*(?:is|:|=)?\s*\**\s*{_NUM}",
        rf"{_NUM}\s*(?:/|out of)\s*{rubric.high}\b",
    )
    found = next((m[-1] for p in patterns if (m := re.findall(p, reply, re.IGNORECASE))), None)
    if found is None and (m := re.match(rf"\s*\**\s*{_NUM}\b", reply)):
        found = m.group(1)
    if found is None:
        return None
    value = float(found)
    return value if rubric.low <= value <= rubric.high else None
