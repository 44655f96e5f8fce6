"""Beam search with transformers' semantics, on the explicit State.

Each batch row keeps `num_beams` running hypotheses and up to `num_beams` finished ones. A
step scores every extension of every running beam by the sum of its token log-probs (the
logits processors applied to each log-softmax, as transformers does), keeps the best
K = max(2, 1 + #EOS) * num_beams candidates, and then:

- a candidate that ends in EOS, or reaches the token budget, is finished if it is among the
  best num_beams candidates; its score is divided by (new tokens) ** length_penalty;
- the best num_beams unfinished candidates run on: the State is reordered to their parents
  with `State.select`, and their last tokens go through one `decode_step`;
- early_stopping=True ends a batch row once num_beams hypotheses are finished; False and
  "never" end it once no running beam can beat the worst finished one (False assumes the
  current length, "never" the longest possible when length_penalty > 0).

The prompt is prefilled by the core (rgemma.text.core.prefill) and the processors are the
core's pure functions (rgemma.text.processors); this module only keeps the beams.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rgemma.models.state import State
from rgemma.text.processors import Rules, apply_rules
from rgemma.text.sampling import PAD_ID, apply_repetition_penalty

NEG = -1.0e9  # transformers' "impossible" score: added, never -inf, so sums stay finite


@dataclass
class BeamSettings:
    num_beams: int
    max_new_tokens: int
    eos_ids: list[int]
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return_sequences: int = 1
    rules: Rules = Rules()
    repetition_penalty: float = 1.0
    pad_id: int = 0
    record: bool = False  # keep each step's raw logits and processed log-probs

    def __post_init__(self) -> None:
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        if not 1 <= self.num_return_sequences <= self.num_beams:
            raise ValueError(
                f"num_return_sequences ({self.num_return_sequences}) must be between 1 and "
                f"num_beams ({self.num_beams})"
            )


@dataclass
class BeamOutput:
    """num_return_sequences hypotheses per batch row, best first: new tokens (pad after a
    hypothesis ends), scores, and the flat beam each token came from (-1 after the end)."""

    tokens: torch.Tensor  # (B * R, N)
    scores: torch.Tensor  # (B * R,)
    beam_indices: torch.Tensor  # (B * R, N)
    step_logits: list[torch.Tensor] = field(default_factory=list)  # each (B * num_beams, V)
    step_scores: list[torch.Tensor] = field(default_factory=list)


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x: (B, M, ...), index: (B, K) -> (B, K, ...)."""
    return x.gather(1, index.view(*index.shape, *([1] * (x.ndim - 2))).expand(-1, -1, *x.shape[2:]))


class Beams:
    """The running and finished hypotheses of B batch rows."""

    def __init__(self, batch: int, s: BeamSettings, device):
        nb, N = s.num_beams, s.max_new_tokens
        self.s, self.B, self.n = s, batch, 0
        self.tokens = torch.full((batch, nb, N), s.pad_id, dtype=torch.long, device=device)
        self.origin = torch.full((batch, nb, N), -1, dtype=torch.long, device=device)
        self.scores = torch.zeros(batch, nb, device=device)
        self.scores[:, 1:] = NEG  # only the first beam extends at the first step
        self.done_tokens, self.done_origin = self.tokens.clone(), self.origin.clone()
        self.done_scores = torch.full((batch, nb), NEG, device=device)
        self.done = torch.zeros(batch, nb, dtype=torch.bool, device=device)
        self.improvable = torch.ones(batch, 1, dtype=torch.bool, device=device)
        self.open = True

    def step(self, logprobs: torch.Tensor) -> torch.Tensor:
        """Take the processed log-probs (B * num_beams, V) of the running beams; return the flat
        parent of each new running beam (B * num_beams,)."""
        s, B, n = self.s, self.B, self.n
        nb, V = s.num_beams, logprobs.shape[-1]
        total = (logprobs.view(B, nb, V) + self.scores[..., None]).view(B, nb * V)
        K = max(2, 1 + len(s.eos_ids)) * nb
        top, index = torch.topk(total, K)
        parent, token = index // V, index % V
        flat_parent = parent + torch.arange(B, device=parent.device)[:, None] * nb
        cand = _gather(self.tokens, parent)
        cand[:, :, n] = token
        origin = _gather(self.origin, parent)
        origin[:, :, n] = flat_parent
        ends = torch.isin(token, torch.tensor(s.eos_ids, dtype=torch.long, device=token.device)) | (
            n + 1 >= s.max_new_tokens
        )
        keep = torch.topk(top + ends.float() * NEG, nb).indices
        self.tokens, self.origin = _gather(cand, keep), _gather(origin, keep)
        self.scores = _gather(top + ends.float() * NEG, keep)
        self._finish(top, cand, origin, ends)
        self.n = n + 1
        self._update_open(ends)
        return _gather(flat_parent, keep).view(-1)

    def _finish(self, top, cand, origin, ends) -> None:
        """Merge the candidates that just ended into the finished hypotheses (best num_beams)."""
        s, nb = self.s, self.s.num_beams
        first = torch.zeros_like(ends)
        first[:, :nb] = True
        finished_now = ends & first
        score = top / ((self.n + 1) ** s.length_penalty)
        full = self.done.all(-1, keepdim=True) & (s.early_stopping is True)
        score = score + full.float() * NEG + (~self.improvable).float() * NEG + (~finished_now).float() * NEG
        best = torch.topk(torch.cat([self.done_scores, score], 1), nb).indices
        self.done_tokens = _gather(torch.cat([self.done_tokens, cand], 1), best)
        self.done_origin = _gather(torch.cat([self.done_origin, origin], 1), best)
        self.done_scores = _gather(torch.cat([self.done_scores, score], 1), best)
        self.done = _gather(torch.cat([self.done, finished_now], 1), best)

    def _update_open(self, ends) -> None:
        s = self.s
        length = s.max_new_tokens if s.early_stopping == "never" and s.length_penalty > 0 else self.n
        best_running = self.scores[:, :1] / (length**s.length_penalty)
        worst_done = torch.where(self.done, self.done_scores.min(1, keepdim=True).values, NEG)
        self.improvable &= (best_running > worst_done).any(-1, keepdim=True)
        all_full = bool(self.done.all()) and s.early_stopping is True
        self.open = bool(self.improvable.any()) and not all_full and not bool(ends.all())

    def histories(self, prompts: list[list[int]]) -> list[list[int]]:
        """Each running beam's real tokens: its prompt, then what it has generated."""
        nb, n = self.s.num_beams, self.n
        generated = self.tokens[:, :, :n].reshape(self.B * nb, n).tolist()
        return [prompts[i // nb] + g for i, g in enumerate(generated)]

    def result(self) -> BeamOutput:
        R = self.s.num_return_sequences
        origin = self.done_origin[:, :R].reshape(-1, self.s.max_new_tokens)
        length = int((origin >= 0).sum(1).max())
        tokens = self.done_tokens[:, :R].reshape(-1, self.s.max_new_tokens)
        return BeamOutput(tokens[:, :length], self.done_scores[:, :R].reshape(-1), origin[:, :length])


@torch.no_grad()
def beam_search(
    model, logits: torch.Tensor, state: State, prompts: list[list[int]], s: BeamSettings
) -> BeamOutput:
    """Beam search from prefilled rows: `logits` (B, V) follow each prompt, `state` (B rows)
    holds them, `prompts` are their real ids (for the processors). The state is consumed."""
    B = logits.shape[0]
    beams = Beams(B, s, logits.device)
    rows = torch.arange(B, device=logits.device).repeat_interleave(s.num_beams)
    state, logits = state.select(rows), logits[rows].float()
    recorded_logits, recorded_scores = [], []
    active = torch.ones(B * s.num_beams, dtype=torch.bool, device=logits.device)
    while True:
        scores = _process(logits, beams, prompts, s)
        if s.record:
            recorded_logits.append(logits)
            recorded_scores.append(scores)
        parents = beams.step(scores)
        if not beams.open:
            break
        state = state.select(parents)  # each running beam continues its parent's state
        last = beams.tokens[:, :, beams.n - 1].reshape(-1)
        logits = model.decode_step(last, active, state).float()
    out = beams.result()
    out.step_logits, out.step_scores = recorded_logits, recorded_scores
    return out


def _process(logits: torch.Tensor, beams: Beams, prompts: list[list[int]], s: BeamSettings) -> torch.Tensor:
    """Log-softmax, then the repetition penalty and the rules, on every running beam."""
    logprobs = logits.log_softmax(-1)
    if not s.rules.any and s.repetition_penalty == 1:
        return logprobs
    histories = beams.histories(prompts)
    if s.repetition_penalty != 1:
        prev = torch.full(
            (len(histories), max(map(len, histories), default=0) or 1), PAD_ID, dtype=torch.long
        )
        for i, h in enumerate(histories):
            prev[i, : len(h)] = torch.tensor(h, dtype=torch.long)
        logprobs = apply_repetition_penalty(logprobs, prev.to(logprobs.device), s.repetition_penalty)
    generated = [beams.n] * len(histories)
    return apply_rules(logprobs, s.rules, histories, generated, s.eos_ids)
