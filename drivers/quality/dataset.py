"""QA sets: JSONL files of questions with reference answers.

One JSON object per line (blank lines are skipped; other keys are ignored):

- ``question`` (string, required);
- ``answer`` (string) or ``answers`` (a list of strings): the reference(s);
- ``id`` (string or number, optional): the item's identity in checkpoints;
  without it, a hash of the question, its context and its references;
- ``context`` (optional): a passage (string) the question is about, or the
  conversation before the question (a list of ``{"role": "user"|"assistant"|"system",
  "content": ...}``);
- ``category`` (optional): letters, digits, ``_`` or ``-``; figures are reported
  per category.

A malformed line is a handled error (``bad_dataset``) naming the file and the
line. The set shipped with benchflow (``shipped``) is package data checked
against its sha256.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from drivers.base import DriverError

SHIPPED = "qa_smoke.jsonl"
SHIPPED_SHA256 = "ae6dd3a305049fdb9c7d5c16524da92b62b206ac04668b10bf0c6fe168c0c05b"


class Turn(BaseModel):
    """One message of a conversation given as context."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    role: Literal["system", "user", "assistant"]
    content: str


class QAItem(BaseModel):
    """One question of a QA set."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    answers: tuple[str, ...] = Field(min_length=1)
    context: str | tuple[Turn, ...] | None = None
    category: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")

    @field_validator("answers")
    @classmethod
    def _no_empty_reference(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(not a.strip() for a in v):
            raise ValueError("a reference answer is empty")
        return v


def _item(raw: Any) -> QAItem:
    if not isinstance(raw, dict):
        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
    d = dict(raw)
    if "answers" not in d and "answer" in d:
        d["answers"] = d.pop("answer")
    if isinstance(d.get("answers"), str):
        d["answers"] = [d["answers"]]
    if "answers" not in d:
        raise ValueError("needs 'answer' (a string) or 'answers' (a list of strings)")
    if isinstance(d.get("id"), int | float) and not isinstance(d.get("id"), bool):
        d["id"] = str(d["id"])
    if d.get("id") is None:
        key = json.dumps([d.get("question"), d.get("context"), d.get("answers")], sort_keys=True)
        d["id"] = "h" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return QAItem.model_validate(d)


def parse(text: str, source: str) -> list[QAItem]:
    """The items of a JSONL text; ``source`` names it in errors (``FILE:LINE: ...``)."""
    items: list[QAItem] = []
    first_line: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = _item(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DriverError(f"{source}:{n}: not valid JSON ({exc.msg})", "bad_dataset") from None
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "line"
            raise DriverError(f"{source}:{n}: {where}: {err['msg']}", "bad_dataset") from None
        except ValueError as exc:
            raise DriverError(f"{source}:{n}: {exc}", "bad_dataset") from None
        if item.id in first_line:
            raise DriverError(
                f"{source}:{n}: id {item.id!r} repeats line {first_line[item.id]}", "bad_dataset"
            )
        first_line[item.id] = n
        items.append(item)
    if not items:
        raise DriverError(f"{source}: no questions in it", "bad_dataset")
    return items


def load(spec: str, n_items: int | None = None) -> tuple[list[QAItem], dict[str, Any]]:
    """The set named by ``spec`` (``shipped`` or a path), its first ``n_items`` if given,
    and its provenance (source, sha256 of the whole file, item count)."""
    if spec == "shipped":
        raw = (resources.files("drivers.quality") / "data" / SHIPPED).read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if digest != SHIPPED_SHA256:
            raise DriverError(
                f"the shipped {SHIPPED} has sha256 {digest}, expected {SHIPPED_SHA256}: "
                "reinstall benchflow",
                "data_corrupt",
            )
        source = SHIPPED
    else:
        path = Path(spec).expanduser()
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise DriverError(
                f"service.dataset = {spec!r}: cannot read it ({exc.strerror})", "bad_dataset"
            ) from None
        digest = hashlib.sha256(raw).hexdigest()
        source = str(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DriverError(f"{source}: not UTF-8 ({exc})", "bad_dataset") from None
    items = parse(text, source)
    if n_items is not None:
        items = items[:n_items]
    return items, {"source": source, "sha256": digest, "items": len(items)}
