"""How a question is put to the target: instructions, context, the question.

``instructions`` is either the id of a versioned preset below or literal text.
With ``api: completions`` one prompt is rendered from ``template`` (fields
``{instructions}``, ``{context}``, ``{question}``); a passage renders as
``Context: ...`` and a conversation as ``User: ...`` / ``Assistant: ...`` lines.
With ``api: chat`` the instructions are the system message, a conversation's
turns come next, and the question (after ``Context: ...`` for a passage) is the
last user message.

Presets are never edited: a changed text gets a new id, so results stay
comparable under one id.
"""

from __future__ import annotations

import string

from drivers.quality.dataset import QAItem

INSTRUCTIONS = {
    # Few-shot, one example per kind of question: a base model (no chat tuning)
    # follows the pattern; an instruct model reads it as instructions with examples.
    "short-answer-v1": (
        "Answer each question with a short answer: a word, a name or a number.\n\n"
        "Question: Repeat the words: red kite\nAnswer: red kite\n\n"
        "Context: Tom has a green kite.\nQuestion: What color is Tom's kite?\nAnswer: green\n\n"
        "Question: What is 3 + 4?\nAnswer: 7\n\n"
        "Question: What is the capital of Italy?\nAnswer: Rome"
    ),
    "none": "",
}
DEFAULT_TEMPLATE = "{instructions}{context}Question: {question}\nAnswer:"
TEMPLATE_FIELDS = {"instructions", "context", "question"}


def instructions_text(spec: str | None) -> str:
    """The preset named ``spec``, or ``spec`` itself as literal text."""
    if spec is None:
        return ""
    return INSTRUCTIONS.get(spec, spec)


def template_problem(template: str) -> str | None:
    """Why ``template`` cannot render a prompt (None: it can)."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        return f"not a format string ({exc})"
    if "question" not in fields:
        return "must contain {question}"
    unknown = fields - TEMPLATE_FIELDS
    if unknown:
        return f"unknown field(s) {sorted(unknown)}; allowed: {sorted(TEMPLATE_FIELDS)}"
    return None


def completion_prompt(item: QAItem, instructions: str, template: str = DEFAULT_TEMPLATE) -> str:
    """One prompt for ``/v1/completions``."""
    if isinstance(item.context, str):
        context = f"Context: {item.context}\n"
    elif item.context:
        turns = "".join(f"{t.role.capitalize()}: {t.content}\n" for t in item.context)
        context = f"Conversation:\n{turns}"
    else:
        context = ""
    head = f"{instructions}\n\n" if instructions else ""
    return template.format(instructions=head, context=context, question=item.question)


def chat_messages(item: QAItem, instructions: str) -> list[dict[str, str]]:
    """The messages for ``/v1/chat/completions``."""
    messages = [{"role": "system", "content": instructions}] if instructions else []
    question = item.question
    if isinstance(item.context, str):
        question = f"Context: {item.context}\n\n{question}"
    elif item.context:
        messages += [{"role": t.role, "content": t.content} for t in item.context]
    messages.append({"role": "user", "content": question})
    return messages
