"""Pure sampling functions on next-token logits of shape (B, V).

`sample` applies, in this order:

    repetition penalty -> temperature -> top-k -> top-p -> min-p -> sample

Each filter masks tokens with -inf and always keeps the most likely token, so a row never
becomes empty. Every accepted parameter, extremes such as 1e-300 and 1e300 included, gives
finite probabilities for logits that are finite or -inf (masked) with a finite maximum: a
row's top token keeps a probability > 0 however far the others are pushed.

Temperature 0 means greedy: the argmax of the penalised logits, with temperature and the
truncation filters skipped. Randomness comes only from the explicit
`torch.Generator`, so a seed reproduces a run. Nothing here knows about the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

# Padding value in `prev_ids` for positions that hold no token.
PAD_ID = -1


@dataclass(frozen=True)
class SamplingParams:
    """Sampler settings; the defaults sample from the unmodified distribution.

    temperature: 0 is greedy, otherwise logits are divided by it.
    top_k: keep the k most likely tokens; 0 disables.
    top_p: keep the smallest set of most likely tokens whose probability reaches top_p.
    min_p: keep tokens whose probability is at least min_p times the top probability.
    repetition_penalty: CTRL's penalty for tokens already in `prev_ids`; 1 disables.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        _check(
            self.temperature >= 0 and math.isfinite(self.temperature),
            "temperature",
            "a finite number >= 0",
        )
        _check(isinstance(self.top_k, int) and self.top_k >= 0, "top_k", "an integer >= 0")
        _check(0 < self.top_p <= 1, "top_p", "in (0, 1]")
        _check(0 <= self.min_p <= 1, "min_p", "in [0, 1]")
        _check(
            self.repetition_penalty > 0 and math.isfinite(self.repetition_penalty),
            "repetition_penalty",
            "a finite number > 0",
        )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _check(ok: bool, field: str, requirement: str) -> None:
    if not ok:
        raise ValueError(f"SamplingParams.{field} must be {requirement}")


def apply_repetition_penalty(
    logits: torch.Tensor, prev_ids: torch.Tensor | None, penalty: float
) -> torch.Tensor:
    """Penalise tokens already seen (Keskar et al. 2019, CTRL; as in transformers).

    A seen token's logit is divided by `penalty` when positive and multiplied by it when
    negative, so penalty > 1 always makes it less likely. logits: (B, V); prev_ids: (B, N)
    with PAD_ID (-1) for empty slots. Returns a new tensor.
    """
    if penalty <= 0:
        raise ValueError(f"repetition penalty must be > 0, got {penalty}")
    if penalty == 1.0 or prev_ids is None or prev_ids.numel() == 0:
        return logits
    valid = prev_ids != PAD_ID
    # scatter_add (not scatter) because repeated ids, pads included, hit the same slot.
    counts = torch.zeros_like(logits).scatter_add_(1, prev_ids.clamp(min=0).long(), valid.to(logits.dtype))
    penalty = _representable(penalty, logits.dtype)
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    # An extreme penalty overflows a finite logit to +-inf (softmax: nan); clamp it to the
    # dtype's range. A masked -inf stays -inf.
    big = torch.finfo(logits.dtype).max
    penalised = torch.where(torch.isfinite(logits), penalised.clamp(-big, big), logits)
    return torch.where(counts > 0, penalised, logits)


def _representable(x: float, dtype: torch.dtype) -> float:
    """A positive scalar clamped to the normal range of `dtype`, which is what an op with a
    tensor of that dtype computes with: 1e-300 would be 0 there and 1e300 inf (0 * inf: nan)."""
    info = torch.finfo(dtype)
    return min(max(x, info.tiny), info.max)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide logits by a temperature > 0 (greedy decoding is handled by `sample`)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 here, got {temperature}; use greedy for 0")
    if temperature == 1.0:
        return logits
    scaled = logits / _representable(temperature, logits.dtype)
    # A tiny temperature can overflow a row: its top logit to +inf, or all of it to -inf
    # (softmax: nan). Such rows are scaled after subtracting their max, so the top token sits
    # at 0 and the rest at or below it. Other rows keep the plain quotient, bit for bit.
    top = logits.amax(dim=-1, keepdim=True)
    shifted = (logits - top) / _representable(temperature, logits.dtype)
    return torch.where(torch.isfinite(scaled.amax(dim=-1, keepdim=True)), scaled, shifted)


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits per row (ties with the k-th are kept); k <= 0 disables."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, -math.inf)


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2019): keep the most likely tokens until their
    probability reaches p. The top token is always kept; p >= 1 disables."""
    if p >= 1.0:
        return logits
    # stable sort: among equal logits the lower id comes first, as with argmax.
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the better tokens
    drop_sorted = mass_before >= p
    drop_sorted[:, 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, -math.inf)


def apply_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keep tokens with probability >= min_p * (top probability); min_p <= 0 disables."""
    if min_p <= 0:
        return logits
    logprobs = logits.log_softmax(dim=-1)
    threshold = logprobs.max(dim=-1, keepdim=True).values + math.log(min_p)
    return logits.masked_fill(logprobs < threshold, -math.inf)


def sample(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | Sequence[torch.Generator | None] | None,
    prev_ids: torch.Tensor | None = None,
    u: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row. logits: (B, V); prev_ids: (B, N) or None.

    Returns (token_ids (B,), logprobs (B,)). The logprob is the chosen token's log-softmax
    under the penalised, temperature-scaled distribution, before top-k/top-p/min-p
    truncation (for greedy: the penalised logits at temperature 1). `generator` is one
    generator for the batch, or one per row (rows may share one): see `uniforms`. Generators
    must be on the logits' device; None uses torch's global RNG. `u` (B,) gives the rows'
    uniforms drawn already (the generator is then unused), so a retried row draws nothing new.
    """
    probs, logprobs = distribution(logits, params, prev_ids)
    if params.greedy:
        token_ids = probs.argmax(dim=-1)
    else:
        u = uniforms(generator, logits.shape[0], logits.device) if u is None else u
        token_ids = draw(probs, u)
    return token_ids, logprobs.gather(1, token_ids[:, None]).squeeze(1)


def distribution(
    logits: torch.Tensor, params: SamplingParams, prev_ids: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """What `sample` draws from and what it reports, both (B, V) float32: the probabilities
    after every filter (greedy: one-hot at the argmax of the penalised logits) and the
    logprobs before truncation (see `sample`). Speculative decoding accepts drafts by them."""
    logits = apply_repetition_penalty(logits.float(), prev_ids, params.repetition_penalty)
    if params.greedy:
        probs = torch.zeros_like(logits).scatter_(1, logits.argmax(dim=-1, keepdim=True), 1.0)
        return probs, logits.log_softmax(dim=-1)
    logits = apply_temperature(logits, params.temperature)
    return truncated_probs(logits, params), logits.log_softmax(dim=-1)


def truncated_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The distribution tokens are drawn from: top-k, top-p and min-p applied to penalised,
    temperature-scaled logits (B, V), then softmax."""
    kept = apply_min_p(apply_top_p(apply_top_k(logits, params.top_k), params.top_p), params.min_p)
    return kept.softmax(dim=-1)


def uniforms(
    generator: torch.Generator | Sequence[torch.Generator | None] | None, rows: int, device
) -> torch.Tensor:
    """One float64 in [0, 1) per row. With a sequence of generators, row i's number comes from
    generator i alone (drawn in row order), so a row's choice never depends on its batch."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.rand(rows, generator=generator, device=device, dtype=torch.float64)
    if len(generator) != rows:
        raise ValueError(f"{len(generator)} generators for {rows} rows")
    return torch.cat([torch.rand(1, generator=g, device=device, dtype=torch.float64) for g in generator])


def draw(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: per row, the first token whose cumulative probability exceeds
    u times the total. probs: (B, V), u: (B,) in [0, 1). Tokens of probability 0 are never
    drawn; one uniform per row is what lets each row use its own generator in one batched op."""
    cdf = probs.double().cumsum(dim=-1)
    total = cdf[:, -1:]
    target = torch.minimum(u[:, None] * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, target, right=True)[:, 0]
