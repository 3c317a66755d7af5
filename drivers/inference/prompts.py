"""Prompts for the ``openai`` driver: synthetic ones of controlled length, or a JSONL
dataset; and the local tokenizer that counts tokens when the server does not.

Synthetic prompts are random words drawn from the trial's seed. Every prompt
differs from its first word on, so a server's prefix cache finds nothing to
reuse unless ``prefix_tokens`` asks for a shared prefix. With a tokenizer the
prompt is cut to exactly the asked number of tokens; without one, one word is
taken as one token (the server's ``usage.prompt_tokens``, when it sends it, says
how many there really were).

Dataset lines (JSONL, one object per line), whichever of these keys it has:

- ShareGPT: ``{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}]}``
- chat: ``{"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}``
- pairs: ``{"prompt": ..., "output": ...}`` (or ``completion``/``response``; optional
  ``output_tokens``)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from drivers.base import DriverError

log = logging.getLogger("benchflow.drivers.prompts")

# Common English words: each is a single token for most LLM tokenizers (with its
# leading space), so word counts track token counts when no tokenizer is at hand.
_WORDS_TEXT = """
time year people way day man thing woman life child world school state family student
group country problem hand part place case week company system program question work
government number night point home water room mother area money story fact month lot
right study book eye job word business issue side kind head house service friend father
power hour game line end member law car city name president team minute idea kid body
information back parent face others level office door health person art war history
party result change morning reason research girl guy moment air teacher force education
foot boy age policy music market sense nation plan college interest death experience
effect class control care field development role effort rate heart drug show leader
light voice wife police mind price report decision son view relationship town road arm
difference value building action model season society tax director position player
record paper space ground form event official matter center couple site project activity
star table need court oil situation cost industry figure street image phone data picture
practice piece land product doctor wall patient worker news test movie north love
support technology step baby computer type attention film tree source organization hair
window evidence population site truth river stone garden bridge
"""
WORDS = tuple(_WORDS_TEXT.split())

HUMAN = {"human", "user"}
ASSISTANT = {"gpt", "assistant", "chatgpt", "bard", "model"}


class Tokenizer(Protocol):
    """The two calls the driver needs from a tokenizer."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class GGUFTokenizer:
    """The tokenizer inside a GGUF model file (llama.cpp, vocabulary only: ≈1 s to load)."""

    def __init__(self, path: str | Path) -> None:
        from llama_cpp import Llama

        self._llm = Llama(str(path), vocab_only=True, verbose=False)

    def encode(self, text: str) -> list[int]:
        # special=True: a special token streamed as text (<start_of_image>) counts as one.
        return self._llm.tokenize(text.encode(), add_bos=False, special=True)

    def decode(self, ids: list[int]) -> str:
        return self._llm.detokenize(ids).decode(errors="replace")


class HFTokenizer:
    """A Hugging Face tokenizer from a local ``tokenizer.json`` or model directory."""

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        if p.is_file():
            from tokenizers import Tokenizer as _T

            tok = _T.from_file(str(p))
            self._encode = lambda s: tok.encode(s, add_special_tokens=False).ids
            self._decode = tok.decode
        else:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self._encode = lambda s: tok.encode(s, add_special_tokens=False)
            self._decode = tok.decode

    def encode(self, text: str) -> list[int]:
        return list(self._encode(text))

    def decode(self, ids: list[int]) -> str:
        return self._decode(ids)


def load_tokenizer(spec: str | None, fallback: str | None = None) -> Tokenizer | None:
    """The tokenizer named by ``spec`` (a .gguf, a tokenizer.json, a model dir or id).

    ``spec="auto"`` tries ``fallback`` (the served model's file or id) and returns
    None when nothing local can be loaded; an explicit spec that fails raises.
    """
    if spec is None:
        return None
    target = fallback if spec == "auto" else spec
    if not target:
        return None
    try:
        if str(target).endswith(".gguf"):
            return GGUFTokenizer(target)
        return HFTokenizer(target)
    except Exception as exc:
        if spec == "auto":
            log.info("no local tokenizer for %s (%s): tokens counted otherwise", target, exc)
            return None
        raise DriverError(
            f"service.tokenizer = {spec!r}: cannot load it ({type(exc).__name__}: {exc}); "
            "give a .gguf file, a tokenizer.json (needs `tokenizers`), a local model "
            "directory (needs `transformers`), auto, or null",
            "bad_tokenizer",
        ) from None


@dataclass(frozen=True)
class Prompt:
    """One prompt: plain text (completions) and/or chat messages, and its lengths."""

    text: str
    messages: tuple[dict, ...] | None
    input_tokens: int  # as counted here (exact with a tokenizer, else words)
    output_tokens: int  # the max_tokens to ask for


def _lengths(rng: np.random.Generator, mean: int, ratio: float, n: int) -> np.ndarray:
    lo, hi = max(1, int(mean * (1 - ratio))), max(1, int(mean * (1 + ratio)))
    return rng.integers(lo, hi + 1, size=n)


def _words(rng: np.random.Generator, n: int) -> str:
    idx = rng.integers(0, len(WORDS), size=n)
    return " ".join(WORDS[i] for i in idx)


def synthetic(
    n: int,
    input_tokens: int,
    output_tokens: int,
    range_ratio: float,
    prefix_tokens: int,
    seed: int,
    tokenizer: Tokenizer | None,
    *,
    in_lengths: np.ndarray | None = None,
    out_lengths: np.ndarray | None = None,
) -> list[Prompt]:
    """``n`` prompts of random words with controlled input and output lengths.

    Lengths are uniform on ``[n(1-r), n(1+r)]`` (``range_ratio``), unless
    ``in_lengths``/``out_lengths`` give them (``n`` lengths drawn elsewhere, e.g. by a
    :class:`~benchflow.workload.lengths.LengthSampler`).
    """
    rng = np.random.default_rng([seed, 0x5EED])
    # Drawn in this order from this generator as before lengths could be given, so
    # the default settings still give the very same prompts.
    ins = _lengths(rng, input_tokens, range_ratio, n) if in_lengths is None else in_lengths
    outs = _lengths(rng, output_tokens, range_ratio, n) if out_lengths is None else out_lengths
    prefix = _fit(_words(rng, prefix_tokens + 8), prefix_tokens, tokenizer) if prefix_tokens else ""
    out = []
    for i in range(n):
        want = int(ins[i])
        # Over-generate, then cut to the exact count with the tokenizer.
        body = _fit(_words(rng, want + want // 4 + 4), want, tokenizer)
        text = f"{prefix} {body}" if prefix else body
        out.append(Prompt(text, None, prefix_tokens + want, int(outs[i])))
    return out


def _fit(text: str, tokens: int, tokenizer: Tokenizer | None) -> str:
    if tokenizer is None:
        return " ".join(text.split()[:tokens])
    ids = tokenizer.encode(" " + text)[:tokens]
    return tokenizer.decode(ids).strip()


def dataset(
    path: str | Path,
    n: int,
    max_tokens: int,
    output_len: str,
    seed: int,
    tokenizer: Tokenizer | None,
) -> list[Prompt]:
    """Up to ``n`` prompts from a JSONL file, shuffled with ``seed``.

    Raises :class:`DriverError` (``bad_dataset``) naming the file and line of the
    first line that is not one of the accepted shapes.
    """
    p = Path(path).expanduser()
    rows: list[tuple[str, tuple[dict, ...], str | None, int | None]] = []
    try:
        fh = open(p, encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise DriverError(f"service.prompts.path = {str(path)!r}: {exc}", "bad_dataset") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            rows.append(_parse_line(p, lineno, line))
    if not rows:
        raise DriverError(f"{p}: no prompts (the file is empty)", "bad_dataset")
    order = np.random.default_rng([seed, 0xDA7A]).permutation(len(rows))[:n]
    out = []
    for i in order:
        text, messages, reference, out_tokens = rows[int(i)]
        n_in = len(tokenizer.encode(text)) if tokenizer else len(text.split())
        if output_len == "dataset":
            if out_tokens is None and reference is not None:
                out_tokens = len(tokenizer.encode(reference)) if tokenizer else None
            n_out = min(max(1, out_tokens), max_tokens) if out_tokens else max_tokens
        else:
            n_out = max_tokens
        out.append(Prompt(text, messages, n_in, n_out))
    return out


def _parse_line(path: Path, lineno: int, line: str):
    where = f"{path}:{lineno}"
    shapes = (
        "each line must be a JSON object with 'conversations' (ShareGPT), 'messages' or 'prompt'"
    )
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DriverError(f"{where}: not JSON ({exc.msg}); {shapes}", "bad_dataset") from None
    if not isinstance(obj, dict):
        raise DriverError(
            f"{where}: a {type(obj).__name__}, not an object; {shapes}", "bad_dataset"
        )
    if "conversations" in obj or "messages" in obj:
        turns = obj.get("conversations", obj.get("messages"))
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            raise DriverError(f"{where}: conversation is not a list of turns", "bad_dataset")
        msgs = []
        for t in turns:
            role = str(t.get("from", t.get("role", ""))).lower()
            content = t.get("value", t.get("content"))
            if not isinstance(content, str):
                raise DriverError(f"{where}: a turn without text ({t!r:.80})", "bad_dataset")
            msgs.append(
                ("user" if role in HUMAN else "assistant" if role in ASSISTANT else role, content)
            )
        first_user = next((i for i, (r, _) in enumerate(msgs) if r == "user"), None)
        if first_user is None:
            raise DriverError(f"{where}: no human/user turn", "bad_dataset")
        reply = msgs[first_user + 1][1] if first_user + 1 < len(msgs) else None
        prompt = msgs[first_user][1]
        messages = tuple({"role": r, "content": c} for r, c in msgs[: first_user + 1])
        return prompt, messages, reply, None
    if "prompt" in obj:
        prompt = obj["prompt"]
        if not isinstance(prompt, str) or not prompt:
            raise DriverError(f"{where}: 'prompt' must be a non-empty string", "bad_dataset")
        reference = obj.get("output", obj.get("completion", obj.get("response")))
        n_out = obj.get("output_tokens")
        if n_out is not None and (not isinstance(n_out, int) or n_out < 1):
            raise DriverError(f"{where}: 'output_tokens' must be a positive integer", "bad_dataset")
        messages = ({"role": "user", "content": prompt},)
        return prompt, messages, reference if isinstance(reference, str) else None, n_out
    raise DriverError(f"{where}: keys {sorted(obj)[:6]}; {shapes}", "bad_dataset")
