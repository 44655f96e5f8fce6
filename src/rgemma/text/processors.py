"""Logits processors: pure functions that forbid tokens, as transformers' processors of the same
names do. They run inside the core's sampling step (core.sample_rows) and in beam search, each
on a (B, V) tensor with one token history per row, and return a new tensor.

    min_new_tokens        EOS is forbidden until a row has generated this many tokens
    no_repeat_ngram_size  a token that would complete an n-gram already in the history
    bad_words_ids         a token that would complete a banned sequence

A forbidden token gets -inf, so greedy never picks it, sampling never draws it and beam search
never extends with it. Histories hold a row's real tokens (prompt, then generated).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rgemma.text.sampling import (
    SamplingParams,
    apply_min_p,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
)


@dataclass(frozen=True)
class Rules:
    """The processors one row uses; the defaults forbid nothing."""

    min_new_tokens: int = 0
    no_repeat_ngram_size: int = 0
    bad_words_ids: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        for name in ("min_new_tokens", "no_repeat_ngram_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        for word in self.bad_words_ids:
            if not word or not all(isinstance(t, int) and t >= 0 for t in word):
                raise ValueError(f"bad_words_ids must be non-empty lists of token ids, got {list(word)!r}")

    @property
    def any(self) -> bool:
        return bool(self.min_new_tokens or self.no_repeat_ngram_size or self.bad_words_ids)

    @property
    def needs_history(self) -> bool:
        return bool(self.no_repeat_ngram_size or self.bad_words_ids)


def apply_rules(
    logits: torch.Tensor,
    rules: Rules,
    histories: Sequence[Sequence[int]],
    generated: Sequence[int],
    eos_ids: Sequence[int],
) -> torch.Tensor:
    """All of `rules` on logits (B, V): row i has seen histories[i] and generated[i] tokens."""
    if not rules.any:
        return logits
    banned = torch.zeros_like(logits, dtype=torch.bool)
    V = logits.shape[-1]
    for i, history in enumerate(histories):
        ids = list(_min_new_ban(rules.min_new_tokens, generated[i], eos_ids))
        ids += repeated_ngram_ban(history, rules.no_repeat_ngram_size)
        ids += bad_word_ban(history, rules.bad_words_ids)
        ids = [t for t in ids if 0 <= t < V]
        if ids:
            banned[i, ids] = True
    return logits.masked_fill(banned, -math.inf)


def _min_new_ban(min_new: int, generated: int, eos_ids: Sequence[int]) -> Sequence[int]:
    return eos_ids if generated < min_new else ()


def repeated_ngram_ban(history: Sequence[int], n: int) -> list[int]:
    """Tokens that would repeat an n-gram of `history` (transformers' NoRepeatNGram)."""
    if n <= 0 or len(history) + 1 < n:
        return []
    prefix = tuple(history[len(history) - n + 1 :]) if n > 1 else ()
    return [
        history[s + n - 1] for s in range(len(history) - n + 1) if tuple(history[s : s + n - 1]) == prefix
    ]


def bad_word_ban(history: Sequence[int], bad_words: Sequence[Sequence[int]]) -> list[int]:
    """The last token of each banned sequence whose other tokens end `history`."""
    out = []
    for word in bad_words:
        head = list(word[:-1])
        if not head or list(history[len(history) - len(head) :]) == head:
            out.append(word[-1])
    return out


def sampling_scores(
    logits: torch.Tensor, params: SamplingParams, prev_ids: torch.Tensor | None
) -> torch.Tensor:
    """The processed scores transformers reports as `scores` for greedy and sampling: logits
    after the repetition penalty and, when sampling, temperature, top-k, top-p and min-p (the
    order of rgemma.text.sampling.sample), filtered tokens at -inf."""
    logits = apply_repetition_penalty(logits.float(), prev_ids, params.repetition_penalty)
    if params.greedy:
        return logits
    logits = apply_temperature(logits, params.temperature)
    return apply_min_p(apply_top_p(apply_top_k(logits, params.top_k), params.top_p), params.min_p)
