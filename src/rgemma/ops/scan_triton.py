"""The RG-LRU scan h_t = a_t * h_{t-1} + x_t as Triton kernels (forward and backward), for GPUs.

`rnn_scan(x, a, h0, impl="triton")` lands here. One program owns one row and a block of
BLOCK_E channels and walks the sequence, keeping h in float32 registers: every input is read
once and every output written once, which is all a memory-bound scan can ask. The backward
walks the sequence the other way with the same recurrence on the gradient
(g_t = dL/dh_t + a_{t+1} g_{t+1}; dx_t = g_t, da_t = g_t h_{t-1}, dh0 = a_1 g_1).

Triton needs a CUDA device, or `TRITON_INTERPRET=1` set before this module is imported (the
CPU tests run that way: slow, but the same kernels).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

BLOCK_E = 64  # channels per program: B * E / BLOCK_E programs in flight


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _scan_forward(x_ptr, a_ptr, h0_ptr, h_ptr, T, E, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    e = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = e < E
    h = tl.load(h0_ptr + row * E + e, mask=ok, other=0.0).to(tl.float32)
    base = row * T * E + e
    for t in range(T):
        x = tl.load(x_ptr + base + t * E, mask=ok, other=0.0).to(tl.float32)
        a = tl.load(a_ptr + base + t * E, mask=ok, other=0.0).to(tl.float32)
        h = a * h + x
        tl.store(h_ptr + base + t * E, h, mask=ok)


@triton.jit
def _scan_backward(dh_ptr, a_ptr, h_ptr, h0_ptr, dx_ptr, da_ptr, dh0_ptr, T, E, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    e = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = e < E
    h0 = tl.load(h0_ptr + row * E + e, mask=ok, other=0.0)
    base = row * T * E + e
    carry = tl.zeros([BLOCK], dtype=tl.float32)  # a_{t+1} * g_{t+1}
    for i in range(T):
        t = T - 1 - i
        g = carry + tl.load(dh_ptr + base + t * E, mask=ok, other=0.0)
        h_prev = tl.load(h_ptr + base + tl.maximum(t - 1, 0) * E, mask=ok, other=0.0)
        h_prev = tl.where(t > 0, h_prev, h0)
        tl.store(dx_ptr + base + t * E, g, mask=ok)
        tl.store(da_ptr + base + t * E, g * h_prev, mask=ok)
        carry = tl.load(a_ptr + base + t * E, mask=ok, other=0.0).to(tl.float32) * g
    tl.store(dh0_ptr + row * E + e, carry, mask=ok)


def rnn_scan_triton(
    x: torch.Tensor, a: torch.Tensor, h0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as rgemma.ops.scan.rnn_scan: (h (B, T, E) float32, h_T (B, E) float32)."""
    if x.device.type != "cuda" and not interpreting():
        raise ValueError(
            "impl='triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before "
            f"rgemma.scan_triton is imported); got tensors on {x.device}"
        )
    if h0 is None:
        h0 = torch.zeros(x.shape[0], x.shape[2], dtype=torch.float32, device=x.device)
    h = _TritonScan.apply(x, a, h0.float())
    return h, h[:, -1]


def _grid(x: torch.Tensor) -> tuple[int, int]:
    return x.shape[0], triton.cdiv(x.shape[2], BLOCK_E)


class _TritonScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, a, h0):
        x, a, h0 = x.contiguous(), a.contiguous(), h0.contiguous()
        B, T, E = x.shape
        h = torch.empty(B, T, E, dtype=torch.float32, device=x.device)
        _scan_forward[_grid(x)](x, a, h0, h, T, E, BLOCK=BLOCK_E)
        ctx.save_for_backward(a, h, h0)
        ctx.x_dtype = x.dtype
        return h

    @staticmethod
    def backward(ctx, dh):
        a, h, h0 = ctx.saved_tensors
        B, T, E = h.shape
        dh = dh.float().contiguous()
        dx, da = torch.empty_like(h), torch.empty_like(h)
        dh0 = torch.empty_like(h0)
        _scan_backward[_grid(h)](dh, a, h, h0, dx, da, dh0, T, E, BLOCK=BLOCK_E)
        return dx.to(ctx.x_dtype), da.to(a.dtype), dh0
