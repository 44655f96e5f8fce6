"""Positions are the single source of truth: inputs are validated here, and every mask derives
from what this module computes.

A token is *real* unless `attention_mask` is 0 or its position is negative (DeepMind gives pads
position -1). Pads are invisible: they update no state and nothing attends to them. Padding must
be on the left of each row. A real token at position 0 starts a document: the RG-LRU, the conv
window and attention all reset there (DeepMind semantics; this makes packed rows exact).

Each real token also gets a *count*: how many real tokens its row has seen before it, across
calls. Windows (conv taps, the attention window of W+1 keys) are measured in counts, documents by
`doc_start` (the count of the row's last position-0 token), RoPE by positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rgemma.models.config import RecurrentGemmaConfig
from rgemma.models.state import State


@dataclass
class Tokens:
    """Bookkeeping for one forward call of T new tokens per row (B rows)."""

    pos: torch.Tensor  # (B, T) RoPE positions (0 at pads)
    real: torch.Tensor  # (B, T) bool
    reset: torch.Tensor  # (B, T) bool: real token at position 0
    count: torch.Tensor  # (B, T) count of each real token (-1 at pads)
    doc_start: torch.Tensor  # (B, T) count at which each token's document began
    count0: torch.Tensor  # (B,) the state's count before this call
    n_pad: torch.Tensor  # (B,) leading pads per row
    any_pad: bool
    has_state: bool  # a state came in (else everything before this call is empty)
    trace: list | None = None  # a list: each temporal block appends what rewinding needs
    # (rgemma.models.rewind)

    @property
    def max_pad(self) -> int:
        return int(self.n_pad.max()) if self.any_pad else 0


def check_input_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    """Token ids must be a (B, T) integer tensor with values in [0, vocab_size)."""
    if not isinstance(input_ids, torch.Tensor):
        raise ValueError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must have shape (batch, seq_len), got {tuple(input_ids.shape)}")
    if input_ids.numel() == 0:
        raise ValueError(f"empty input: input_ids has shape {tuple(input_ids.shape)}")
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"token id {bad} is out of range [0, {vocab_size}) for this model's vocabulary")


def make_tokens(
    config: RecurrentGemmaConfig,
    batch: int,
    length: int,
    device: torch.device,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    state: State | None,
) -> Tokens:
    """Validate the mask, positions and state against a (batch, length) input; derive Tokens."""
    if length == 0:
        raise ValueError("empty input: sequence length is 0")
    if state is not None:
        state.check_compatible(config, batch)
    if position_ids is not None:
        position_ids = _check_positions(position_ids, batch, length, device)
    real = _real_mask(attention_mask, position_ids, batch, length, device)
    count0 = state.count if state is not None else torch.zeros(batch, dtype=torch.long, device=device)
    count = torch.where(real, count0[:, None] + real.long().cumsum(1) - 1, -1)
    if position_ids is None:
        start = state.next_pos if state is not None else torch.zeros_like(count0)
        pos = torch.where(real, start[:, None] + real.long().cumsum(1) - 1, 0)
    else:
        pos = torch.where(real, position_ids, 0)
    reset = real & (pos == 0)
    prev = state.doc_start if state is not None else torch.zeros_like(count0)
    doc_start = torch.where(reset, count, -1).cummax(dim=1).values.clamp_min(prev[:, None])
    n_pad = (~real).sum(1)
    return Tokens(
        pos, real, reset, count, doc_start, count0, n_pad, bool(n_pad.any()), has_state=state is not None
    )


def step_tokens(state: State, active: torch.Tensor) -> Tokens:
    """make_tokens for one trusted token per row, continuing `state`, with no host
    synchronisation (tests check the two agree). active: (B,) bool; False marks padding."""
    real = active[:, None]
    count = torch.where(real, state.count[:, None], -1)
    pos = torch.where(real, state.next_pos[:, None], 0)
    reset = real & (pos == 0)
    doc_start = torch.where(reset, count, state.doc_start[:, None])
    return Tokens(
        pos, real, reset, count, doc_start, state.count, (~active).long(), any_pad=True, has_state=True
    )  # any_pad: pads are possible, never checked


def advance_state(state: State, tok: Tokens) -> None:
    """Update the per-row counters of `state` (in place) after the call described by `tok`."""
    n_real = tok.real.sum(1)
    seen = n_real > 0
    state.count = tok.count0 + n_real
    state.doc_start = tok.doc_start[:, -1]
    last_pos = tok.pos[:, -1]  # left padding: the last column is real whenever the row has any
    state.next_pos = torch.where(seen, last_pos + 1, state.next_pos)


def _check_positions(position_ids, batch, length, device) -> torch.Tensor:
    if not isinstance(position_ids, torch.Tensor):
        raise ValueError(f"position_ids must be a torch.Tensor, got {type(position_ids).__name__}")
    if position_ids.dtype.is_floating_point or position_ids.dtype == torch.bool:
        raise ValueError(f"position_ids must be integers, got dtype {position_ids.dtype}")
    if position_ids.ndim == 1:
        position_ids = position_ids[None]
    if position_ids.ndim != 2 or position_ids.shape[1] != length or position_ids.shape[0] not in (1, batch):
        raise ValueError(f"position_ids has shape {tuple(position_ids.shape)}, expected {(batch, length)}")
    return position_ids.to(device=device, dtype=torch.long).expand(batch, length)


def _real_mask(attention_mask, position_ids, batch, length, device) -> torch.Tensor:
    real = torch.ones(batch, length, dtype=torch.bool, device=device)
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor):
            raise ValueError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}")
        if tuple(attention_mask.shape) != (batch, length):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, expected "
                f"{(batch, length)} (batch, seq_len) to match the input"
            )
        if not ((attention_mask == 0) | (attention_mask == 1)).all():
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
        real &= attention_mask.to(device).bool()
    if position_ids is not None:
        real &= position_ids >= 0
    later_pad = (~real[:, 1:]) & real.cummax(dim=1).values[:, :-1]
    if later_pad.any():
        row = int(later_pad.any(1).nonzero()[0])
        raise ValueError(
            f"row {row} has padding after a token: padding must be on the left "
            "(tokenizer.padding_side = 'left'), or position resets to pack documents"
        )
    return real


# --------------------------------------------------------------------------- right padding
RIGHT_PADDING = (
    "row {row} ends in padding (right padding), which a state cannot continue from: pad on the "
    "left (tokenizer.padding_side = 'left'), or pass use_cache=False"
)


def trailing_pads(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B,) padding at the end of each row (right padding), or None when no row ends in one.
    Without a state to continue, such a batch runs as the same rows left-padded (roll_rows),
    which gives the real tokens the logits they have alone."""
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.ndim != 2:
        return None
    real = attention_mask != 0
    if not real.any(1).all() or real[:, -1].all():
        return None
    T = real.shape[1]
    last = torch.where(real, torch.arange(T, device=real.device), -1).max(1).values
    return T - 1 - last


def roll_rows(x: torch.Tensor | None, shift: torch.Tensor) -> torch.Tensor | None:
    """Rotate each row of x (B, T, ...) right by shift[b] along T (negative: left)."""
    if x is None:
        return None
    T = x.shape[1]
    index = torch.remainder(torch.arange(T, device=x.device)[None] - shift.to(x.device)[:, None], T)
    return x.gather(1, index.view(*index.shape, *([1] * (x.ndim - 2))).expand(-1, -1, *x.shape[2:]))
