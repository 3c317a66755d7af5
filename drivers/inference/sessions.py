"""Multi-turn conversations for the ``openai`` driver (``service.sessions.*``).

With ``turns > 1`` one engine request is one *session*: sessions arrive on the
engine's schedule (open loop with ``rate=``/a trace), and inside a session the
turns are sent one after another, each resending the whole history (the chat
``messages`` list grows by the assistant's previous answer and the next user
message; with ``api=completions`` the prompt is the history's text joined), with
``think_s`` seconds between an answer and the next question. That is what makes
a server's prefix cache matter: turn ``k+1``'s prompt starts with turn ``k``'s.

``shared_prefix_groups = G > 0`` gives every session a system prompt of
``prefix_tokens`` words shared with the other sessions of its group; the group is
drawn with Zipf weights ``p(g) ∝ (g+1)^-zipf_theta`` (a few popular system prompts,
a long tail), from ``(seed, session index)`` so it does not depend on which
worker or client process sends the session.

``dataset = PATH`` takes the conversations from a JSONL file instead (ShareGPT
``conversations`` or OpenAI ``messages``; :mod:`drivers.inference.conversations`
reads it). A session sends its conversation's user turns in order (at most
``max_turns`` of them), each resending the history: the previous user turns and
the **server's own answers**, as a chat client does. The dataset's answers are not
sent: they only set each turn's output budget (:func:`answer_budget`). Session
``j`` of the measured phase sends conversation ``order[j mod N]`` of the seeded
order (:meth:`ConversationFile.order`), cycling when the dataset is exhausted; the
warm-up's sessions take the order from its end backwards (``order[-1]``,
``order[-2]``, ...), so the measured sessions are the same whatever the warm-up
sent.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from benchflow.workload.prompts import prompt_for
from drivers.inference.conversations import Conversation, ConversationFile, index_conversations

_GROUP_TAG = 0x67727570  # "grup": keeps the group draws apart from other seed users
_PREFIX_TAG = 0x70726566  # "pref": the group prefixes' text


class SessionSettings(BaseModel):
    """``service.sessions``: conversations of several turns per request (module docstring)."""

    model_config = ConfigDict(extra="forbid")
    turns: int = Field(1, ge=1, description="turns per session (1: one request, no history)")
    think_s: float = Field(0.0, ge=0, description="pause between an answer and the next turn")
    shared_prefix_groups: int = Field(
        0, ge=0, description="system prompts shared by groups of sessions (0: none)"
    )
    prefix_tokens: int = Field(64, ge=1, description="length of a group's system prompt (words)")
    zipf_theta: float = Field(1.0, gt=0, description="skew of the groups' popularity")
    dataset: str | None = Field(
        None,
        description="conversations from a JSONL file (ShareGPT or OpenAI messages; null: "
        "synthetic turns)",
    )
    max_turns: int | None = Field(
        None, ge=1, description="dataset: user turns sent per conversation at most (null: all)"
    )

    @property
    def active(self) -> bool:
        return self.turns > 1 or self.shared_prefix_groups > 0 or self.dataset is not None


class Groups:
    """The shared system prompts and the Zipf draw of a session's group."""

    def __init__(self, s: SessionSettings, seed: int) -> None:
        self.seed = int(seed)
        self.n = s.shared_prefix_groups
        w = np.arange(1, self.n + 1, dtype=np.float64) ** -s.zipf_theta
        self._cdf = np.cumsum(w / w.sum()) if self.n else np.zeros(0)
        # Built once at set-up, off the hot path: G texts of prefix_tokens words.
        self.texts = [
            prompt_for((g,), block_tokens=s.prefix_tokens, seed=self.seed ^ _PREFIX_TAG)
            for g in range(self.n)
        ]

    def of(self, session: int) -> int | None:
        """The group of session number ``session`` (None: no groups)."""
        if not self.n:
            return None
        u = np.random.default_rng([self.seed, int(session), _GROUP_TAG]).random()
        return min(int(np.searchsorted(self._cdf, u, side="right")), self.n - 1)


def history_text(messages: list[dict]) -> str:
    """A conversation as one completions prompt: the turns' texts in order."""
    return "\n".join(m["content"] for m in messages)


class DatasetSessions:
    """The conversations of ``sessions.dataset`` in the trial's seeded order."""

    def __init__(self, s: SessionSettings, seed: int) -> None:
        self.file: ConversationFile = index_conversations(s.dataset)
        self.order = self.file.order(seed)
        self.max_turns = s.max_turns

    def conversation(self, j: int) -> Conversation:
        """What session ``j`` sends (``j < 0``: the warm-up's, from the order's end),
        cut to ``max_turns`` user turns."""
        conv = self.file.read(int(self.order[j % len(self.order)]))
        if self.max_turns is not None and len(conv.turns) > self.max_turns:
            conv = dataclasses.replace(conv, turns=conv.turns[: self.max_turns])
        return conv


def answer_budget(answer: str | None, cap: int) -> int:
    """``max_tokens`` of a dataset turn: the length of the dataset's answer to it in
    words (one word taken as one token, as for synthetic prompts: the same budget on
    every machine, whatever tokenizer it has), at least 1 and at most ``cap`` (the
    class's or the service's ``max_tokens``); ``cap`` when the dataset has no answer
    to the turn."""
    if answer is None:
        return cap
    return min(max(1, len(answer.split())), cap)
