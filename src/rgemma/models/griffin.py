"""RecurrentGemma (Griffin, arXiv:2402.19427), top-down: norm, MLP, conv, RG-LRU, recurrent block,
local attention, residual block, model.

Shapes: B batch, T new tokens, D width (hidden_size), E lru width, H heads, Hkv key/value heads,
Dh head dim, K conv width, W attention window, R ring entries in play (W with a state, else 0),
V vocab. Module and parameter names are the Hugging Face checkpoint keys, so loading is an
identity map. Numerics follow DeepMind's `recurrentgemma` (the weights were trained with it).
Every block takes the per-call `Tokens` (positions, padding, counts) and its own layer state,
and returns its output and the updated layer state: no state lives on modules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rgemma.models.config import RecurrentGemmaConfig
from rgemma.models.outputs import BaseModelOutput, CausalLMOutput
from rgemma.models.positions import (
    RIGHT_PADDING,
    Tokens,
    advance_state,
    check_input_ids,
    make_tokens,
    roll_rows,
    step_tokens,
    trailing_pads,
)
from rgemma.models.rewind import attention_trace, recurrent_trace, rewind_record
from rgemma.models.state import AttentionState, RecurrentState, State
from rgemma.models.surface import ModelSurface
from rgemma.ops.scan import rnn_scan_fast

MIN_LOGIT = -2.3819763e38  # DeepMind's mask value: finite, so an all-masked row stays NaN-free
MAX_SQRT_GRADIENT = 1000.0
ATTENTION_BLOCK = 512  # queries per block of local attention: memory O(T * (W + block))


def per_call(tok: Tokens, key, make):
    """A mask or table that every layer of one call shares (RoPE, ring masks, conv taps):
    computed by the first layer that asks, then reused."""
    memo = tok.__dict__.setdefault("_memo", {})
    if key not in memo:
        memo[key] = make()
    return memo[key]


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * (1 + w), in the input dtype as DeepMind computes it."""

    def __init__(self, width: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(var + self.eps) * (1 + self.weight)


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="none" if name == "gelu" else "tanh")


class MLP(nn.Module):
    """Gated GELU: down(gelu(gate(x)) * up(x)), all with bias."""

    def __init__(self, config: RecurrentGemmaConfig):
        super().__init__()
        D, F_ = config.hidden_size, config.mlp_width
        self.act = config.hidden_activation
        self.gate_proj = nn.Linear(D, F_)
        self.up_proj = nn.Linear(D, F_)
        self.down_proj = nn.Linear(F_, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(activation(self.act, self.gate_proj(x)) * self.up_proj(x))


# --------------------------------------------------------------------------- recurrent block
def causal_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, window: torch.Tensor, tok: Tokens
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal conv over [previous K-1 inputs, x] that never crosses a document start.

    x: (B, T, E); weight: (E, 1, K) as in the checkpoint; window: (B, K-1, E).
    Returns (out (B, T, E), new window (B, K-1, E)). Tap j of a token reaches back j real tokens
    and is dropped when that token lies before the document start (DeepMind's document mask).
    """
    K = weight.shape[-1]
    ext = torch.cat([window.to(x.dtype), x], dim=1)  # (B, K-1+T, E)
    if x.shape[1] == 1:
        return _conv_step(ext, weight, bias, window, tok)
    if tok.any_pad:
        ext = _pads_first(ext, tok.n_pad, K - 1)
    T = x.shape[1]
    # Masks only matter near a document start or padding; most prefill chunks have neither.
    masked = per_call(
        tok, ("conv masked", K), lambda: bool((~tok.real | (tok.count - (K - 1) < tok.doc_start)).any())
    )
    out = bias.to(x.dtype).expand_as(x)
    for j in range(K):  # tap j multiplies the input j tokens back
        tap = ext[:, K - 1 - j : K - 1 - j + T] * weight[:, 0, K - 1 - j]
        if j and masked:
            ok = (tok.count - j >= tok.doc_start) & tok.real
            tap = tap * ok[..., None].to(x.dtype)
        out = out + tap
    return out, ext[:, T:]


def _conv_step(ext, weight, bias, window, tok: Tokens) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row: the K taps as one masked weighted sum; a pad row keeps its window."""
    K = weight.shape[-1]

    def taps():  # (B, K, 1): tap i reaches K-1-i tokens back
        back = torch.arange(K - 1, -1, -1, device=ext.device)
        ok = (tok.count[:, :1] - back >= tok.doc_start[:, :1]) & tok.real[:, :1] | (back == 0)
        return ok[..., None].to(ext.dtype)

    out = (ext * per_call(tok, ("conv", K, ext.dtype), taps) * weight[:, 0].t()).sum(1, keepdim=True)
    new_window = torch.where(tok.real[:, :, None], ext[:, 1:], window.to(ext.dtype))
    return out + bias.to(ext.dtype), new_window


def _pads_first(ext: torch.Tensor, n_pad: torch.Tensor, n_state: int) -> torch.Tensor:
    """Reorder [state entries, pads, tokens] to [pads, state entries, tokens] per row, so the
    entries before each real token are the real history."""
    n = torch.arange(ext.shape[1], device=ext.device)[None]
    P = n_pad[:, None]
    src = torch.where(n < P, n_state + n, torch.where(n < P + n_state, n - P, n))
    return ext.gather(1, src[..., None].expand(-1, -1, ext.shape[-1]))


class SqrtBoundDerivative(torch.autograd.Function):
    """sqrt with its gradient clipped at MAX_SQRT_GRADIENT, which avoids NaNs in bf16 training."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sqrt(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / torch.sqrt(torch.clamp(4.0 * x, min=1 / MAX_SQRT_GRADIENT**2))


def _bounded_sqrt(x: torch.Tensor) -> torch.Tensor:
    return SqrtBoundDerivative.apply(x) if x.requires_grad else torch.sqrt(x)


class RGLRU(nn.Module):
    """Real-Gated Linear Recurrent Unit with block-diagonal gates (H blocks of E/H x E/H).

    `scan` is the linear recurrence it runs, any rgemma.ops.scan implementation (the same
    signature and float32 result): an attribute of the instance, so that models in one process
    may run different ones."""

    def __init__(self, config: RecurrentGemmaConfig):
        super().__init__()
        E, H = config.lru_width, config.num_attention_heads
        self.heads = H
        self.scan = rnn_scan_fast
        self.recurrent_param = nn.Parameter(torch.zeros(E))
        self.input_gate_weight = nn.Parameter(torch.zeros(H, E // H, E // H))
        self.input_gate_bias = nn.Parameter(torch.zeros(H, E // H))
        self.recurrent_gate_weight = nn.Parameter(torch.zeros(H, E // H, E // H))
        self.recurrent_gate_bias = nn.Parameter(torch.zeros(H, E // H))

    def _gate(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        xh = x.reshape(-1, self.heads, x.shape[-1] // self.heads).transpose(0, 1)  # (H, B*T, E/H)
        y = torch.bmm(xh, w).transpose(0, 1).reshape(x.shape)  # x_h @ w_h for each head h
        return torch.sigmoid(y + b.flatten())

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The input gate and the recurrence gate, each (B, T, E)."""
        return (
            self._gate(x, self.input_gate_weight, self.input_gate_bias),
            self._gate(x, self.recurrent_gate_weight, self.recurrent_gate_bias),
        )

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor | None, tok: Tokens
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, E); h0: (B, E) float32. Returns (h (B, T, E), h_T (B, E)), both float32."""
        gate_x, gate_a = self.gates(x)
        log_a = -8.0 * gate_a * F.softplus(self.recurrent_param)
        a = torch.exp(log_a)
        multiplier = _bounded_sqrt(1 - torch.exp(2 * log_a))
        reset, real = tok.reset[..., None], tok.real[..., None]
        multiplier = torch.where(reset, 1.0, multiplier)  # a document starts afresh: h = x
        a = torch.where(reset, 0.0, a)
        normalized_x = x * gate_x * multiplier.to(x.dtype)
        if tok.any_pad:  # pads leave h untouched
            a = torch.where(real, a, 1.0)
            normalized_x = torch.where(real, normalized_x, 0.0)
        return self.scan(normalized_x, a, h0)  # float32 accumulation


class RecurrentBlock(nn.Module):
    """linear_out(rg_lru(conv_1d(linear_x(x))) * gelu(linear_y(x)))."""

    def __init__(self, config: RecurrentGemmaConfig):
        super().__init__()
        D, E, K = config.hidden_size, config.lru_width, config.conv1d_width
        self.act = config.hidden_activation
        self.linear_y = nn.Linear(D, E)
        self.linear_x = nn.Linear(D, E)
        self.linear_out = nn.Linear(E, D)
        self.conv_1d = nn.Conv1d(E, E, kernel_size=K, groups=E, padding=K - 1)
        self.rg_lru = RGLRU(config)

    def forward(
        self, x: torch.Tensor, tok: Tokens, state: RecurrentState | None
    ) -> tuple[torch.Tensor, RecurrentState, None]:
        if state is None:  # nothing before this call
            K, E = self.conv_1d.kernel_size[0], self.linear_x.out_features
            state = RecurrentState(conv=x.new_zeros(x.shape[0], K - 1, E), h=None)
        y = activation(self.act, self.linear_y(x))
        x = self.linear_x(x)
        u, window = causal_conv(x, self.conv_1d.weight, self.conv_1d.bias, state.conv, tok)
        h, h_last = self.rg_lru(u, state.h, tok)
        if tok.trace is not None:
            tok.trace.append(recurrent_trace(state.conv, x, state.h, h))
        return self.linear_out(h.to(y.dtype) * y), RecurrentState(conv=window, h=h_last), None


# --------------------------------------------------------------------------- local attention
def apply_rope(
    x: torch.Tensor,
    pos: torch.Tensor,
    theta: float,
    fraction: float,
    table: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """RoPE on the first `fraction` of each head (DeepMind: halves of the rotated part).

    x: (B, T, heads, Dh); pos: (B, T); `table` is rope_table(...) when already computed."""
    rot = int(x.shape[-1] * fraction)
    if rot == 0:
        return x
    sin, cos = table if table is not None else rope_table(pos, rot, theta, x.dtype)
    x_rope, x_pass = x[..., :rot], x[..., rot:]
    first, second = x_rope.chunk(2, dim=-1)
    return torch.cat([first * cos - second * sin, second * cos + first * sin, x_pass], dim=-1)


def rope_table(
    pos: torch.Tensor, rot: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sin, cos), each (B, T, 1, rot/2), for the rotated `rot` dims of a head."""
    inv_freq = 1.0 / theta ** (torch.arange(rot // 2, device=pos.device, dtype=torch.float32) * 2 / rot)
    angle = pos[..., None, None].float() * inv_freq
    return torch.sin(angle).to(dtype), torch.cos(angle).to(dtype)


def ring_counts(count0: torch.Tensor, W: int) -> torch.Tensor:
    """(B, W): the count of the key each ring slot holds before a call (negative: empty)."""
    s = torch.arange(W, device=count0.device)[None]
    last = count0[:, None] - 1
    return last - torch.remainder(last - s, W)


def attend_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepMind's attention: scores in the model dtype, masked, fp32 softmax.
    q: (B, Tq, H, Dh); k, v: (B, S, Hkv, Dh); mask: (B, Tq, S) bool.
    Returns (out (B, Tq, H*Dh), probs (B, H, Tq, S))."""
    B, Tq, H, Dh = q.shape
    Hkv = k.shape[2]
    G = H // Hkv  # query heads per key/value head
    qg = q.view(B, Tq, Hkv, G, Dh).permute(0, 2, 3, 1, 4).reshape(B, Hkv, G * Tq, Dh)
    scores = torch.matmul(qg, k.permute(0, 2, 3, 1)) * scale  # (B, Hkv, G*Tq, S)
    # mask after the exact fp32 upcast: MIN_LOGIT overflows float16 (same probs for bf16/fp32)
    scores = scores.view(B, Hkv, G, Tq, -1).float().masked_fill(~mask[:, None, None], MIN_LOGIT)
    probs = torch.softmax(scores, dim=-1).to(q.dtype)
    out = torch.matmul(probs.view(B, Hkv, G * Tq, -1), v.transpose(1, 2))  # (B, Hkv, G*Tq, Dh)
    out = out.view(B, Hkv, G, Tq, Dh).permute(0, 3, 1, 2, 4).reshape(B, Tq, H * Dh)
    return out, probs.view(B, H, Tq, -1)


def attend_sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
) -> tuple[torch.Tensor, None]:
    """attend_ref through torch's fused kernel, which keeps the scores in fp32 and never
    materialises them (probs: None). A row with no visible key attends uniformly to every key
    in both, so padding stays finite."""
    B, Tq, H, Dh = q.shape
    mask = mask | ~mask.any(-1, keepdim=True)  # as the reference: an empty row sees every key
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        attn_mask=mask[:, None],
        scale=scale,
        enable_gqa=k.shape[2] != H,
    )  # (B, H, Tq, Dh)
    return out.transpose(1, 2).reshape(B, Tq, H * Dh), None


class LocalAttention(nn.Module):
    """Multi-query local attention: a query sees itself and the W tokens before it (W+1 keys,
    DeepMind's window), within its own document. RoPE covers the first half of each head.

    `attend` computes multi-token calls (attend_sdpa or attend_ref, or any function of their
    signature), per instance; a call that returns the probabilities always uses attend_ref."""

    def __init__(self, config: RecurrentGemmaConfig):
        super().__init__()
        D, H, Hkv, Dh = (
            config.hidden_size,
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        )
        self.heads, self.kv_heads, self.head_dim = H, Hkv, Dh
        self.window = config.attention_window_size
        self.theta, self.rope_fraction = config.rope_theta, config.partial_rotary_factor
        self.q_proj = nn.Linear(D, H * Dh, bias=config.attention_bias)
        self.k_proj = nn.Linear(D, Hkv * Dh, bias=config.attention_bias)
        self.v_proj = nn.Linear(D, Hkv * Dh, bias=config.attention_bias)
        self.o_proj = nn.Linear(H * Dh, D, bias=True)
        self.attend = attend_sdpa

    def forward(
        self, x: torch.Tensor, tok: Tokens, state: AttentionState | None, need_probs: bool = False
    ) -> tuple[torch.Tensor, AttentionState | None, torch.Tensor | None]:
        B, T, _ = x.shape
        rot = int(self.head_dim * self.rope_fraction)
        table = per_call(
            tok, ("rope", rot, self.theta, x.dtype), lambda: rope_table(tok.pos, rot, self.theta, x.dtype)
        )
        q = apply_rope(
            self.q_proj(x).view(B, T, self.heads, self.head_dim),
            tok.pos,
            self.theta,
            self.rope_fraction,
            table,
        )
        k = apply_rope(
            self.k_proj(x).view(B, T, self.kv_heads, self.head_dim),
            tok.pos,
            self.theta,
            self.rope_fraction,
            table,
        )
        v = self.v_proj(x).view(B, T, self.kv_heads, self.head_dim)
        if tok.trace is not None:  # before the ring is written
            tok.trace.append(attention_trace(state, k, v, tok.count0))
        if T == 1 and tok.has_state and not need_probs:
            out, state = self._decode_step(q, k, v, tok, state)
            return self.o_proj(out), state, None
        out, probs = self._prefill(q, k, v, tok, state, need_probs)
        if state is not None:
            state = self._write_ring(k, v, tok, state)
        return self.o_proj(out), state, probs

    def _prefill(self, q, k, v, tok: Tokens, state: AttentionState | None, need_probs: bool):
        """Blocked attention over [ring (oldest first), new keys]: O(T * (W + block)) memory."""
        W, T = self.window, q.shape[1]
        if tok.has_state:
            chrono = torch.remainder(tok.count0[:, None] - W + torch.arange(W, device=q.device), W)
            k = torch.cat([_gather_rows(state.k, chrono), k], dim=1)
            v = torch.cat([_gather_rows(state.v, chrono), v], dim=1)
            kc = torch.cat([tok.count0[:, None] - W + torch.arange(W, device=q.device), tok.count], 1)
        else:
            kc = tok.count
        R = k.shape[1] - T  # ring entries in front of the new keys
        outs, probs = [], q.new_zeros(q.shape[0], self.heads, T, R + T) if need_probs else None
        for s in range(0, T, ATTENTION_BLOCK):
            e = min(T, s + ATTENTION_BLOCK)
            lo = 0 if need_probs else max(0, s + R - W - tok.max_pad)
            hi = e + R
            mask = _visible(kc[:, lo:hi], tok.count[:, s:e], tok.doc_start[:, s:e], W)
            out, p = (attend_ref if need_probs else self.attend)(
                q[:, s:e], k[:, lo:hi], v[:, lo:hi], mask, self.head_dim**-0.5
            )
            outs.append(out)
            if need_probs:
                probs[:, :, s:e, lo:hi] = p
        return torch.cat(outs, dim=1), probs

    def _write_ring(self, k, v, tok: Tokens, state: AttentionState) -> AttentionState:
        """The new ring: slot s takes the newest key whose count is s mod W."""
        W, T = self.window, k.shape[1]
        count1 = tok.count0 + tok.real.sum(1)
        c = ring_counts(count1, W)  # (B, W) count each slot must hold
        fresh = c >= tok.count0[:, None]  # written by this call
        idx = (c - tok.count0[:, None] + tok.n_pad[:, None]).clamp(0, T - 1)
        new_k = torch.where(fresh[..., None, None], _gather_rows(k, idx), state.k)
        new_v = torch.where(fresh[..., None, None], _gather_rows(v, idx), state.v)
        return AttentionState(k=new_k, v=new_v)

    def _decode_step(self, q, k, v, tok: Tokens, state: AttentionState):
        """One token per row against its W+1 keys, O(1) work and memory per step. The new key
        first takes the oldest key's ring slot, in place, and the key it displaces is attended
        as the extra one: the same W+1 keys as [ring, new key], with the ring written before it
        is read, so that torch.compile can keep the write in place too (else it copies the ring)."""
        B, _, H, Dh = q.shape
        Hkv, W = self.kv_heads, self.window
        step = per_call(tok, ("ring", W), lambda: _ring_step(tok, W))
        old_k, old_v = state.k[step.rows, step.slot], state.v[step.rows, step.slot]  # (B, Hkv, Dh)
        for ring, new, old in ((state.k, k, old_k), (state.v, v, old_v)):
            ring[step.rows, step.slot] = torch.where(step.keep, new[:, 0], old)
        qg = q.view(B, Hkv, H // Hkv, Dh)
        # ring @ q^T streams the ring in its stored layout (q @ ring^T would copy it first)
        ring_scores = torch.matmul(state.k.transpose(1, 2), qg.transpose(-1, -2))  # (B, Hkv, W, G)
        scores = (
            torch.cat(
                [
                    ring_scores.transpose(-1, -2),  # (B, Hkv, G, W)
                    torch.matmul(qg, old_k.view(B, Hkv, Dh, 1)),
                ],
                dim=-1,
            )
            * Dh**-0.5
        )
        probs = torch.softmax(scores.float().masked_fill(step.hidden, MIN_LOGIT), -1).to(q.dtype)
        out = torch.matmul(probs[..., :W], state.v.transpose(1, 2))  # (B, Hkv, G, Dh)
        out = out.addcmul_(probs[..., W:], old_v.view(B, Hkv, 1, Dh))
        return out.view(B, 1, H * Dh), state


@dataclass
class _RingStep:
    """What every attention layer of a one-token call needs: where the new key goes and which
    keys it sees."""

    hidden: torch.Tensor  # (B, 1, 1, W+1) bool: key masked out ([ring slots after the write,
    # displaced key])
    rows: torch.Tensor  # (B,)
    slot: torch.Tensor  # (B,) ring slot of the new key: the oldest
    keep: torch.Tensor  # (B, 1, 1) bool: the row's token is real, so it is written


def _ring_step(tok: Tokens, W: int) -> _RingStep:
    slot_count = ring_counts(tok.count0, W)  # (B, W) before the write
    seen = (slot_count >= tok.doc_start[:, :1]) & (slot_count >= 0)
    rows = torch.arange(tok.count0.shape[0], device=tok.count0.device)
    slot, real = torch.remainder(tok.count0, W), tok.real[:, 0]
    oldest_seen = seen[rows, slot]
    # A real token's key is visible in the slot, and the displaced key keeps its visibility;
    # a pad writes nothing, so the slot is unchanged and the displaced key (its copy) is hidden.
    slots = torch.where(
        torch.arange(W, device=slot.device) == slot[:, None], (real | oldest_seen)[:, None], seen
    )
    visible = torch.cat([slots, (real & oldest_seen)[:, None]], dim=1)
    return _RingStep(~visible[:, None, None], rows, slot, real[:, None, None])


def _start_trace(tok: Tokens, cache: State | None, use_cache: bool) -> tuple[list, tuple]:
    """An empty trace, and the counters a rewind to the call's start restores."""
    if cache is None or not use_cache or tok.any_pad:
        raise ValueError("rewind=True needs a cache (use_cache) and an input without padding")
    return [], (cache.count, cache.doc_start, cache.next_pos)


def _gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x: (B, N, ...), idx: (B, M) -> (B, M, ...)."""
    return x.gather(1, idx.view(*idx.shape, *([1] * (x.ndim - 2))).expand(-1, -1, *x.shape[2:]))


def _visible(key_count, q_count, q_doc_start, W: int) -> torch.Tensor:
    """(B, Tq, S): a key is visible iff it lies in the query's document and its last W+1 tokens."""
    kc, qc = key_count[:, None, :], q_count[..., None]
    return (kc >= q_doc_start[..., None]) & (kc <= qc) & (kc >= qc - W) & (kc >= 0)


# --------------------------------------------------------------------------- residual block
class ResidualBlock(nn.Module):
    """x + temporal_block(norm(x)), then x + mlp_block(norm(x))."""

    def __init__(self, config: RecurrentGemmaConfig, kind: str):
        super().__init__()
        self.kind = kind
        self.temporal_pre_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.temporal_block = RecurrentBlock(config) if kind == "recurrent" else LocalAttention(config)
        self.channel_pre_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp_block = MLP(config)

    def forward(self, x: torch.Tensor, tok: Tokens, state, need_probs: bool = False):
        if self.kind == "attention":
            y, state, probs = self.temporal_block(self.temporal_pre_norm(x), tok, state, need_probs)
        else:
            y, state, probs = self.temporal_block(self.temporal_pre_norm(x), tok, state)
        x = x + y
        x = x + self.mlp_block(self.channel_pre_norm(x))
        return x, state, probs


def init_weights(module: nn.Module, config: RecurrentGemmaConfig) -> None:
    """DeepMind's initialisation (`recurrentgemma.torch`), for training from scratch."""
    D, E, K = config.hidden_size, config.lru_width, config.conv1d_width
    final = config.final_w_init_variance_scale
    normal = lambda w, var: nn.init.normal_(w, 0.0, math.sqrt(var))  # noqa: E731
    for m in module.modules():
        for b in (getattr(m, "bias", None),):
            if isinstance(b, nn.Parameter):
                nn.init.zeros_(b)
        if isinstance(m, RMSNorm):
            nn.init.zeros_(m.weight)
        elif isinstance(m, MLP):
            normal(m.gate_proj.weight, 1.0 / D)
            normal(m.up_proj.weight, 1.0 / D)
            normal(m.down_proj.weight, final / config.mlp_width)
        elif isinstance(m, RecurrentBlock):
            normal(m.linear_x.weight, 1.0 / D)
            normal(m.linear_y.weight, 1.0 / D)
            normal(m.linear_out.weight, final / E)
            normal(m.conv_1d.weight, config.w_init_variance_scale / K)
        elif isinstance(m, RGLRU):
            block = E // config.num_attention_heads
            normal(m.input_gate_weight, config.w_init_variance_scale / block)
            normal(m.recurrent_gate_weight, config.w_init_variance_scale / block)
            nn.init.zeros_(m.input_gate_bias)
            nn.init.zeros_(m.recurrent_gate_bias)
            with torch.no_grad():  # a uniform on the ring 0.9 <= |a| <= 0.999, softplus-inverted
                r2 = torch.empty_like(m.recurrent_param).uniform_(0.9**2 + 1e-8, 0.999**2 + 1e-8)
                m.recurrent_param.copy_(torch.log(torch.expm1(-0.5 * torch.log(r2))))
        elif isinstance(m, LocalAttention):
            for w in (m.q_proj.weight, m.k_proj.weight, m.v_proj.weight):
                normal(w, 1.0 / D)
            normal(m.o_proj.weight, final / D)
        elif isinstance(m, nn.Embedding):
            normal(m.weight, 1.0 / D)


# --------------------------------------------------------------------------- the model
class GriffinModel(ModelSurface, nn.Module):
    """Embedding (scaled by bf16(sqrt(D))), the residual blocks, and the final norm."""

    def __init__(self, config: RecurrentGemmaConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(ResidualBlock(config, kind) for kind in config.layers_block_type)
        self.final_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.gradient_checkpointing = False
        with torch.device("cpu"):  # a plain float (torch.compile sees a constant), also on meta
            self.embedding_scale = config.embedding_scale
        init_weights(self, config)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache_position=None,
        inputs_embeds=None,
        use_cache=None,
        output_hidden_states=None,
        output_attentions=None,
        return_dict=None,
        cache: State | None = None,
        past_key_values: State | None = None,
        rewind: bool = False,
    ) -> BaseModelOutput:
        """Run T new tokens per row, continuing `cache` if given (updated in place and returned).

        `cache_position` is accepted for transformers compatibility and unused: the cache
        knows each row's count. Positions default to continuing each row's last position.
        Right padding is accepted when no state continues (see _right_padded). `rewind` also
        returns a Rewind record (rgemma.models.rewind) that takes the cache back to after any
        of the call's first tokens.
        """
        shift = trailing_pads(attention_mask)
        if shift is not None:
            return self._right_padded(
                shift,
                input_ids,
                attention_mask,
                position_ids,
                inputs_embeds,
                use_cache,
                output_hidden_states,
                output_attentions,
                cache if cache is not None else past_key_values,
            )
        x = self._embed(input_ids, inputs_embeds)
        B, T = x.shape[:2]
        cache = cache if cache is not None else past_key_values
        self._check_cache(cache, x)
        tok = make_tokens(self.config, B, T, x.device, attention_mask, position_ids, cache)
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if use_cache and cache is None:
            cache = State.zeros(self.config, B, x.dtype, x.device)
        if rewind:
            tok.trace, before = _start_trace(tok, cache, use_cache)
        hidden, attentions = [], []
        for i, layer in enumerate(self.layers):
            if output_hidden_states:
                hidden.append(x)
            layer_state = cache.layers[i] if cache is not None else None
            x, layer_state, probs = self._run_layer(layer, x, tok, layer_state, bool(output_attentions))
            if cache is not None:
                cache.layers[i] = layer_state
            if probs is not None:
                attentions.append(probs)
        if cache is not None:
            advance_state(cache, tok)
        x = self.final_norm(x)
        if output_hidden_states:
            hidden.append(x)
        return BaseModelOutput(
            last_hidden_state=x,
            cache=cache if use_cache else None,
            hidden_states=tuple(hidden) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
            rewind=rewind_record(tok.trace, before, tok.doc_start, tok.pos) if rewind else None,
        )

    def _right_padded(
        self, shift, input_ids, mask, position_ids, inputs_embeds, use_cache, hidden, attentions, cache
    ) -> BaseModelOutput:
        """A right-padded batch (a training batch from a tokenizer that pads on the right) runs
        as the same rows left-padded, so its real tokens get the logits they have alone; the
        outputs are rotated back. No state comes out of it: the next token of a right-padded
        row would follow its pads."""
        if cache is not None or use_cache or attentions:
            row = int(shift.nonzero()[0])
            raise ValueError(
                RIGHT_PADDING.format(row=row) + ("" if not attentions else " (output_attentions)")
            )
        if isinstance(position_ids, torch.Tensor):
            position_ids = position_ids.reshape(-1, mask.shape[1]).expand(mask.shape[0], -1)
        out = self.forward(
            roll_rows(input_ids, shift),
            roll_rows(mask, shift),
            roll_rows(position_ids, shift),
            inputs_embeds=roll_rows(inputs_embeds, shift),
            use_cache=False,
            output_hidden_states=hidden,
        )
        out.last_hidden_state = roll_rows(out.last_hidden_state, -shift)
        if out.hidden_states is not None:
            out.hidden_states = tuple(roll_rows(h, -shift) for h in out.hidden_states)
        return out

    def step(self, input_ids: torch.Tensor, active: torch.Tensor, cache: State) -> torch.Tensor:
        """One token per row, for a decode loop whose inputs are already valid: no validation
        and no host synchronisation. input_ids: (B,) ids; active: (B,) bool, False feeds the
        row as padding. Returns the final-norm hidden state (B, D).

        Updates `cache` in place without replacing any of its tensors, so a compiled or
        CUDA-graph-captured step can hold on to them. Equals forward(input_ids[:, None],
        attention_mask=active[:, None], cache=cache)."""
        tok = step_tokens(cache, active)
        x = self.embed_tokens(input_ids)[:, None] * self.embedding_scale  # (B, 1, D)
        for layer, layer_state in zip(self.layers, cache.layers):
            x, new_state, _ = layer(x, tok, layer_state)
            if new_state is not layer_state:  # keep the state's storage: copy the new values in
                for name, t in vars(new_state).items():
                    getattr(layer_state, name).copy_(t)
        cache.next_pos.copy_(torch.where(active, tok.pos[:, 0] + 1, cache.next_pos))
        cache.doc_start.copy_(tok.doc_start[:, 0])
        cache.count.add_(active)  # last: tok.count0 is this very tensor
        return self.final_norm(x)[:, 0]

    def _run_layer(self, layer, x, tok, layer_state, need_probs):
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(layer, x, tok, layer_state, need_probs, use_reentrant=False)
        return layer(x, tok, layer_state, need_probs)

    def _embed(self, input_ids, inputs_embeds) -> torch.Tensor:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            check_input_ids(input_ids, self.config.vocab_size)
            x = self.embed_tokens(input_ids.to(self.embed_tokens.weight.device))
        else:
            D = self.config.hidden_size
            if (
                not isinstance(inputs_embeds, torch.Tensor)
                or inputs_embeds.ndim != 3
                or inputs_embeds.shape[-1] != D
                or inputs_embeds.shape[1] == 0
            ):
                shape = tuple(getattr(inputs_embeds, "shape", ()))
                raise ValueError(f"inputs_embeds must have shape (batch, seq_len>0, {D}), got {shape}")
            x = inputs_embeds
        # Scale by sqrt(D) rounded to bfloat16, as in training (50.5 for D=2560, not 50.596).
        return x * self.embedding_scale

    def _check_cache(self, cache: State | None, x: torch.Tensor) -> None:
        if cache is None:
            return
        if not isinstance(cache, State):
            raise ValueError(f"cache must be an rgemma State, got {type(cache).__name__}")
        for layer in cache.layers:
            t = getattr(layer, "k", getattr(layer, "conv", None))
            if t.dtype != x.dtype or t.device != x.device:
                raise ValueError(
                    f"cache holds {t.dtype} on {t.device} but the model runs "
                    f"{x.dtype} on {x.device}; use cache.to(...)"
                )


class GriffinForCausalLM(ModelSurface, nn.Module):
    """GriffinModel plus the tied LM head and the logit soft-cap."""

    backbone = GriffinModel  # the class of `self.model` (rgemma.pretrained swaps in its own)

    def __init__(self, config: RecurrentGemmaConfig):
        super().__init__()
        self.config = config
        self.model = self.backbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_weights()
        self.tanh = tanh_fp32  # soft_cap's tanh (equal values; rgemma.accel picks the faster)

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache_position=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        output_hidden_states=None,
        output_attentions=None,
        return_dict=None,
        cache: State | None = None,
        past_key_values: State | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        rewind: bool = False,
    ) -> CausalLMOutput | tuple:
        """Logits (soft-capped), and the shifted cross-entropy `loss` when `labels` are given
        (label -100 is ignored). `logits_to_keep=n` computes logits for the last n positions."""
        out = self.model(
            input_ids,
            attention_mask,
            position_ids,
            cache_position,
            inputs_embeds,
            use_cache,
            output_hidden_states,
            output_attentions,
            cache=cache,
            past_key_values=past_key_values,
            rewind=rewind,
        )
        h = out.last_hidden_state
        if labels is None and isinstance(logits_to_keep, int) and logits_to_keep > 0:
            h = h[:, -logits_to_keep:]
        elif labels is None and isinstance(logits_to_keep, torch.Tensor):
            h = h[:, logits_to_keep]
        logits = self.capped(self.lm_head(h))
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        result = CausalLMOutput(
            loss=loss,
            logits=logits,
            cache=out.cache,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            rewind=out.rewind,
        )
        return result.to_tuple() if return_dict is False else result

    def decode_step(self, input_ids: torch.Tensor, active: torch.Tensor, cache: State) -> torch.Tensor:
        """One decode step: (B,) token ids, (B,) bool active rows -> soft-capped logits (B, V).
        See GriffinModel.step: no validation, no host sync, `cache` updated in place."""
        return self.capped(self.lm_head(self.model.step(input_ids, active, cache)))

    def capped(self, logits: torch.Tensor) -> torch.Tensor:
        """The soft cap of the LM head's output, through this model's tanh."""
        return soft_cap(logits, self.config.logits_soft_cap, self.tanh)


def tanh_fp32(x: torch.Tensor) -> torch.Tensor:
    """tanh; bf16/fp16 computed in fp32 and rounded back: the values of torch's half-precision
    tanh (every bf16 and fp16 input checked), faster on some CPUs (Sapphire Rapids), slower on
    others (Zen 5)."""
    if x.dtype in (torch.bfloat16, torch.float16):
        return x.float().tanh_().to(x.dtype)
    return torch.tanh(x)


def soft_cap(logits: torch.Tensor, cap: float, tanh=tanh_fp32) -> torch.Tensor:
    """tanh(logits / cap) * cap, each step rounded to the logits' dtype as the references do;
    a cap of 0 means none. `tanh`: tanh_fp32 or torch.tanh, the same values."""
    if not cap:
        return logits
    return tanh(logits / cap) * cap


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy in float32; labels of -100 are ignored."""
    if not isinstance(labels, torch.Tensor) or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"labels must have shape {tuple(logits.shape[:2])} (batch, seq_len), got "
            f"{tuple(getattr(labels, 'shape', ()))}"
        )
    shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    shift_labels = labels[:, 1:].reshape(-1).to(logits.device)
    return F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
