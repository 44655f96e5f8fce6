"""Logits processors: pure functions on (B, V) logits with one history per row."""

import math

import pytest
import torch

from rgemma.text.core import Row, sample_rows
from rgemma.text.processors import Rules, apply_rules, bad_word_ban, repeated_ngram_ban
from rgemma.text.sampling import SamplingParams


def test_repeated_ngram_ban_follows_transformers():
    assert repeated_ngram_ban([1, 2, 3, 1, 2], 3) == [3]  # "1 2" was followed by 3
    assert repeated_ngram_ban([1, 2, 1], 2) == [2]
    assert sorted(repeated_ngram_ban([4, 5, 4], 1)) == [4, 4, 5]  # n=1: every seen token
    assert repeated_ngram_ban([1], 3) == []  # too short to complete an n-gram
    assert repeated_ngram_ban([1, 2, 3], 0) == []


def test_bad_word_ban_needs_the_prefix():
    assert bad_word_ban([7, 8], [[9], [8, 10], [7, 11]]) == [9, 10]


def test_min_new_tokens_masks_eos_until_reached():
    logits = torch.zeros(2, 5)
    out = apply_rules(logits, Rules(min_new_tokens=2), [[], []], [1, 2], [4])
    assert out[0, 4] == -math.inf and out[1, 4] == 0 and torch.equal(out[:, :4], logits[:, :4])


def test_rules_are_validated():
    with pytest.raises(ValueError, match="no_repeat_ngram_size"):
        Rules(no_repeat_ngram_size=-1)
    with pytest.raises(ValueError, match="bad_words_ids"):
        Rules(bad_words_ids=((),))


def test_rows_apply_their_own_rules_in_the_sampling_step():
    logits = torch.tensor([[0.0, 3.0, 1.0], [0.0, 3.0, 1.0]])
    greedy = SamplingParams(temperature=0)
    rows = [
        Row(greedy, 5, frozenset({1}), rules=Rules(min_new_tokens=1)),
        Row(greedy, 5, frozenset({1})),
    ]
    tokens, _ = sample_rows(logits, rows)
    assert tokens == [2, 1]
