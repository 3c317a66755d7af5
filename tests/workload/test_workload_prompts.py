"""Prompt text: shared hash ids give byte-identical shared prefixes; the text is a
function of the seed and the ids only."""

from __future__ import annotations

import pytest

from benchflow.workload import prompts
from benchflow.workload.prompts import VOCABULARY, prompt_for, synthetic_prompt


def test_shared_blocks_are_a_byte_identical_prefix():
    a, b = prompt_for([1, 2, 3]), prompt_for([1, 2, 9])
    shared = len(prompt_for([1, 2])) + 1  # blocks 1 and 2 and the space after them
    assert a[:shared] == b[:shared]
    assert a[shared:] != b[shared:]
    assert a[shared:] == prompt_for([3]) and b[shared:] == prompt_for([9])
    assert len(a.split(" ")) == 3 * 512
    # the same blocks elsewhere are not a shared prefix
    assert not prompt_for([7, 1, 2]).startswith(prompt_for([1, 2]))


def test_the_text_depends_on_the_seed_and_the_ids_only():
    first = prompt_for([4, 5], seed=3)
    prompts._block.cache_clear()  # computed again, not read back from the cache
    assert prompt_for([4, 5], seed=3) == first
    assert prompt_for([4, 5], seed=4) != first
    assert prompt_for([4, 5], seed=3, block_tokens=16) != first
    assert set(first.split(" ")) <= set(VOCABULARY)
    assert prompt_for([4], seed=-3) == prompt_for([4], seed=2**64 - 3)  # any int is a seed


def test_total_tokens_trims_the_last_blocks():
    full = prompt_for([1, 2, 3], block_tokens=100)
    for total in (0, 1, 150, 250, 300, 400):
        text = prompt_for([1, 2, 3], block_tokens=100, total_tokens=total)
        words = text.split(" ") if text else []
        assert len(words) == min(total, 300)
        assert full.startswith(text)


def test_synthetic_prompts_are_unique_and_deterministic():
    a = synthetic_prompt(0, 200, seed=1)
    assert len(a.split(" ")) == 200 and a == synthetic_prompt(0, 200, seed=1)
    assert a != synthetic_prompt(1, 200, seed=1) and a != synthetic_prompt(0, 200, seed=2)
    assert a[:40] != prompt_for([0], seed=1)[:40]
    assert synthetic_prompt(5, 0) == ""


def test_vocabulary_and_bad_arguments():
    assert len(VOCABULARY) == len(set(VOCABULARY)) == 200
    assert all(w.isalpha() and w.islower() for w in VOCABULARY)
    with pytest.raises(ValueError, match="hash ids"):
        prompt_for([1, -2])
    with pytest.raises(ValueError, match="block_tokens"):
        prompt_for([1], block_tokens=0)
    with pytest.raises(ValueError, match="total_tokens"):
        prompt_for([1], total_tokens=-1)
