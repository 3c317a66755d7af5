"""KeyChooser: each law checked by χ² against its definition, the scramble, growth,
and determinism across processes."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from benchflow.workload.keys import (
    YCSB_ITEM_COUNT,
    AccessConfig,
    KeyChooser,
    fnvhash64,
    rank_probabilities,
    ycsb_rank_probabilities,
    zeta,
)

DRAWS = 200_000


def chi2_p(counts: np.ndarray, probs: np.ndarray) -> float:
    """χ² goodness of fit, consecutive bins merged until each expects >= 5."""
    expected = probs / probs.sum() * counts.sum()
    obs, exp = [], []
    o = e = 0.0
    for c, x in zip(counts.tolist(), expected.tolist(), strict=True):
        o, e = o + c, e + x
        if e >= 5:
            obs.append(o)
            exp.append(e)
            o = e = 0.0
    obs[-1] += o  # a short remainder joins the last bin
    exp[-1] += e
    return float(stats.chisquare(obs, exp).pvalue)


def counts_of(keys: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(keys, minlength=n)


def zipf_ranks(n: int, theta: float, algorithm: str = "exact", seed: int = 1) -> np.ndarray:
    access = AccessConfig(distribution="zipfian", theta=theta, zipf_algorithm=algorithm)
    return KeyChooser(n, access, seed=seed, scramble=False).take(DRAWS)


@pytest.mark.parametrize("theta", [0.5, 0.99, 1.0, 1.5])
def test_exact_zipf_ranks_follow_zipfs_law(theta):
    n = 1000
    ranks = zipf_ranks(n, theta)
    assert ranks.min() >= 0 and ranks.max() < n
    assert chi2_p(counts_of(ranks, n), rank_probabilities(n, theta)) > 0.001


def test_the_same_test_rejects_a_uniform_sample():
    n = 1000
    keys = KeyChooser(n, AccessConfig(), seed=1).take(DRAWS)
    assert chi2_p(counts_of(keys, n), rank_probabilities(n, 0.99)) < 1e-6
    assert chi2_p(counts_of(keys, n), np.full(n, 1 / n)) > 0.001  # uniform is uniform


def test_exact_zipf_ranks_past_the_exact_table():
    n = 1_000_000  # the first 2^16 ranks come from a table, the rest from the integral
    ranks = zipf_ranks(n, 0.99)
    p = rank_probabilities(n, 0.99)
    edges = np.unique(np.geomspace(1, n, 60)[:-1].astype(np.int64)) - 1  # log bins
    obs = np.add.reduceat(counts_of(ranks, n).astype(float), edges)
    exp = np.add.reduceat(p, edges) * DRAWS
    assert exp.min() > 5
    assert stats.chisquare(obs, exp).pvalue > 0.001
    assert (ranks >= 1 << 16).mean() == pytest.approx(p[1 << 16 :].sum(), abs=0.005)


def test_ycsb_ranks_follow_grays_closed_form_which_only_approximates_zipf():
    n, theta = 1000, 0.99
    counts = counts_of(zipf_ranks(n, theta, "ycsb"), n)
    law = ycsb_rank_probabilities(n, theta)
    assert law.sum() == pytest.approx(1.0) and law.min() > 0
    assert chi2_p(counts, law) > 0.001
    # YCSB's generator is close to Zipf's law, but measurably not it (third rank +17%)
    zipf = rank_probabilities(n, theta)
    assert 0.005 < 0.5 * np.abs(law - zipf).sum() < 0.03
    assert law[2] / zipf[2] == pytest.approx(1.17, abs=0.01)
    assert chi2_p(counts, zipf) < 1e-6


def test_scrambled_keys_are_a_fixed_permutation_of_the_ranks():
    n, access = 1000, AccessConfig(distribution="zipfian")
    keys = KeyChooser(n, access, seed=3).take(DRAWS)
    ranks = KeyChooser(n, access, seed=3, scramble=False).take(DRAWS)
    pairs = np.unique(np.stack([ranks, keys], axis=1), axis=0)
    # every rank maps to one key and no two ranks to the same key: a bijection
    assert len(np.unique(pairs[:, 0])) == len(pairs) == len(np.unique(pairs[:, 1]))
    perm = dict(pairs.tolist())
    counts = counts_of(keys, n)
    seen = sorted(perm)
    by_rank = np.array([counts[perm[r]] for r in seen])
    assert chi2_p(by_rank, rank_probabilities(n, 0.99)[seen]) > 0.001
    # so the sorted key frequencies are Zipf's law too
    top = np.sort(counts)[::-1][:5] / DRAWS
    assert top == pytest.approx(rank_probabilities(n, 0.99)[:5], rel=0.05)
    # and the hot keys are spread over the key space, the same for every seed and stream
    hottest = np.argsort(counts)[::-1][:10]
    assert not (hottest < n // 10).all()
    assert hottest.max() - hottest.min() > n // 4
    other = KeyChooser(n, access, seed=99, stream=5).take(DRAWS)
    assert np.argmax(counts_of(other, n)) == np.argmax(counts)


def test_fnvhash64_is_fnv1a_over_the_little_endian_bytes():
    def fnv1a(data: bytes) -> int:
        h = 0xCBF29CE484222325
        for b in data:
            h = ((h ^ b) * 0x100000001B3) % (1 << 64)
        return h

    assert fnv1a(b"a") == 0xAF63DC4C8601EC8C  # the published test vector
    values = np.array([0, 1, 255, 256, 123456789, 2**40 + 7, YCSB_ITEM_COUNT - 1])
    expected = [fnv1a(int(v).to_bytes(8, "little")) for v in values]
    assert fnvhash64(values).tolist() == expected


def test_ycsb_scramble_folds_ten_billion_ranks_onto_the_keys():
    n = 1000
    access = AccessConfig(distribution="zipfian", zipf_algorithm="ycsb")
    counts = counts_of(KeyChooser(n, access, seed=1).take(DRAWS), n)
    rank0_key = int(np.abs(fnvhash64(0).view(np.int64))[0] % n)
    share = counts[rank0_key] / DRAWS
    # rank 0 has 1/zeta(10^10, 0.99) = 3.8%; other ranks collide onto its key too
    assert 1 / zeta(YCSB_ITEM_COUNT, 0.99) == pytest.approx(0.0378, abs=0.0005)
    assert 0.035 < share < 0.06
    assert counts.max() / DRAWS < 0.1  # far flatter than Zipf over 1000 keys (13%)


def test_zeta_matches_the_direct_sum_and_ycsbs_constant():
    for n in (1, 10, 10_000, 123_457):
        for theta in (0.3, 0.99, 1.0, 2.0):
            direct = float(np.sum(np.arange(1, n + 1, dtype=float) ** -theta))
            assert zeta(n, theta) == pytest.approx(direct, rel=1e-13)
    # YCSB's ScrambledZipfianGenerator.ZETAN, zeta(10^10, 0.99) summed in Java
    assert zeta(YCSB_ITEM_COUNT, 0.99) == pytest.approx(26.46902820178302, rel=1e-9)


def test_uniform_passes_chi2():
    n = 500
    keys = KeyChooser(n, AccessConfig(distribution="uniform"), seed=7).take(DRAWS)
    assert keys.min() >= 0 and keys.max() < n
    assert chi2_p(counts_of(keys, n), np.full(n, 1 / n)) > 0.001


def test_hotspot_shares_and_uniformity_within_each_set():
    n = 1000
    access = AccessConfig(distribution="hotspot", hot_fraction=0.2, hot_probability=0.8)
    counts = counts_of(KeyChooser(n, access, seed=5).take(DRAWS), n)
    hot, cold = counts[:200], counts[200:]
    assert chi2_p(np.array([hot.sum(), cold.sum()]), np.array([0.8, 0.2])) > 0.001
    assert chi2_p(hot, np.full(200, 1 / 200)) > 0.001
    assert chi2_p(cold, np.full(800, 1 / 800)) > 0.001


def test_hotspot_edge_cases():
    all_hot = AccessConfig(distribution="hotspot", hot_fraction=0.5, hot_probability=1.0)
    assert KeyChooser(10, all_hot, seed=0).take(1000).max() < 5
    no_hot = AccessConfig(distribution="hotspot", hot_fraction=0.5, hot_probability=0.0)
    assert KeyChooser(10, no_hot, seed=0).take(1000).min() >= 5
    tiny = AccessConfig(distribution="hotspot", hot_fraction=0.1)  # floor(0.3) = 0 hot keys
    keys = KeyChooser(3, tiny, seed=0).take(3000)
    assert set(np.unique(keys).tolist()) == {0, 1, 2}


def test_latest_favours_the_newest_keys_after_growth():
    access = AccessConfig(distribution="latest")
    chooser = KeyChooser(1000, access, seed=2)
    before = chooser.take(1000)
    assert before.max() == 999 and np.argmax(counts_of(before, 1000)) == 999
    chooser.grow(1500)
    assert chooser.n_keys == 1500
    keys = chooser.take(DRAWS)
    counts = counts_of(keys, 1500)
    assert np.argmax(counts) == 1499  # the newest key is the hottest
    by_age = counts[::-1]  # age 0 = the newest key
    assert chi2_p(by_age, rank_probabilities(1500, 0.99)) > 0.001
    assert (np.diff(by_age[:5]) < 0).all()  # frequency falls with age


def test_grow_redraws_buffered_keys_deterministically():
    access = AccessConfig(distribution="latest")
    a = KeyChooser(100, access, seed=4)
    first = [a.next() for _ in range(10)]
    a.grow(10_000)
    after_a = a.take(200)
    b = KeyChooser(100, access, seed=4)
    assert b.take(10).tolist() == first
    b.grow(10_000)
    assert b.take(200).tolist() == after_a.tolist()
    assert after_a.max() >= 100  # the new keys are drawn at once, not after 512 old ones
    with pytest.raises(ValueError, match="only grows"):
        a.grow(5)


@pytest.mark.parametrize("distribution", ["uniform", "zipfian", "latest", "hotspot"])
def test_take_and_next_give_one_sequence(distribution):
    access = AccessConfig(distribution=distribution)
    whole = KeyChooser(10**6, access, seed=11).take(70_000)
    c = KeyChooser(10**6, access, seed=11)
    parts = [c.take(3), np.array([c.next() for _ in range(600)]), c.take(69_397)]
    assert np.array_equal(np.concatenate(parts), whole)
    assert whole.dtype == np.int64


def test_streams_and_seeds_differ():
    access = AccessConfig(distribution="zipfian")
    base = KeyChooser(10**6, access, seed=1, stream=0).take(1000)
    assert not np.array_equal(base, KeyChooser(10**6, access, seed=1, stream=1).take(1000))
    assert not np.array_equal(base, KeyChooser(10**6, access, seed=2, stream=0).take(1000))
    assert np.array_equal(base, KeyChooser(10**6, access, seed=1, stream=0).take(1000))
    # any int is a seed: a negative one is taken modulo 2^64
    neg = KeyChooser(10**6, access, seed=-1).take(1000)
    assert np.array_equal(neg, KeyChooser(10**6, access, seed=2**64 - 1).take(1000))


_DIGEST = """
import hashlib
from benchflow.workload.keys import AccessConfig, KeyChooser
for dist in ("zipfian", "latest", "hotspot", "uniform"):
    for alg in ("exact", "ycsb"):
        a = AccessConfig(distribution=dist, zipf_algorithm=alg)
        keys = KeyChooser(10**7, a, seed=42, stream=3).take(100_000)
        print(dist, alg, hashlib.sha256(keys.tobytes()).hexdigest())
"""


def test_identical_keys_in_separate_processes():
    procs = [
        subprocess.Popen([sys.executable, "-c", _DIGEST], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] and len(outs[0].splitlines()) == 8
    here = KeyChooser(10**7, AccessConfig(distribution="zipfian"), seed=42, stream=3)
    digest = hashlib.sha256(here.take(100_000).tobytes()).hexdigest()
    assert f"zipfian exact {digest}" in outs[0].splitlines()


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"theta": 0}, ["theta", "> 0"]),
        ({"theta": -1.0}, ["theta", "> 0"]),
        ({"theta": 1.0, "zipf_algorithm": "ycsb"}, ["theta", "!= 1", "exact"]),
        ({"hot_fraction": 1.0}, ["hot_fraction", "(0, 1)"]),
        ({"hot_probability": 1.5}, ["hot_probability", "[0, 1]"]),
        ({"distribution": "pareto"}, ["distribution"]),
        ({"skew": 1}, ["skew", "Extra inputs"]),
    ],
)
def test_bad_access_configs_say_what_is_allowed(fields, words):
    with pytest.raises(ValidationError) as err:
        AccessConfig(**fields)
    for w in words:
        assert w in str(err.value)


def test_n_keys_and_count_are_checked():
    with pytest.raises(ValueError, match="n_keys"):
        KeyChooser(0, AccessConfig(), seed=0)
    with pytest.raises(ValueError, match="count"):
        KeyChooser(1, AccessConfig(), seed=0).take(-1)
    assert KeyChooser(1, AccessConfig(distribution="zipfian"), seed=0).take(5).tolist() == [0] * 5
    for alg in ("exact", "ycsb"):
        a = AccessConfig(distribution="latest", zipf_algorithm=alg)
        assert set(KeyChooser(2, a, seed=0).take(100).tolist()) == {0, 1}
