"""Scoring answers against reference answers, and the bootstrap interval of a mean.

Answers are compared after SQuAD's normalisation (the official evaluation
script of SQuAD v1.1/v2.0): lower case, punctuation removed, the articles
``a``/``an``/``the`` removed, whitespace collapsed. Punctuation here is every
Unicode punctuation character (SQuAD removes ASCII ``string.punctuation``
only; on ASCII text the two agree).

- **exact match**: 1 when the normalised answer equals a normalised reference;
- **token F1**: the harmonic mean of precision and recall of the answer's
  normalised tokens against a reference's (a multiset overlap); when either side
  is empty, 1 if both are, else 0 (SQuAD v2).

With several references an answer gets the best score over them.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize(text: str) -> str:
    """SQuAD's answer normalisation (with Unicode punctuation)."""
    text = text.lower()
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(answer: str, references: Sequence[str]) -> float:
    """1.0 when the normalised answer equals one of the normalised references."""
    a = normalize(answer)
    return float(any(a == normalize(r) for r in references))


def _f1(answer_tokens: list[str], reference_tokens: list[str]) -> float:
    if not answer_tokens or not reference_tokens:
        return float(answer_tokens == reference_tokens)
    same = sum((Counter(answer_tokens) & Counter(reference_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(answer_tokens)
    recall = same / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(answer: str, references: Sequence[str]) -> float:
    """The best token F1 of the answer against the references."""
    a = normalize(answer).split()
    return max(_f1(a, normalize(r).split()) for r in references)


@dataclass(frozen=True)
class Interval:
    """A mean and its bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    n: int


def bootstrap_mean(
    scores: Sequence[float],
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int | Sequence[int] = 0,
) -> Interval:
    """Percentile bootstrap interval of the mean of per-item ``scores``.

    Items are resampled with replacement ``resamples`` times; the interval is
    the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the
    resampled means. Seeded (numpy's ``default_rng(seed)``): the same scores and
    seed always give the same interval. Resamples are drawn in chunks so memory
    stays bounded for large sets.
    """
    x = np.asarray(scores, dtype=float)
    n = len(x)
    if n == 0:
        raise ValueError("no scores to bootstrap")
    mean = float(x.mean())
    if n == 1 or np.all(x == x[0]):
        return Interval(mean, mean, mean, n)  # every resample has this mean
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 10_000_000 // n))
    means = np.empty(resamples)
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        means[start : start + k] = x[rng.integers(0, n, size=(k, n))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Interval(mean, float(low), float(high), n)
