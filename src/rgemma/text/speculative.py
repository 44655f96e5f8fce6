"""Speculative decoding: a cheap drafter proposes K tokens, the model checks them all in one
forward over K+1 tokens, and the state is rewound exactly past the ones it accepts
(rgemma.models.rewind). The output is what decoding without speculation gives: the same
tokens when greedy, and the same distribution when sampling, by the accept/resample rule of
Leviathan et al. 2023 and Chen et al. 2023: accept draft d with probability
min(1, p(d)/q(d)), else draw from norm(max(p - q, 0)); p and q are the distributions `sample`
would draw from (temperature, top-k/p, min-p, penalty and rules applied to p).

Drafters: `DraftModel` (any rgemma model with the same vocabulary, one token at a time, its
own state rewound the same way) and `PromptLookup` (the continuation of the latest earlier
match of the last n tokens, Saxena 2023; no second model). `DraftLength` picks K per round.

`SpeculativeDecoder` is the core's Decoder for one row: the same adopt/step/live surface, a
step yielding every token a round produced. Batches are not speculated: rows accept different
numbers of drafts, and a batch already shares each weight read between its rows.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from rgemma.text.core import Row, Slots, _attach_scores, row_distribution, sample_rows
from rgemma.text.output import TextStep
from rgemma.text.sampling import distribution, draw, uniforms

MAX_DRAFT = 8
VERIFY_SLOPE = 0.25  # cost of each extra verified token, in single steps: 2b-3l bf16 on 2 CPU
# cores (bench/speculative.py verify); lower on GPUs, where a short check costs about one step


@dataclass(frozen=True)
class Speculation:
    """How to speculate: `draft_model` (a model) or `prompt_lookup`; `draft_tokens` fixes K
    (None: DraftLength adapts it, up to `max_draft`)."""

    draft_model: Any = None
    prompt_lookup: bool = False
    draft_tokens: int | None = None
    max_draft: int = MAX_DRAFT
    ngram: int = 3  # prompt lookup matches the last ngram .. min_ngram tokens, longest first
    min_ngram: int = 2  # one token matches too much: its drafts are mostly rejected

    def __post_init__(self) -> None:
        if (self.draft_model is None) == (not self.prompt_lookup):
            raise ValueError("speculation needs exactly one drafter: a draft model or prompt lookup")
        if self.draft_tokens is not None and not (
            isinstance(self.draft_tokens, int) and self.draft_tokens >= 1
        ):
            raise ValueError(f"draft_tokens must be an integer >= 1, got {self.draft_tokens!r}")

    def drafter(self, model):
        if self.prompt_lookup:
            return PromptLookup(self.ngram, self.min_ngram)
        check_vocab(model, self.draft_model)
        return DraftModel(self.draft_model)

    def schedule(self, model) -> DraftLength:
        relative = 0.0 if self.prompt_lookup else _size(self.draft_model) / _size(model)
        return DraftLength(self.draft_tokens, max(self.max_draft, self.draft_tokens or 0), relative)


def check_vocab(model, draft) -> None:
    """A draft model must speak the target's token ids."""
    v, dv = model.config.vocab_size, draft.config.vocab_size
    if v != dv:
        raise ValueError(f"the draft model's vocabulary ({dv} tokens) differs from the model's ({v})")


def _size(model) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- draft length
PROBE_EVERY = 8  # timed rounds at the chosen K between two trials of a neighbouring K
PROBE_ROUNDS = 3  # timed rounds a neighbouring K is tried for


class DraftLength:
    """K per round. Fixed when given. Otherwise it starts from the K that maximises expected
    tokens per unit of cost, (1 - a^(K+1)) / (1 - a) / (1 + (VERIFY_SLOPE + draft_cost) K),
    for the acceptance rate a estimated from recent rounds (a decaying count of accepted and
    rejected drafts: a round stops at its first rejection, so accepted / (accepted +
    rejections) estimates a). Where rounds are timed (`observe`), it then climbs on measured
    tokens per second: every PROBE_EVERY rounds it tries K - 1 or K + 1 (in turn; K = 0 is a
    plain decode step) for PROBE_ROUNDS rounds and keeps the faster. That corrects what the
    cost model cannot know, such as a check of a tiny model costing over a step whatever K."""

    def __init__(
        self, fixed: int | None, k_max: int = MAX_DRAFT, draft_cost: float = 0.0, decay: float = 0.9
    ):
        self.fixed, self.k_max, self.draft_cost, self.decay = fixed, k_max, draft_cost, decay
        self.accepted, self.rejected = 1.0, 1.0  # a prior of a = 0.5
        self.speed: dict[int, float] = {}  # K -> decaying mean of tokens per second
        self.current: int | None = None  # the measured choice, from the first timed round
        self.trial: int | None = None  # the neighbouring K under trial
        self.since, self.upward = 0, True

    @property
    def rate(self) -> float:
        return self.accepted / (self.accepted + self.rejected)

    def k(self) -> int:
        if self.fixed is not None:
            return self.fixed
        if self.current is None:
            return self.modelled()
        return self.trial if self.trial is not None else self.current

    def modelled(self) -> int:
        """The K the cost model expects to be fastest at the current acceptance rate."""
        return max(
            range(1, self.k_max + 1), key=lambda k: speedup(self.rate, k, VERIFY_SLOPE + self.draft_cost)
        )

    def update(self, drafted: int, accepted: int) -> None:
        self.accepted = self.decay * self.accepted + accepted
        self.rejected = self.decay * self.rejected + (accepted < drafted)

    def observe(self, k: int, tokens: int, seconds: float) -> None:
        """A round run at K (the value k() gave) produced `tokens` in `seconds`."""
        if self.fixed is not None or seconds <= 0:
            return
        speed = tokens / seconds
        old = self.speed.get(k)
        self.speed[k] = speed if old is None else self.decay * old + (1 - self.decay) * speed
        if self.current is None:
            self.current = k
        if self.trial is None:
            self.since += 1
            if self.since >= PROBE_EVERY:
                self.trial, self.since = self._neighbour(), 0
        elif k == self.trial:  # (a round at another K, one the budget capped, tells nothing)
            self.since += 1
            if self.since >= PROBE_ROUNDS:
                if self.speed[k] > self.speed.get(self.current, 0.0):
                    self.current = k
                self.trial, self.since = None, 0

    def _neighbour(self) -> int:
        """K + 1 and K - 1 in turn, within 0 .. k_max."""
        up, down = min(self.current + 1, self.k_max), max(self.current - 1, 0)
        go_up = self.upward if up != self.current and down != self.current else up != self.current
        self.upward = not self.upward
        return up if go_up else down


def speedup(rate: float, k: int, slope: float) -> float:
    """Expected tokens per round over its cost in single steps, a round costing 1 + slope*k."""
    tokens = k + 1 if rate >= 1 else (1 - rate ** (k + 1)) / (1 - rate)
    return tokens / (1 + slope * k)


# --------------------------------------------------------------------------- drafters
class PromptLookup:
    """Proposes what followed the latest earlier occurrence of the context's last n tokens
    (n = ngram .. min_ngram, longest first); nothing when there is none. Its q is a point mass."""

    def __init__(self, ngram: int = 3, min_ngram: int = 1):
        self.ngram, self.min_ngram = ngram, min_ngram
        self.index: list[dict[tuple, int]] = [{} for _ in range(ngram + 1)]
        self.indexed = 0

    def propose(self, tokens: list[int], k: int, row: Row) -> tuple[list[int], None]:
        self._index(tokens)
        for n in range(min(self.ngram, len(tokens)), self.min_ngram - 1, -1):
            start = self.index[n].get(tuple(tokens[-n:]))
            if start is not None:
                return _copy(tokens, start, k), None
        return [], None

    def _index(self, tokens: list[int]) -> None:
        """Register each n-gram that has a token after it: n-gram -> where that token is."""
        for p in range(max(self.indexed, 1), len(tokens)):
            for n in range(1, min(self.ngram, p) + 1):
                self.index[n][tuple(tokens[p - n : p])] = p
        self.indexed = len(tokens)

    def accepted(self, tokens_before: int, n: int) -> None:
        pass


def _copy(tokens: list[int], start: int, k: int) -> list[int]:
    """k tokens copied from `start` on; a copy that reaches the end goes on copying itself,
    as LZ77 does (a repeating tail repeats)."""
    out: list[int] = []
    for i in range(start, start + k):
        out.append(tokens[i] if i < len(tokens) else out[i - len(tokens)])
    return out


class DraftModel:
    """A small model that drafts one token at a time by its one-token decode step. Its state
    follows the context: before each draft it feeds, a copy of the state is kept (O(state),
    like a rewind record, and the step stays the cheap one), and the copy from before the first
    draft that was not kept replaces the state."""

    def __init__(self, model):
        self.model = model
        self.state = None
        self.seen = 0  # context tokens fed
        self.saved: list = []  # the state before each draft fed this round

    @torch.no_grad()
    def propose(self, tokens: list[int], k: int, row: Row) -> tuple[list[int], torch.Tensor]:
        logits = self._read(tokens[self.seen :])
        self.seen = len(tokens)
        drafts, qs = [], []
        for i in range(k):
            q, _ = distribution(logits[None], row.sampling)
            token = int(
                q.argmax() if row.sampling.greedy else draw(q, uniforms([row.generator], 1, q.device))
            )
            drafts.append(token)
            qs.append(q[0])
            if i + 1 < k:
                self.saved.append(self.state.clone())
                logits = self._step(token)
        return drafts, torch.stack(qs)

    def accepted(self, tokens_before: int, n: int) -> None:
        """n drafts were kept: return to the state after them (the last draft was never fed)."""
        if n < len(self.saved):
            self.state = self.saved[n]
        self.seen = tokens_before + min(n, len(self.saved))
        self.saved.clear()

    def _read(self, ids: list[int]) -> torch.Tensor:
        """Feed context tokens (the prompt, then each round's new ones): the next-token logits."""
        if self.state is not None and len(ids) == 1:
            return self._step(ids[0])
        x = torch.tensor([ids], device=self.model.device)
        out = self.model(x, cache=self.state, use_cache=True, logits_to_keep=1)
        self.state = out.cache
        return out.logits[0, -1]

    def _step(self, token: int) -> torch.Tensor:
        ids = torch.tensor([token], device=self.model.device)
        active = torch.ones(1, dtype=torch.bool, device=self.model.device)
        return self.model.decode_step(ids, active, self.state)[0]


# --------------------------------------------------------------------------- the decoder
class SpeculativeDecoder:
    """The core's Decoder for one row (see core.Decoder), speculating each step.

    The row's last token is not yet fed, as in the core. A round feeds [last, d1..dK] with a
    rewind record, walks the drafts with the row's own sampler, and rewinds the state to just
    after the last token it keeps; its last sampled token (a correction or a bonus) is the
    next round's `last`. `context` holds every token the state has read before `last`."""

    def __init__(self, model, slots: Slots, speculation: Speculation, context: list[int]):
        if slots.capacity != 1:
            raise ValueError(
                f"speculative decoding runs one sequence at a time, got a batch of {slots.capacity}"
            )
        self.model, self.state = model, slots.state
        self.drafter = speculation.drafter(model)
        self.length = speculation.schedule(model)
        self.tokens = list(context)
        self.row: Row | None = None
        self.first: torch.Tensor | None = None
        self.drafted = self.accepted = self.rounds = self.rejected = 0
        self.decoded = 0
        self.clock = time.perf_counter  # what rounds are timed by (a test may replace it)

    @property
    def live(self) -> list[Row]:
        return [self.row] if self.row is not None else []

    def adopt(self, rows, logits: torch.Tensor) -> None:
        (self.row,) = rows
        self.first = logits[0]

    @torch.no_grad()
    def step(self) -> list[tuple[Row, TextStep]]:
        row = self.row
        if row is None:
            return []
        if self.first is not None:  # the first token comes from the prefill's logits
            logits, self.first = self.first[None], None
            tokens, logprobs = sample_rows(logits, [row])
            events = [(row, row.advance(tokens[0], logprobs[0]))]
        else:
            events, logits = self._round(row)
        self.tokens.extend(step.token_id for _, step in events)
        _attach_scores(logits, events)
        if row.finish_reason is not None:
            self.row = None
        return events

    def _round(self, row: Row) -> tuple[list[tuple[Row, TextStep]], torch.Tensor]:
        """One round, timed for DraftLength where the device computes as it is called (the
        CPU; elsewhere the clock would read before the work is done)."""
        chosen, budget = self.length.k(), row.max_new_tokens - row.generated - 1
        start = self.clock()
        events, logits = self._speculate(row, min(chosen, budget))  # never past the token budget
        if chosen <= budget and self.state.device.type == "cpu":
            self.length.observe(chosen, len(events), self.clock() - start)
        return events, logits

    def _speculate(self, row: Row, k: int) -> tuple[list[tuple[Row, TextStep]], torch.Tensor]:
        before = len(self.tokens)
        drafts, q = self.drafter.propose(self.tokens, k, row) if k > 0 else ([], None)
        if not drafts:
            self.drafter.accepted(before, 0)
            return self._plain(row)
        ids = torch.tensor([[row.last] + drafts], device=self.state.device)
        out = self.model(ids, cache=self.state, use_cache=True, rewind=True)
        events, accepted = self._walk(row, drafts, q, out.logits[0])
        if len(events) < len(drafts) + 1:  # the state keeps one fed token per new token
            out.rewind.apply(self.state, len(events))
        self.drafter.accepted(before, accepted)
        self.length.update(len(drafts), accepted)
        self.rejected += accepted < len(drafts)
        self.drafted, self.accepted, self.rounds = (
            self.drafted + len(drafts),
            self.accepted + accepted,
            self.rounds + 1,
        )
        self.decoded = 1
        return events, out.logits[0, : len(events)]

    def _walk(self, row: Row, drafts: list[int], q, logits: torch.Tensor):
        """Accept drafts in order; the first rejection draws a correction, and when all pass
        the last logits give a bonus token. Returns the events and the drafts accepted."""
        events = []
        for i, d in enumerate(drafts):
            p, logprobs = row_distribution(logits[i], row)
            qi = None if q is None else q[i]
            if not _accept(p, qi, d, row):
                token = _correction(p, qi, d, row)
                return events + [(row, row.advance(token, float(logprobs[token])))], i
            events.append((row, row.advance(d, float(logprobs[d]))))
            if row.finish_reason is not None:
                return events, i + 1
        tokens, logprobs = sample_rows(logits[len(drafts)][None], [row])
        return events + [(row, row.advance(tokens[0], logprobs[0]))], len(drafts)

    def _plain(self, row: Row) -> tuple[list[tuple[Row, TextStep]], torch.Tensor]:
        """No draft this round: one ordinary decode step."""
        ids = torch.tensor([row.last], device=self.state.device)
        active = torch.ones(1, dtype=torch.bool, device=self.state.device)
        logits = self.model.decode_step(ids, active, self.state)
        tokens, logprobs = sample_rows(logits, [row])
        self.decoded = 1
        return [(row, row.advance(tokens[0], logprobs[0]))], logits

    @property
    def acceptance(self) -> float:
        """Accepted drafts over drafted tokens so far (0 before any round)."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def rate(self) -> float:
        """The per-token acceptance rate: accepted / (accepted + rejections), rounds stopping
        at their first rejection (what DraftLength and `speedup` take as `rate`)."""
        return self.accepted / max(self.accepted + self.rejected, 1)


def _accept(p: torch.Tensor, q: torch.Tensor | None, d: int, row: Row) -> bool:
    """Keep draft d with probability min(1, p(d) / q(d)); q None is a point mass at d."""
    if row.sampling.greedy:
        return bool(p[d] > 0)
    ratio = float(p[d]) / (1.0 if q is None else max(float(q[d]), 1e-30))
    return ratio >= 1 or float(uniforms([row.generator], 1, p.device)[0]) < ratio


def _correction(p: torch.Tensor, q: torch.Tensor | None, d: int, row: Row) -> int:
    """The token after a rejected draft: a draw from norm(max(p - q, 0))."""
    if row.sampling.greedy:
        return int(p.argmax())
    residual = p.clone()
    if q is None:
        residual[d] = 0
    else:
        residual = (p - q).clamp_min(0)
    if not math.isfinite(float(residual.sum())) or float(residual.sum()) <= 0:
        residual = p
    return int(draw(residual[None], uniforms([row.generator], 1, p.device))[0])
