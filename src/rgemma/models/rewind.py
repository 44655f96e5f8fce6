"""Exact rewinds: a forward over T new tokens can say how to take its State back to just
after any of its first j tokens, at O(T x state) cost and without running anything again.

`model(ids, cache=state, rewind=True)` returns, beside the updated state, a `Rewind` record:
per recurrent layer the conv inputs of the call behind the window it started from, and h
before the call and after each token (the scan computes them anyway); per attention layer
the call's keys and values and the ring slots it overwrote. `record.apply(state, keep)` then
puts `state` where a forward over the first `keep` tokens alone would have left it, every
tensor and counter equal. Speculative decoding (rgemma.text.speculative) verifies K drafted
tokens in one call and keeps the accepted ones this way; the model knows nothing of it.

A traced call must be pad-free and continue a state (a `cache`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rgemma.models.state import AttentionState, RecurrentState, State


@dataclass
class RecurrentTrace:
    inputs: torch.Tensor  # (B, K-1+T, E) [conv window before the call, the call's conv inputs]
    h: torch.Tensor  # (B, 1+T, E) float32: h before the call, then after each token

    def apply(self, layer: RecurrentState, keep: torch.Tensor) -> None:
        K1 = layer.conv.shape[1]
        window = keep[:, None] + torch.arange(K1, device=keep.device)  # (B, K-1)
        layer.conv.copy_(_gather_rows(self.inputs, window))
        layer.h.copy_(_gather_rows(self.h, keep[:, None])[:, 0])


@dataclass
class AttentionTrace:
    overwritten_k: torch.Tensor  # (B, N, Hkv, Dh), N = min(T, W): slot (count0 + i) % W before
    overwritten_v: torch.Tensor  # the call, for i < N
    k: torch.Tensor  # (B, T, Hkv, Dh) the call's keys (after RoPE) and values
    v: torch.Tensor

    def apply(self, layer: AttentionState, keep: torch.Tensor, count0: torch.Tensor) -> None:
        """Token t >= keep of the call wrote slot (count0 + t) % W; that slot goes back to the
        newest key before count0 + keep with the same slot: W * m tokens earlier, which is
        either an overwritten key or one of the call's own."""
        W, T, N = layer.k.shape[1], self.k.shape[1], self.overwritten_k.shape[1]
        t = torch.arange(max(0, T - W), T, device=keep.device)[None]  # (1, T') distinct slots
        undo = t >= keep[:, None]  # (B, T')
        back = t - W * torch.div(t - keep[:, None] + W, W, rounding_mode="floor")  # count - count0
        index = torch.where(back < 0, back + W, back + N).clamp(0, N + T - 1)
        rows = torch.arange(keep.shape[0], device=keep.device)[:, None]
        slot = torch.remainder(count0[:, None] + t, W)
        for ring, old, new in ((layer.k, self.overwritten_k, self.k), (layer.v, self.overwritten_v, self.v)):
            timeline = torch.cat([old, new], dim=1)  # counts count0-W .. count0-W+N-1, count0 ..
            value = _gather_rows(timeline, index)
            ring[rows, slot] = torch.where(undo[..., None, None], value, ring[rows, slot])


@dataclass
class Rewind:
    """How to take a State back to after the first `keep` tokens of one traced call."""

    layers: list[RecurrentTrace | AttentionTrace]
    count0: torch.Tensor  # (B,) count before the call
    doc_start: torch.Tensor  # (B, 1+T) doc_start before the call, then after each token
    next_pos: torch.Tensor  # (B, 1+T)

    @property
    def length(self) -> int:
        return self.doc_start.shape[1] - 1

    @torch.no_grad()
    def apply(self, state: State, keep: int | torch.Tensor) -> State:
        """Rewind `state` (which this call left) in place to after its first `keep` tokens
        (an int, or one per row in 0..T); returns it."""
        keep = torch.as_tensor(keep, dtype=torch.long, device=state.device).expand(state.batch_size)
        if bool(((keep < 0) | (keep > self.length)).any()):
            raise ValueError(f"rewind: keep must be in 0..{self.length}, got {keep.tolist()}")
        for layer, trace in zip(state.layers, self.layers):
            if isinstance(trace, RecurrentTrace):
                trace.apply(layer, keep)
            else:
                trace.apply(layer, keep, self.count0)
        state.count.copy_(self.count0 + keep)
        state.doc_start.copy_(_gather_rows(self.doc_start, keep[:, None])[:, 0])
        state.next_pos.copy_(_gather_rows(self.next_pos, keep[:, None])[:, 0])
        return state


def recurrent_trace(
    window: torch.Tensor, inputs: torch.Tensor, h0: torch.Tensor | None, h: torch.Tensor
) -> RecurrentTrace:
    """window: (B, K-1, E) before the call; inputs: (B, T, E) conv inputs; h: (B, T, E) fp32."""
    h0 = torch.zeros_like(h[:, 0]) if h0 is None else h0
    return RecurrentTrace(torch.cat([window.to(inputs.dtype), inputs], 1), torch.cat([h0[:, None], h], 1))


def attention_trace(
    state: AttentionState, k: torch.Tensor, v: torch.Tensor, count0: torch.Tensor
) -> AttentionTrace:
    """Taken before the call writes the ring: the slots its first min(T, W) tokens overwrite."""
    W, T = state.k.shape[1], k.shape[1]
    slots = torch.remainder(count0[:, None] + torch.arange(min(T, W), device=k.device), W)
    return AttentionTrace(_gather_rows(state.k, slots), _gather_rows(state.v, slots), k, v)


def rewind_record(traces: list, state_before: tuple, doc_start: torch.Tensor, pos: torch.Tensor) -> Rewind:
    """The record of a call: `state_before` is (count, doc_start, next_pos) before it;
    doc_start and pos (B, T) are each token's (rgemma.models.positions.Tokens)."""
    count0, doc0, next0 = state_before
    return Rewind(
        traces,
        count0.clone(),
        torch.cat([doc0[:, None], doc_start], 1),
        torch.cat([next0[:, None], pos + 1], 1),
    )


def _gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x: (B, N, ...), idx: (B, M) -> (B, M, ...)."""
    return x.gather(1, idx.view(*idx.shape, *([1] * (x.ndim - 2))).expand(-1, -1, *x.shape[2:]))
