"""What the vector-DB tests share: one small generated dataset for every engine,
its exact neighbours computed independently (numpy), and a driver built in process."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from drivers.base import RunSettings, TrialContext
from drivers.vectordb.dataset import ATTR_RANGE, Dataset, DatasetSettings, generate

# The same small dataset for every engine: clustered, so HNSW at a low ef misses a
# few neighbours (recall < 1 makes "equal to the raw call" a real comparison).
DATA = dict(n=3000, dim=32, clusters=16, spread=0.15, queries=200, seed=0)
SMALL = [f"service.dataset.{k}={v}" for k, v in DATA.items()]
K = 10
# Trials whose test reads only the result files skip the MLflow upload (seconds each).
NO_MLFLOW = "tracking.upload=false"


def vectors() -> tuple[np.ndarray, np.ndarray]:
    return generate(DatasetSettings(**DATA))


def attr() -> np.ndarray:
    """The attribute of every base vector, as the dataset draws it."""
    base, queries = vectors()
    return Dataset("x", base, queries, Path("."), DATA["seed"]).attr


def threshold(selectivity: float) -> int:
    return max(1, round(selectivity * ATTR_RANGE))


def brute_force(metric: str, k: int = K, allowed: np.ndarray | None = None) -> np.ndarray:
    """Exact neighbours with numpy only (independent of the code under test)."""
    base, queries = vectors()
    base, queries = base.astype(np.float64), queries.astype(np.float64)
    if metric == "cosine":
        base = base / np.linalg.norm(base, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    if metric == "L2":
        score = -((queries[:, None, :] - base[None, :, :]) ** 2).sum(-1)
    else:
        score = queries @ base.T
    if allowed is not None:
        mask = np.zeros(len(base), bool)
        mask[allowed] = True
        score[:, ~mask] = -np.inf
    return np.argsort(-score, axis=1, kind="stable")[:, :k]


def recall(found: np.ndarray, truth: np.ndarray, k: int = K) -> float:
    hits = sum(len(set(f[:k]) & set(t[:k])) for f, t in zip(found, truth, strict=True))
    return hits / (k * len(truth))


def in_process(driver_cls, service: dict, tmp_path: Path, data_dir: Path, batch: int = 1):
    """A driver as the trial builds it (settings validated, check() passed)."""
    data = {"name": driver_cls.name, "driver": driver_cls.name, "dataset": dict(DATA), **service}
    settings = driver_cls.Settings.model_validate(data)
    run = RunSettings(batch=batch, concurrency=1, clients=1, seed=0, rate=None)
    driver_cls.check(settings, run)
    (tmp_path / "logs").mkdir(parents=True, exist_ok=True)
    return driver_cls(settings, TrialContext(uuid.uuid4().hex, run, tmp_path, data_dir))
