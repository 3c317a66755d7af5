"""Deterministic prompt text, with shared prefixes where a trace shares blocks.

:func:`prompt_for` turns a trace request's ``hash_ids`` into text: block ``b`` is
``block_tokens`` words drawn uniformly from :data:`VOCABULARY` by
``numpy.random.default_rng([seed mod 2^64, b])``, a function of ``(seed, b)`` only,
and the blocks are joined by single spaces. Two requests that share their first
``k`` ids therefore share a byte-identical prefix covering those ``k`` blocks (and
the space after them), as a prefix cache sees them. ``total_tokens`` keeps the first
``total_tokens`` words (trimming the last blocks; a trace's ``input_length``),
without padding when the blocks hold fewer. Block texts are cached (the 4,096 most
recent), since traces reuse blocks.

:func:`synthetic_prompt` is a request's own text when it has no hash ids: ``length``
words drawn by ``numpy.random.default_rng([seed mod 2^64, index, 0x756E69])``, unique
to ``(seed, index)``.

:data:`VOCABULARY` holds 200 short common English words, chosen to be one token each
in the usual BPE vocabularies (with the leading space), so a word is about a token: a
prompt of ``n`` words is about ``n`` tokens (tokenizers differ; count the tokens the
server reports where the exact number matters).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

__all__ = ["VOCABULARY", "prompt_for", "synthetic_prompt"]

_U64 = 1 << 64  # seeds are taken modulo 2^64: numpy's seeding refuses negative numbers
_UNIQUE_TAG = 0x756E69  # "uni": apart from the two-number seeds of the blocks

VOCABULARY: tuple[str, ...] = tuple(
    """
    the of and to in is it you that he was for on are with as his they at be this
    have from or one had by word but not what all were we when your can said there
    use an each which she do how their if will up other about out many then them
    these so some her would make like him into time has look two more write go see
    number no way could people my than first water been call who oil its now find
    long down day did get come made may part over new sound take only little work
    know place year live me back give most very after thing our just name good
    sentence man think say great where help through much before line right too mean
    old any same tell boy follow came want show also around form three small set put
    end does another well large must big even such because turn here why ask went
    men read need land different home us move try kind hand picture again change off
    play spell air away animal house point page letter mother answer found study
    still learn should world high every near
    """.split()  # noqa: SIM905 (200 words read better as text than as 200 literals)
)


@lru_cache(maxsize=4096)
def _block(seed: int, block_id: int, block_tokens: int) -> str:
    rng = np.random.default_rng([seed, block_id])
    idx = rng.integers(0, len(VOCABULARY), size=block_tokens)
    return " ".join(VOCABULARY[i] for i in idx)


def prompt_for(
    hash_ids: Sequence[int],
    *,
    block_tokens: int = 512,
    seed: int = 0,
    total_tokens: int | None = None,
) -> str:
    """The prompt of a request made of blocks ``hash_ids`` (ids >= 0): requests sharing
    leading ids share a byte-identical prefix. ``total_tokens``: keep that many words."""
    if block_tokens < 1:
        raise ValueError(f"block_tokens must be >= 1, got {block_tokens}")
    if total_tokens is not None and total_tokens < 0:
        raise ValueError(f"total_tokens must be >= 0, got {total_tokens}")
    parts: list[str] = []
    left = len(hash_ids) * block_tokens if total_tokens is None else total_tokens
    for block_id in hash_ids:
        if left <= 0:
            break
        if block_id < 0:
            raise ValueError(f"hash ids must be >= 0, got {block_id}")
        text = _block(int(seed) % _U64, int(block_id), block_tokens)
        if left < block_tokens:
            text = " ".join(text.split(" ", left)[:left])
        parts.append(text)
        left -= block_tokens
    return " ".join(parts)


def synthetic_prompt(index: int, length: int, seed: int = 0) -> str:
    """A prompt of ``length`` words of its own, a function of ``(seed, index)``."""
    if length < 0 or index < 0:
        raise ValueError(f"index and length must be >= 0, got {index}, {length}")
    rng = np.random.default_rng([int(seed) % _U64, int(index), _UNIQUE_TAG])
    idx = rng.integers(0, len(VOCABULARY), size=length)
    return " ".join(VOCABULARY[i] for i in idx)
