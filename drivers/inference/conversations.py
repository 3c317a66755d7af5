"""Conversations from a dataset file, for ``service.sessions.dataset`` (sessions.py).

A dataset is a JSONL file, one conversation a line, in either shape (the keys of
a turn may be those of either: ``from``/``role``, ``value``/``content``):

- ShareGPT: ``{"id": ..., "conversations": [{"from": "human", "value": ...},
  {"from": "gpt", "value": ...}, ...]}``;
- OpenAI chat: ``{"messages": [{"role": "user", "content": ...},
  {"role": "assistant", "content": ...}, ...]}`` (a ``content`` given as a list of
  parts keeps the text of its ``{"type": "text", "text": ...}`` parts).

Roles: ``human``/``user`` are user turns; ``gpt``/``assistant`` (and the other names
of :data:`drivers.inference.prompts.ASSISTANT`) are the dataset's answers; a
``system`` message before the first user turn is the conversation's system prompt.
Every other role (tools, functions, a system message later on) is left out. The
answers following user turn *k* up to the next user turn are the dataset's answer
*k* (several are joined with a newline); answers before the first user turn are
left out. A user turn of blank text is left out with its answers. A conversation
with no user turn left is **skipped** and counted (:attr:`ConversationFile.skipped`).
Blank lines are ignored.

:func:`index_conversations` reads the file once, streamed: it checks every line and
keeps only the byte offset, length and line number of each usable conversation
(24 bytes each) and the file's SHA-256; a conversation is parsed again when it is
sent (:meth:`ConversationFile.read`, one ``pread``). A file of millions of lines is
never held as parsed objects. The index is cached per process and file version
(path, size, modification time). A malformed line raises
:class:`ConversationError`, a ``ValueError`` whose message is
``"<path>:<line>: <what is wrong>"`` (``"<path>: ..."`` when the file cannot be
read), as a trace's :class:`~benchflow.workload.trace.TraceError` does. Gzip files
are refused: conversations are read back by their offset in the file.

:meth:`ConversationFile.order` is the order in which a trial sends them: a
permutation of the usable conversations drawn from the seed alone (numpy PCG64
seeded with ``(seed, "conv")``), the same on every machine.

``SAMPLE_CONVERSATIONS`` is a small dataset shipped with the package (20 short
conversations of 1 to 4 user turns, written for the tests and examples).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from array import array
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from drivers.inference.prompts import ASSISTANT, HUMAN

__all__ = [
    "SAMPLE_CONVERSATIONS",
    "Conversation",
    "ConversationError",
    "ConversationFile",
    "Turn",
    "index_conversations",
]

SAMPLE_CONVERSATIONS: Path = Path(__file__).resolve().parent / "data" / "sample_conversations.jsonl"
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_ORDER_TAG = 0x636F6E76  # "conv": keeps the order's draws apart from other seed users
_U64 = 1 << 64
SHAPES = (
    "each line must be a JSON object with 'conversations' (ShareGPT: from/value) "
    "or 'messages' (OpenAI: role/content)"
)


class ConversationError(ValueError):
    """A dataset that cannot be used; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One user turn and the dataset's answer to it (``None``: the dataset has none)."""

    user: str
    answer: str | None


@dataclass(frozen=True, slots=True)
class Conversation:
    """One conversation of the dataset: its line, ``id`` (if any), system prompt and
    user turns in order."""

    line: int
    id: str | None
    system: str | None
    turns: tuple[Turn, ...]


def _text(value: Any) -> str | None:
    """A turn's text: a string, or the text parts of a list of content parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for p in value:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, dict) and p.get("type", "text") == "text":
                if not isinstance(p.get("text"), str):
                    return None
                parts.append(p["text"])
        return "".join(parts)
    return None


def parse_conversation(obj: Any, where: str, line: int = 0) -> Conversation:
    """The conversation in one line's JSON value (``where``: ``"<path>:<line>"`` for
    errors); it may have no turns (the caller skips it)."""
    if type(obj) is not dict:
        raise ConversationError(f"{where}: a {type(obj).__name__}, not an object; {SHAPES}")
    if "conversations" in obj:
        key = "conversations"
    elif "messages" in obj:
        key = "messages"
    else:
        raise ConversationError(f"{where}: keys {sorted(obj)[:6]}; {SHAPES}")
    items = obj[key]
    if type(items) is not list:
        raise ConversationError(f"{where}: '{key}' must be a list of turns")
    system: list[str] = []
    turns: list[tuple[str, list[str]]] = []
    current: list[str] | None = None  # the answers of the last user turn
    for n, t in enumerate(items, 1):
        if type(t) is not dict:
            raise ConversationError(f"{where}: turn {n} of '{key}' is not an object")
        role = t.get("from", t.get("role"))
        if not isinstance(role, str):
            raise ConversationError(f"{where}: turn {n} has no 'from' (ShareGPT) or 'role'")
        raw = t.get("value", t.get("content"))
        role = role.lower()
        if raw is None and role in ASSISTANT:
            raw = ""  # an assistant turn of tool calls only
        text = _text(raw)
        if text is None:
            raise ConversationError(
                f"{where}: turn {n} ({role}): its 'value'/'content' must be text, got {raw!r:.60}"
            )
        if role in HUMAN:
            if text.strip():
                current = []
                turns.append((text, current))
            else:
                current = None  # left out, with its answers
        elif role in ASSISTANT:
            if current is not None:
                current.append(text)
        elif role == "system" and not turns:
            system.append(text)
    ident = obj.get("id")
    return Conversation(
        line,
        None if ident is None else str(ident),
        "\n".join(system) if system else None,
        tuple(Turn(u, "\n".join(a) if a else None) for u, a in turns),
    )


class ConversationFile:
    """The index of a dataset's usable conversations (module docstring); conversation
    ``i`` is read back from the file when asked for."""

    def __init__(self, path: str, size: int, mtime_ns: int) -> None:
        self.path = path
        self.size = size
        self.mtime_ns = mtime_ns
        self.sha256 = ""
        self.lines = 0  # lines in the file (blank ones included)
        self.skipped = 0  # conversations without a user turn
        self.turns = 0  # user turns of the usable conversations
        self._offsets = array("q")
        self._lengths = array("q")
        self._line_nos = array("q")
        self._fd: int | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._offsets)

    def _build(self) -> None:
        h = hashlib.sha256()
        offsets, lengths, line_nos = self._offsets, self._lengths, self._line_nos
        loads, path = json.loads, self.path
        pos = line_no = 0
        try:
            with open(path, "rb") as f:
                for raw in f:
                    line_no += 1
                    h.update(raw)
                    start, n = pos, len(raw)
                    pos += n
                    body = raw[3:] if line_no == 1 and raw.startswith(_BOM) else raw
                    if not body.strip():
                        continue
                    where = f"{path}:{line_no}"
                    try:
                        obj = loads(body)
                    except json.JSONDecodeError as exc:
                        raise ConversationError(
                            f"{where}: not JSON ({exc.msg}); {SHAPES}"
                        ) from None
                    except ValueError as exc:  # bytes that are not UTF-8
                        raise ConversationError(f"{where}: not JSON ({exc}); {SHAPES}") from None
                    conv = parse_conversation(obj, where, line_no)
                    if not conv.turns:
                        self.skipped += 1
                        continue
                    self.turns += len(conv.turns)
                    offsets.append(start)
                    lengths.append(n)
                    line_nos.append(line_no)
        except OSError as exc:
            raise ConversationError(
                f"{path}: cannot read the conversations after line {line_no}: {exc.strerror or exc}"
            ) from None
        self.lines = line_no
        self.sha256 = h.hexdigest()

    def _fileno(self) -> int:
        with self._lock:
            if self._fd is None:
                try:
                    fd = os.open(self.path, os.O_RDONLY)
                except OSError as exc:
                    raise ConversationError(
                        f"{self.path}: cannot read the conversations: {exc.strerror or exc}"
                    ) from None
                st = os.fstat(fd)
                if (st.st_size, st.st_mtime_ns) != (self.size, self.mtime_ns):
                    os.close(fd)
                    raise ConversationError(
                        f"{self.path}: the file changed since it was indexed "
                        f"(size {self.size} -> {st.st_size}); run again"
                    )
                self._fd = fd
            return self._fd

    def read(self, i: int) -> Conversation:
        """Usable conversation number ``i`` (0 <= i < len), parsed from its line."""
        off, n, line = self._offsets[i], self._lengths[i], self._line_nos[i]
        raw = os.pread(self._fileno(), n, off)
        where = f"{self.path}:{line}"
        if len(raw) != n:
            raise ConversationError(f"{where}: the file changed since it was indexed")
        if line == 1 and raw.startswith(_BOM):
            raw = raw[3:]
        try:
            conv = parse_conversation(json.loads(raw), where, line)
        except ValueError as exc:
            raise ConversationError(
                f"{where}: no longer a conversation (the file changed since it was indexed?): {exc}"
            ) from None
        if not conv.turns:
            raise ConversationError(f"{where}: the file changed since it was indexed")
        return conv

    def order(self, seed: int) -> np.ndarray:
        """The seeded permutation of the usable conversations a trial sends them in
        (``int32`` where it fits: 4 bytes a conversation)."""
        rng = np.random.default_rng([int(seed) % _U64, _ORDER_TAG])
        perm = rng.permutation(len(self))
        return perm.astype(np.int32) if len(self) < 2**31 else perm

    def describe(self) -> dict[str, Any]:
        """What the lineage records: the file, its SHA-256 and what it holds."""
        return {
            "path": self.path,
            "sha256": self.sha256,
            "lines": self.lines,
            "conversations": len(self),
            "user_turns": self.turns,
            "skipped_no_user_turn": self.skipped,
        }

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fd"] = None  # each process opens the file itself
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def index_conversations(path: str | os.PathLike) -> ConversationFile:
    """The index of the conversations in ``path`` (``~`` expanded; a relative path is
    taken from the working directory), read once per process and file version.

    Raises :class:`ConversationError` when the file cannot be read, is gzip, or has a
    malformed line (naming the file and line).
    """
    p = Path(path).expanduser().resolve()
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ConversationError(f"{path}: not a regular file")
        with open(p, "rb") as f:
            gz = f.read(2) == _GZIP_MAGIC
    except OSError as exc:
        raise ConversationError(
            f"{path}: cannot read the conversations: {exc.strerror or exc}"
        ) from None
    if gz:
        raise ConversationError(
            f"{path}: a gzip file; decompress it (conversations are read by their offset)"
        )
    return _index(str(p), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=4)
def _index(path: str, size: int, mtime_ns: int) -> ConversationFile:
    idx = ConversationFile(path, size, mtime_ns)
    idx._build()
    return idx
