"""Datasets: generated clustered data, .fvecs/.ivecs/.bvecs and ann-benchmarks HDF5
files with their own ground truth, exact (filtered) neighbours, clear errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from vectordb_support import DATA, brute_force, recall, threshold, vectors

from drivers.vectordb import dataset as ds
from drivers.vectordb.dataset import DatasetSettings, load, read_vecs, recall_at_k, write_vecs


def test_generated_data_is_deterministic_and_its_ground_truth_exact(tmp_path):
    a = load(DatasetSettings(**DATA), tmp_path)
    b = load(DatasetSettings(**DATA), tmp_path / "other")
    assert np.array_equal(a.base, b.base) and np.array_equal(a.queries, b.queries)
    assert a.base.shape == (DATA["n"], DATA["dim"]) and a.base.dtype == np.float32
    for metric in ("L2", "IP", "cosine"):
        gt = a.ground_truth(metric, 10)
        assert recall(gt, brute_force(metric)) > 0.999, metric  # float32 vs float64 ties
        assert (a.dir / f"gt_{metric}_k10.npy").exists(), "cached next to the dataset"
    # Clustered: a query's nearest neighbour is much nearer than a random vector.
    q, base = a.queries[0], a.base
    d = np.linalg.norm(base - q, axis=1)
    assert d.min() < 0.2 * np.median(d)


def test_filtered_ground_truth_is_exact_among_the_vectors_that_pass(tmp_path):
    data = load(DatasetSettings(**DATA), tmp_path)
    t = threshold(0.1)
    allowed = np.flatnonzero(data.attr < t)
    assert 0.08 < len(allowed) / DATA["n"] < 0.12
    gt = data.ground_truth("L2", 10, t)
    assert np.isin(gt, allowed).all()
    assert recall(gt, brute_force("L2", allowed=allowed)) > 0.999


def test_recall_counts_no_neighbour_as_a_miss():
    truth = np.array([[1, 2, 3], [4, 5, -1]])
    assert recall_at_k(np.array([[1, 2, 3], [4, 5, -1]]), truth, 3) == 1.0
    assert recall_at_k(np.array([[1, -1, -1], [4, -1, -1]]), truth, 3) == pytest.approx(2 / 5)


@pytest.mark.parametrize("suffix", [".fvecs", ".bvecs"])
def test_vecs_files_load_and_their_ground_truth_is_used(tmp_path, suffix):
    rng = np.random.default_rng(1)
    base = rng.integers(0, 200, size=(500, 16)).astype(np.float32)
    queries = rng.integers(0, 200, size=(20, 16)).astype(np.float32)
    write_vecs(tmp_path / f"base{suffix}", base)
    write_vecs(tmp_path / f"query{suffix}", queries)
    exact = ds.exact_search(base, queries, "L2", 50)
    write_vecs(tmp_path / "gt.ivecs", exact)
    assert np.array_equal(read_vecs(tmp_path / f"base{suffix}"), base)
    assert np.array_equal(read_vecs(tmp_path / "gt.ivecs"), exact)

    s = DatasetSettings(
        source="vecs",
        base=str(tmp_path / f"base{suffix}"),
        query=str(tmp_path / f"query{suffix}"),
        truth=str(tmp_path / "gt.ivecs"),
    )
    data = load(s, tmp_path / "cache")
    assert np.array_equal(data.base, base) and np.array_equal(data.queries, queries)
    assert np.array_equal(data.ground_truth("L2", 10), exact[:, :10])
    assert data.truth_source == "file"
    data.ground_truth("IP", 10)  # another metric: computed, not the file's
    assert data.truth_source == "computed"
    # A prefix of the base set: the file's neighbours no longer apply.
    part = load(s.model_copy(update={"max_base": 300, "max_queries": 5}), tmp_path / "cache")
    assert part.base.shape == (300, 16) and part.queries.shape == (5, 16)
    assert part.ground_truth("L2", 10).max() < 300 and part.truth_source == "computed"


def test_ann_benchmarks_hdf5_loads_with_its_neighbours(tmp_path):
    base, queries = vectors()
    truth = ds.exact_search(base, queries, "cosine", 100)
    path = tmp_path / "glove-like-angular.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("train", data=base)
        f.create_dataset("test", data=queries)
        f.create_dataset("neighbors", data=truth.astype(np.int32))
        f.create_dataset("distances", data=np.zeros(truth.shape, np.float32))
        f.attrs["distance"] = "angular"
    data = load(DatasetSettings(source="hdf5", path=str(path)), tmp_path / "cache")
    assert np.array_equal(data.base, base)
    assert np.array_equal(data.ground_truth("cosine", 10), truth[:, :10])
    assert data.truth_source == "file"
    assert recall(data.ground_truth("L2", 10), brute_force("L2")) > 0.999
    assert data.truth_source == "computed"


def test_a_missing_dataset_file_is_a_config_error_naming_the_path(workdir, tmp_path):
    missing = tmp_path / "nowhere" / "sift_base.fvecs"
    proc = workdir.run(
        "service.dataset.source=vecs",
        f"service.dataset.base={missing}",
        f"service.dataset.query={missing}",
    )
    assert proc.returncode == 2, proc.stderr
    msg = proc.stderr.strip().splitlines()[-1]
    assert "service.dataset.base" in msg and str(missing) in msg and "no such file" in msg
    assert not workdir.results.exists()
    with pytest.raises(ds.DatasetMissing, match=str(missing)):
        load(DatasetSettings(source="hdf5", path=str(missing)), tmp_path)


def test_base_and_query_files_of_different_dimensions_are_refused(workdir, tmp_path):
    write_vecs(tmp_path / "b.fvecs", np.zeros((10, 8), np.float32))
    write_vecs(tmp_path / "q.fvecs", np.zeros((2, 12), np.float32))
    proc = workdir.run(
        "service.dataset.source=vecs",
        f"service.dataset.base={tmp_path / 'b.fvecs'}",
        f"service.dataset.query={tmp_path / 'q.fvecs'}",
    )
    assert proc.returncode == 2, proc.stderr
    msg = proc.stderr.strip().splitlines()[-1]
    assert "dimension mismatch" in msg and "8" in msg and "12" in msg
