"""Vector datasets: generated clustered data, cached with its exact ground truth.

Uniform random vectors make approximate indexes look bad (no structure to
exploit), so generated data is a Gaussian mixture: ``clusters`` centres drawn
N(0, 1) and points around them with standard deviation ``spread``. Queries come
from the same mixture. Everything is a pure function of the parameters and the
seed, cached under ``data_dir/vectors/<name>/`` together with the exact
neighbours of every query (computed once with an exact index).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Metric = Literal["L2", "IP", "cosine"]


class DatasetSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: Literal["generated"] = "generated"
    n: int = Field(20000, ge=1)
    dim: int = Field(64, ge=1)
    clusters: int = Field(64, ge=1)
    spread: float = Field(0.15, gt=0)
    queries: int = Field(1000, ge=1)
    seed: int = 0


@dataclass
class Dataset:
    name: str
    base: np.ndarray  # (n, dim) float32
    queries: np.ndarray  # (nq, dim) float32
    dir: Path

    @property
    def dim(self) -> int:
        return self.base.shape[1]

    def ground_truth(self, metric: Metric, k: int) -> np.ndarray:
        """Exact top-``k`` neighbour ids of every query, computed once and cached."""
        path = self.dir / f"gt_{metric}_k{k}.npy"
        if path.exists():
            return np.load(path)
        import faiss

        base, queries = self.base, self.queries
        if metric == "cosine":
            base, queries = normalized(base), normalized(queries)
        index = faiss.IndexFlatL2(self.dim) if metric == "L2" else faiss.IndexFlatIP(self.dim)
        index.add(base)
        _, ids = index.search(queries, k)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, ids)
        tmp.replace(path)
        return ids


def normalized(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def load(settings: DatasetSettings, data_dir: Path) -> Dataset:
    key = json.dumps(settings.model_dump(), sort_keys=True)
    name = f"gen-n{settings.n}-d{settings.dim}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    d = Path(data_dir) / "vectors" / name
    if (d / "base.npy").exists() and (d / "queries.npy").exists():
        return Dataset(name, np.load(d / "base.npy"), np.load(d / "queries.npy"), d)
    base, queries = generate(settings)
    d.mkdir(parents=True, exist_ok=True)
    for fname, arr in (("base.npy", base), ("queries.npy", queries)):
        tmp = d / f".{fname}.tmp.npy"
        np.save(tmp, arr)
        tmp.replace(d / fname)
    (d / "params.json").write_text(key)
    return Dataset(name, base, queries, d)


def generate(s: DatasetSettings) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(s.seed)
    centres = rng.standard_normal((s.clusters, s.dim), dtype=np.float32)

    def draw(n: int) -> np.ndarray:
        which = rng.integers(0, s.clusters, size=n)
        noise = rng.standard_normal((n, s.dim), dtype=np.float32) * np.float32(s.spread)
        return centres[which] + noise

    return draw(s.n), draw(s.queries)


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean over queries of |found[:k] ∩ truth[:k]| / k (ann-benchmarks' recall)."""
    hits = 0
    for f, t in zip(found[:, :k], truth[:, :k], strict=True):
        hits += len(np.intersect1d(f, t, assume_unique=False))
    return hits / (k * len(truth))
