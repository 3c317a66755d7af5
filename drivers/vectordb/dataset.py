"""Vector datasets: generated clustered data, or standard files from a local path.

Sources (``service.dataset.source``):

``generated``  a Gaussian mixture from the seed: ``clusters`` centres drawn
               N(0, 1) and points around them with standard deviation
               ``spread``; queries come from the same mixture. Uniform random
               vectors would make approximate indexes look bad (no structure to
               exploit). Cached under ``data_dir/vectors/<name>/``.
``vecs``       the SIFT/GIST format: ``base`` and ``query`` files in ``.fvecs``
               (float32) or ``.bvecs`` (uint8), ground truth in ``.ivecs``.
``hdf5``       an ann-benchmarks file: datasets ``train``, ``test``, ``neighbors``
               (and ``distances``), the metric in the ``distance`` attribute.

Nothing is downloaded; a missing file is an error naming its path. A file's own
ground truth is used when it answers the question asked (same metric, the whole
base set, at least ``k`` columns, no filter); otherwise the exact neighbours are
computed once with an exact FAISS index and cached next to the dataset, under
``data_dir/vectors/<name>/``.

Every base vector also has an integer attribute ``attr`` drawn uniformly from
``[0, ATTR_RANGE)`` with the seed; a filter ``attr < t`` keeps a fraction
``t / ATTR_RANGE`` of the vectors (the filtered-search selectivity).
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
ATTR_RANGE = 10_000
# ann-benchmarks' names for the metrics its files were built with.
HDF5_METRICS: dict[str, Metric] = {"euclidean": "L2", "angular": "cosine", "dot": "IP", "ip": "IP"}


class DatasetMissing(FileNotFoundError):
    """A dataset file named in the config does not exist."""

    error_class = "dataset_missing"


class DatasetInvalid(ValueError):
    """A dataset file exists but cannot be used as asked (format, dimensions)."""

    error_class = "dataset_invalid"


class DatasetSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: Literal["generated", "vecs", "hdf5"] = "generated"
    # generated
    n: int = Field(20000, ge=1, description="generated: base vectors")
    dim: int = Field(64, ge=1, description="generated: dimensions")
    clusters: int = Field(64, ge=1)
    spread: float = Field(0.15, gt=0)
    queries: int = Field(1000, ge=1, description="generated: query vectors")
    seed: int = 0
    # files
    path: str | None = Field(None, description="hdf5: the ann-benchmarks file")
    base: str | None = Field(None, description="vecs: base vectors (.fvecs or .bvecs)")
    query: str | None = Field(None, description="vecs: query vectors (.fvecs or .bvecs)")
    truth: str | None = Field(None, description="vecs: exact neighbours (.ivecs), optional")
    truth_metric: Metric = Field("L2", description="vecs: the metric the .ivecs was built with")
    max_base: int | None = Field(None, ge=1, description="files: use the first N base vectors")
    max_queries: int | None = Field(None, ge=1, description="files: use the first N queries")

    def files(self) -> dict[str, str]:
        """The files this dataset reads, by config key (empty for generated data)."""
        if self.source == "hdf5":
            return {"path": self.path} if self.path else {}
        if self.source == "vecs":
            return {k: v for k, v in (("base", self.base), ("query", self.query)) if v} | (
                {"truth": self.truth} if self.truth else {}
            )
        return {}

    def problem(self) -> tuple[str, object, str] | None:
        """What makes these settings unusable, as (key, value, allowed); None when fine.

        Reads file headers only (existence, shapes), so it is cheap enough for a
        driver's ``check()``.
        """
        if self.source == "hdf5" and not self.path:
            return ("service.dataset.path", None, "source=hdf5 needs the path of the file")
        if self.source == "vecs" and not (self.base and self.query):
            missing = "base" if not self.base else "query"
            return (f"service.dataset.{missing}", None, "source=vecs needs base and query files")
        for key, p in self.files().items():
            if not Path(p).expanduser().is_file():
                return (f"service.dataset.{key}", p, f"no such file: {Path(p).expanduser()}")
        try:
            shapes = self.shapes()
        except DatasetInvalid as exc:
            return ("service.dataset", self.source, str(exc))
        if shapes["base"][1] != shapes["query"][1]:
            return (
                "service.dataset",
                self.source,
                f"dimension mismatch: base vectors have {shapes['base'][1]} dimensions, "
                f"queries {shapes['query'][1]}",
            )
        if "truth" in shapes and shapes["truth"][0] < shapes["query"][0]:
            return (
                "service.dataset.truth",
                self.truth,
                f"has {shapes['truth'][0]} rows for {shapes['query'][0]} queries",
            )
        return None

    def shapes(self) -> dict[str, tuple[int, int]]:
        """(rows, dim) of base, query and truth after the limits; files' headers only."""
        if self.source == "generated":
            return {"base": (self.n, self.dim), "query": (self.queries, self.dim)}
        if self.source == "hdf5":
            with _open_h5(Path(self.path).expanduser()) as f:
                out = {"base": f["train"].shape, "query": f["test"].shape}
                if "neighbors" in f:
                    out["truth"] = f["neighbors"].shape
        else:
            out = {"base": vecs_shape(self.base), "query": vecs_shape(self.query)}
            if self.truth:
                out["truth"] = vecs_shape(self.truth)
        out = {k: (int(v[0]), int(v[1])) for k, v in out.items()}
        if self.max_base:
            out["base"] = (min(out["base"][0], self.max_base), out["base"][1])
        if self.max_queries:
            out["query"] = (min(out["query"][0], self.max_queries), out["query"][1])
        return out

    def sizes(self) -> tuple[int | None, int | None]:
        """Base and query counts when known without reading files (generated data)."""
        if self.source == "generated":
            return self.n, self.queries
        return self.max_base, self.max_queries


@dataclass
class Dataset:
    name: str
    base: np.ndarray  # (n, dim) float32
    queries: np.ndarray  # (nq, dim) float32
    dir: Path  # where derived files (ground truth) are cached
    seed: int = 0
    # The file's own exact neighbours, and the metric they were computed with.
    file_truth: np.ndarray | None = None
    file_truth_metric: Metric | None = None
    truth_source: str = "computed"  # set by ground_truth(): file | computed

    @property
    def dim(self) -> int:
        return self.base.shape[1]

    @property
    def attr(self) -> np.ndarray:
        """The scalar attribute of every base vector (int64 in ``[0, ATTR_RANGE)``)."""
        if not hasattr(self, "_attr"):
            rng = np.random.default_rng([self.seed, 0xA77])
            self._attr = rng.integers(0, ATTR_RANGE, size=len(self.base), dtype=np.int64)
        return self._attr

    def ground_truth(self, metric: Metric, k: int, threshold: int | None = None) -> np.ndarray:
        """Exact top-``k`` neighbour ids of every query (among ``attr < threshold`` if given).

        Rows have ``-1`` where fewer than ``k`` vectors pass the filter.
        """
        ft = self.file_truth
        if (
            threshold is None
            and ft is not None
            and self.file_truth_metric == metric
            and ft.shape[1] >= k
        ):
            self.truth_source = "file"
            return ft[: len(self.queries), :k]
        self.truth_source = "computed"
        tag = "" if threshold is None else f"_attr_lt{threshold}"
        path = self.dir / f"gt_{metric}_k{k}{tag}.npy"
        if path.exists():
            return np.load(path)
        ids = exact_search(self.base, self.queries, metric, k, self._allowed(threshold))
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, ids)
        tmp.replace(path)
        return ids

    def _allowed(self, threshold: int | None) -> np.ndarray | None:
        return None if threshold is None else np.flatnonzero(self.attr < threshold)


def exact_search(
    base: np.ndarray,
    queries: np.ndarray,
    metric: Metric,
    k: int,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """Exact ``k`` nearest neighbours with a flat FAISS index (over ``allowed`` ids only)."""
    import faiss

    if metric == "cosine":
        base, queries = normalized(base), normalized(queries)
    if allowed is not None:
        base = base[allowed]
    index = faiss.IndexFlatL2(base.shape[1]) if metric == "L2" else faiss.IndexFlatIP(base.shape[1])
    index.add(np.ascontiguousarray(base, dtype=np.float32))
    _, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    if allowed is not None:
        ids = np.where(ids >= 0, allowed[np.maximum(ids, 0)], -1)
    return ids


def normalized(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def load(settings: DatasetSettings, data_dir: Path) -> Dataset:
    """The dataset the settings describe (generated data is cached in ``data_dir``)."""
    problem = settings.problem()
    if problem is not None:
        key, value, why = problem
        cls = DatasetMissing if why.startswith("no such file") else DatasetInvalid
        raise cls(f"{key} = {value!r}: {why}")
    if settings.source == "generated":
        return _load_generated(settings, Path(data_dir))
    return _load_files(settings, Path(data_dir))


def _load_generated(settings: DatasetSettings, data_dir: Path) -> Dataset:
    fields = ("n", "dim", "clusters", "spread", "queries", "seed")
    key = json.dumps({f: getattr(settings, f) for f in fields}, sort_keys=True)
    name = f"gen-n{settings.n}-d{settings.dim}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    d = data_dir / "vectors" / name
    if (d / "base.npy").exists() and (d / "queries.npy").exists():
        return Dataset(name, np.load(d / "base.npy"), np.load(d / "queries.npy"), d, settings.seed)
    base, queries = generate(settings)
    d.mkdir(parents=True, exist_ok=True)
    for fname, arr in (("base.npy", base), ("queries.npy", queries)):
        tmp = d / f".{fname}.tmp.npy"
        np.save(tmp, arr)
        tmp.replace(d / fname)
    (d / "params.json").write_text(key)
    return Dataset(name, base, queries, d, settings.seed)


def generate(s: DatasetSettings) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(s.seed)
    centres = rng.standard_normal((s.clusters, s.dim), dtype=np.float32)

    def draw(n: int) -> np.ndarray:
        which = rng.integers(0, s.clusters, size=n)
        noise = rng.standard_normal((n, s.dim), dtype=np.float32) * np.float32(s.spread)
        return centres[which] + noise

    return draw(s.n), draw(s.queries)


def _load_files(s: DatasetSettings, data_dir: Path) -> Dataset:
    files = {k: Path(v).expanduser().resolve() for k, v in s.files().items()}
    # The cache key names the files by path, size and modification time, so a
    # replaced file gets fresh ground truth.
    ident = {k: [str(p), p.stat().st_size, p.stat().st_mtime_ns] for k, p in files.items()}
    ident |= {"max_base": s.max_base, "max_queries": s.max_queries, "seed": s.seed}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    stem = (files.get("path") or files["base"]).stem
    d = data_dir / "vectors" / f"{stem}-{digest}"
    truth = truth_metric = None
    if s.source == "hdf5":
        with _open_h5(files["path"]) as f:
            base = _rows(f["train"], s.max_base)
            queries = _rows(f["test"], s.max_queries)
            if "neighbors" in f:
                truth = np.asarray(f["neighbors"][: len(queries)], dtype=np.int64)
                dist = f.attrs.get("distance", "")
                dist = dist.decode() if isinstance(dist, bytes) else str(dist)
                truth_metric = HDF5_METRICS.get(dist.lower())
    else:
        base = read_vecs(files["base"], s.max_base)
        queries = read_vecs(files["query"], s.max_queries)
        if "truth" in files:
            truth = read_vecs(files["truth"], len(queries)).astype(np.int64)
            truth_metric = s.truth_metric
    n_file = _file_rows(s, files)
    if truth is not None and len(base) < n_file:
        truth = None  # neighbours among the whole file are not those of a prefix
    return Dataset(f"{stem}-{digest}", base, queries, d, s.seed, truth, truth_metric)


def _file_rows(s: DatasetSettings, files: dict[str, Path]) -> int:
    if s.source == "hdf5":
        with _open_h5(files["path"]) as f:
            return int(f["train"].shape[0])
    return vecs_shape(files["base"])[0]


def _rows(ds, limit: int | None) -> np.ndarray:
    rows = ds.shape[0] if limit is None else min(limit, ds.shape[0])
    return np.ascontiguousarray(ds[:rows], dtype=np.float32)


def _open_h5(path: Path):
    try:
        import h5py
    except ImportError:
        raise DatasetInvalid(
            "reading ann-benchmarks HDF5 files needs h5py (pip install 'benchflow[vectordb]')"
        ) from None

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetInvalid(f"{path} is not an HDF5 file ({exc})") from None
    missing = [name for name in ("train", "test") if name not in f]
    if missing:
        f.close()
        raise DatasetInvalid(
            f"{path} has no {' or '.join(missing)} dataset (ann-benchmarks layout: "
            "train, test, neighbors, distances)"
        )
    return f


# -- the .fvecs / .ivecs / .bvecs format --------------------------------------------
# Each vector is stored as its dimension (int32, little endian) then its components:
# float32 (.fvecs), int32 (.ivecs) or uint8 (.bvecs).
_VECS_DTYPES = {".fvecs": np.float32, ".ivecs": np.int32, ".bvecs": np.uint8}


def _vecs_dtype(path: Path) -> np.dtype:
    try:
        return np.dtype(_VECS_DTYPES[path.suffix.lower()])
    except KeyError:
        raise DatasetInvalid(
            f"{path}: unknown vector file type {path.suffix!r}; allowed: .fvecs, .ivecs, .bvecs"
        ) from None


def vecs_shape(path: str | Path) -> tuple[int, int]:
    """(rows, dim) of a .fvecs/.ivecs/.bvecs file, from its first header and its size."""
    path = Path(path).expanduser()
    dtype = _vecs_dtype(path)
    size = path.stat().st_size
    if size < 4:
        raise DatasetInvalid(f"{path} is empty")
    dim = int(np.fromfile(path, dtype="<i4", count=1)[0])
    row = 4 + dim * dtype.itemsize
    if dim <= 0 or size % row:
        raise DatasetInvalid(
            f"{path}: not a {path.suffix} file (first dimension {dim}, size {size} bytes)"
        )
    return size // row, dim


def read_vecs(path: str | Path, limit: int | None = None) -> np.ndarray:
    """The first ``limit`` vectors of a .fvecs/.ivecs/.bvecs file (float32, or int32 for
    .ivecs); memory-mapped, so a prefix of a huge file reads only that prefix."""
    path = Path(path).expanduser()
    dtype = _vecs_dtype(path)
    rows, dim = vecs_shape(path)
    rows = rows if limit is None else min(rows, limit)
    raw = np.memmap(path, dtype=np.uint8, mode="r", shape=(rows, 4 + dim * dtype.itemsize))
    dims = raw[:, :4].copy().view("<i4").ravel()
    if (dims != dim).any():
        bad = int(np.flatnonzero(dims != dim)[0])
        raise DatasetInvalid(f"{path}: vector {bad} has dimension {dims[bad]}, the first {dim}")
    body = np.ascontiguousarray(raw[:, 4:]).view(dtype.newbyteorder("<")).reshape(rows, dim)
    return body.astype(np.int32 if dtype == np.int32 else np.float32)


def write_vecs(path: str | Path, x: np.ndarray) -> None:
    """Write ``x`` in the format its suffix names (used to make test files)."""
    path = Path(path)
    dtype = _vecs_dtype(path)
    x = np.asarray(x).astype(dtype.newbyteorder("<"))
    dims = np.full((len(x), 1), x.shape[1], dtype="<i4")
    with open(path, "wb") as f:
        f.write(np.hstack([dims.view(np.uint8), x.view(np.uint8).reshape(len(x), -1)]).tobytes())


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean over queries of |found[:k] ∩ truth[:k]| / k (ann-benchmarks' recall).

    ``-1`` entries (no neighbour: a filter left fewer than ``k`` vectors) never
    count as hits; a query's denominator is the number of true neighbours it has.
    """
    hits = total = 0
    for f, t in zip(found[:, :k], truth[:, :k], strict=True):
        t = t[t >= 0]
        hits += len(np.intersect1d(f[f >= 0], t))
        total += len(t)
    return hits / total if total else 0.0
