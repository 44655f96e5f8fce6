"""Scoring text with a model: the logprob of every token given everything before it.

    scorer = ChunkScorer(model, batch=B, top_n=5)
    logits = scorer.feed(ids, mask)          per chunk: (B, V) next-token logits, as prefill's
    scorer.scores[b]                         per position: TokenLogprobs, or None

The scorer is the chunked prefill (text/core.py) with the LM head run over each chunk's
positions, HEAD_TOKENS at a time: memory is bounded by the chunk, whatever the prompt's
length, and no (T, vocab) logits ever exist. The state carries across chunks, so scores are
exact past the attention window (rgemma's semantics: DeepMind's W+1 keys, padding invisible).
A position is scored when it and the position before it are real tokens: the first token of a
row (and padding) has no score. Logprobs are the model's own distribution, see text/logprobs.py.

`score_ids` and `score_texts` score many sequences in left-padded batches; `document_
perplexity` (`rgemma perplexity`), the lm-eval adapter and the server's echo use the same code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rgemma.models.state import State
from rgemma.text.core import PREFILL_CHUNK
from rgemma.text.engine import left_pad
from rgemma.text.logprobs import TokenLogprobs, check_top_n, token_logprobs

HEAD_TOKENS = 256  # positions per LM-head call: bounds the float32 logits held at once


@dataclass
class Scored:
    """One sequence: its ids and, per id, its score (None where not scored: the first token,
    and tokens before the part asked for)."""

    token_ids: list[int]
    scores: list[TokenLogprobs | None]

    @property
    def logprobs(self) -> list[float | None]:
        return [None if s is None else s.logprob for s in self.scores]

    @property
    def total(self) -> float:
        """The sum of the scored tokens' logprobs (the log-likelihood of the scored part)."""
        return math.fsum(s.logprob for s in self.scores if s is not None)

    @property
    def count(self) -> int:
        return sum(s is not None for s in self.scores)

    @property
    def is_greedy(self) -> bool:
        """Whether greedy decoding would produce every scored token (lm-eval's is_greedy)."""
        return all(s.greedy for s in self.scores if s is not None)


def lm_head(model, hidden: torch.Tensor) -> torch.Tensor:
    """The soft-capped logits of final-norm hidden states (..., D) -> (..., V)."""
    return model.capped(model.lm_head(hidden))


class ChunkScorer:
    """A batch prefilled chunk by chunk while every position is scored. `state` continues an
    earlier prefix (updated in place); its last token is unknown here, so the first token fed
    is not scored."""

    def __init__(self, model, batch: int = 1, top_n: int = 0, state: State | None = None):
        self.model, self.top_n, self.state = model, check_top_n(top_n), state
        self.hidden: torch.Tensor | None = None  # (B, D): the last position of the last chunk
        self.real = torch.zeros(batch, dtype=torch.bool, device=model.device)
        self.scores: list[list[TokenLogprobs | None]] = [[] for _ in range(batch)]
        self.fed = 0

    @torch.no_grad()
    def feed(
        self, ids: torch.Tensor, mask: torch.Tensor | None = None, start: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Run a chunk (B, C) (mask: 1 for tokens, 0 for left padding); score each position p
        (counted from the first chunk) with p >= start[b] (default 0). Returns the (B, V)
        logits after the chunk."""
        out = self.model.model(ids, attention_mask=mask, cache=self.state, use_cache=True)
        self.state, h = out.cache, out.last_hidden_state  # (B, C, D)
        real = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
        previous = torch.cat([self.real[:, None], real[:, :-1]], dim=1)  # (B, C)
        wanted = real & previous
        if start is not None:
            position = self.fed + torch.arange(ids.shape[1], device=ids.device)
            wanted &= position[None, :] >= start.to(ids.device)[:, None]
        before = h[:, :-1] if self.hidden is None else torch.cat([self.hidden[:, None], h[:, :-1]], dim=1)
        self._score(before, ids, wanted)
        self.hidden, self.real, self.fed = h[:, -1], real[:, -1], self.fed + ids.shape[1]
        return lm_head(self.model, h[:, -1])

    def _score(self, before: torch.Tensor, ids: torch.Tensor, wanted: torch.Tensor) -> None:
        """Score the `wanted` (B, C) positions of `ids` from the hidden states before them."""
        B, C = ids.shape
        if before.shape[1] < C:  # the very first position has nothing before it
            before = torch.cat([before.new_zeros(B, 1, before.shape[-1]), before], dim=1)
        rows, cols = wanted.nonzero(as_tuple=True)
        found: list[TokenLogprobs] = []
        for s in range(0, len(rows), HEAD_TOKENS):
            r, c = rows[s : s + HEAD_TOKENS], cols[s : s + HEAD_TOKENS]
            found += token_logprobs(lm_head(self.model, before[r, c]), ids[r, c], self.top_n)
        chunk: list[list[TokenLogprobs | None]] = [[None] * C for _ in range(B)]
        for r, c, score in zip(rows.tolist(), cols.tolist(), found):
            chunk[r][c] = score
        for row, scores in zip(self.scores, chunk):
            row += scores


# --------------------------------------------------------------------------- many sequences
def score_ids(
    model,
    sequences: Sequence[Sequence[int]],
    start: Sequence[int] | None = None,
    top_n: int = 0,
    batch_size: int = 16,
    chunk_size: int = PREFILL_CHUNK,
) -> list[Scored]:
    """Score token-id sequences, each token given those before it (the first has no score),
    from position start[i] on (default 1). Batched by length, longest first, left-padded: the
    padding is invisible, so a sequence scores the same alone or in any batch."""
    start = [1] * len(sequences) if start is None else list(start)
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    out: list[Scored | None] = [None] * len(sequences)
    for b in range(0, len(order), batch_size):
        batch = order[b : b + batch_size]
        rows = [list(sequences[i]) for i in batch]
        for i, scored in zip(batch, _score_batch(model, rows, [start[i] for i in batch], top_n, chunk_size)):
            out[i] = scored
    return out


def _score_batch(model, rows: list[list[int]], start: list[int], top_n: int, chunk_size: int) -> list[Scored]:
    ids, mask = left_pad(rows, 0, model.device)
    T = ids.shape[1]
    first = torch.tensor([s + T - len(r) for r, s in zip(rows, start)], device=ids.device)
    scorer = ChunkScorer(model, len(rows), top_n)
    for s in range(0, T, chunk_size):
        scorer.feed(ids[:, s : s + chunk_size], None if mask is None else mask[:, s : s + chunk_size], first)
    return [Scored(r, scores[T - len(r) :]) for r, scores in zip(rows, scorer.scores)]


def score_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    continuations: Sequence[str] | None = None,
    top_n: int = 0,
    batch_size: int = 16,
) -> list[Scored]:
    """Score texts (each read with the tokenizer's usual BOS); with `continuations`, score
    only continuation i given text i (tokenized apart, no BOS, and joined): its `total` is
    log P(continuation | text) and `is_greedy` says whether greedy decoding would write it."""
    contexts = [tokenizer.encode(t) for t in texts]
    if continuations is None:
        return score_ids(model, contexts, None, top_n, batch_size)
    tails = [tokenizer.encode(c, add_bos=False) for c in continuations]
    start = [len(c) for c in contexts]
    return score_ids(model, [c + t for c, t in zip(contexts, tails)], start, top_n, batch_size)


def document_perplexity(model, tokenizer, docs: list[str], batch_size: int = 8) -> dict[str, float]:
    """Token-weighted perplexity over `docs`, each read with BOS and EOS (the way the bundled
    model is trained): documents, tokens, mean loss and perplexity."""
    eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    sequences = [ids for ids in (tokenizer.encode(doc) + eos for doc in docs) if len(ids) >= 2]
    if not sequences:
        raise ValueError("no document has two tokens to score")
    scored = score_ids(model, sequences, batch_size=batch_size)
    total, count = -math.fsum(s.total for s in scored), sum(s.count for s in scored)
    return {
        "documents": len(docs),
        "tokens": count,
        "loss": total / count,
        "perplexity": math.exp(total / count),
    }
