"""How a failed trial is described to whoever ran it.

Two kinds, recorded differently (meta.json ``error``, MLflow tags
``benchflow.error_kind``, ``benchflow.error_class``, ``benchflow.error``):

- **handled**: a known failure raised as :class:`drivers.base.DriverError`
  (or any exception carrying an ``error_class``): the code is the error class,
  the message is shown as is;
- **unexpected**: anything else: the exception's type is the error class and
  its traceback is shown on the console and kept in ``logs/traceback.txt``.

A failure inside a trial's worker process (limits, isolation) crosses the
process boundary as :class:`UnexpectedFailure` (carrying the worker's
traceback) or as a ``DriverError`` with the worker's code.
"""

from __future__ import annotations

import traceback
from dataclasses import asdict, dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Failure:
    kind: Literal["handled", "unexpected"]
    error_class: str
    message: str
    traceback: str

    def record(self) -> dict[str, Any]:
        """The ``error`` block of meta.json (the traceback lives in logs/traceback.txt)."""
        d = asdict(self)
        d.pop("traceback")
        d["class"] = d.pop("error_class")
        return d


class UnexpectedFailure(Exception):
    """An unexpected failure of a trial's worker process, with the worker's traceback."""

    def __init__(self, error_class: str, message: str, traceback_text: str) -> None:
        super().__init__(message)
        self.unexpected_class = error_class
        self.traceback_text = traceback_text


def describe(exc: BaseException) -> Failure:
    """Classify an exception that ended a trial."""
    if isinstance(exc, UnexpectedFailure):
        return Failure("unexpected", exc.unexpected_class, str(exc), exc.traceback_text)
    tb = getattr(exc, "traceback_text", None) or "".join(
        traceback.format_exception(type(exc), exc, exc.__traceback__)
    )
    code = getattr(exc, "error_class", None)
    if isinstance(code, str) and code:
        return Failure("handled", code, str(exc) or code, tb)
    if isinstance(exc, KeyboardInterrupt):
        return Failure("handled", "interrupted", "interrupted (Ctrl-C or SIGINT)", tb)
    name = type(exc).__name__
    return Failure("unexpected", name, _first_line(exc) or name, tb)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text[:4000]
