"""Log-probabilities as clients read them: the chosen token's, and the N likeliest tokens'.

Every logprob rgemma reports comes from the model's own distribution, log_softmax of the
soft-capped logits in float32, before repetition penalty, temperature and the top-k/top-p/
min-p filters (vLLM's default, `logprobs_mode="raw_logprobs"`). So a token's logprob does not
depend on how it was sampled, and a generated token's equals what a forward pass over the
finished sequence gives it (tests/text/test_scoring.py checks both).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MAX_TOP_LOGPROBS = 20  # OpenAI's (and vLLM's default) limit on alternatives per token


@dataclass(frozen=True)
class TokenLogprobs:
    """One token's score: its id and logprob, the `top` likeliest (id, logprob) pairs
    (best first, as many as asked), and whether it is the argmax (lm-eval's is_greedy)."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()
    greedy: bool = False


def check_top_n(n: int) -> int:
    if not isinstance(n, int) or not 0 <= n <= MAX_TOP_LOGPROBS:
        raise ValueError(f"top logprobs must be an integer in [0, {MAX_TOP_LOGPROBS}], got {n!r}")
    return n


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, top_n: int = 0) -> list[TokenLogprobs]:
    """Scores of `tokens` (N,) under `logits` (N, V), one row each, with `top_n` alternatives."""
    logprobs = logits.float().log_softmax(dim=-1)
    chosen = logprobs.gather(1, tokens[:, None])[:, 0]
    best = logprobs.max(dim=-1).values
    greedy = chosen >= best  # ties count as greedy, as lm-eval's `tok == max(top)` does
    if top_n:
        top_values, top_ids = logprobs.topk(top_n, dim=-1)
        tops = [tuple(zip(i, v)) for i, v in zip(top_ids.tolist(), top_values.tolist())]
    else:
        tops = [()] * len(tokens)
    return [
        TokenLogprobs(t, lp, top, g)
        for t, lp, top, g in zip(tokens.tolist(), chosen.tolist(), tops, greedy.tolist())
    ]
