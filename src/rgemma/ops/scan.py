"""The linear recurrence h_t = a_t * h_{t-1} + x_t: one function, several implementations.

`rnn_scan(x, a, h0, impl="ref")` is the specification: a plain loop over time. `impl="fast"`
(the default) computes the same thing without a Python loop over tokens: the sequence is cut
into about sqrt(T) blocks of about sqrt(T) tokens, every block is scanned at once (one
vectorised step per position in a block), then one carry passes from block to block. That is
O(sqrt(T)) vectorised steps and a few passes over the data, where a log-depth scan makes
log(T) full passes; the backward is itself a reversed scan, so training memory stays O(T*E).
`impl="triton"` runs Triton kernels (rgemma.scan_triton) for GPUs.
Both accumulate in float32 whatever the input dtype, as DeepMind's reference does.
"""

from __future__ import annotations

import math

import torch

BLOCK = 64  # most tokens per block of the fast scan (a block takes one step per token)


def rnn_scan(
    x: torch.Tensor, a: torch.Tensor, h0: torch.Tensor | None = None, impl: str = "fast"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run h_t = a_t * h_{t-1} + x_t over time.

    x, a: (B, T, E) in any float dtype; h0: (B, E) float32 or None (zeros).
    Returns (h (B, T, E) float32, h_T (B, E) float32). Resets are expressed by a_t = 0,
    skipped (padding) steps by a_t = 1 and x_t = 0.
    """
    if impl == "ref":
        return rnn_scan_ref(x, a, h0)
    if impl == "fast":
        return rnn_scan_fast(x, a, h0)
    if impl == "triton":
        from rgemma.ops.scan_triton import rnn_scan_triton  # imports triton: only when asked for

        return rnn_scan_triton(x, a, h0)
    raise ValueError(f"unknown scan impl {impl!r}; expected 'ref', 'fast' or 'triton'")


def rnn_scan_ref(
    x: torch.Tensor, a: torch.Tensor, h0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The specification: one float32 step per token."""
    x, a = x.float(), a.float()
    h = torch.zeros_like(x[:, 0]) if h0 is None else h0.float()
    out = []
    for t in range(x.shape[1]):
        h = a[:, t] * h + x[:, t]
        out.append(h)
    return torch.stack(out, dim=1), h


def rnn_scan_fast(
    x: torch.Tensor, a: torch.Tensor, h0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """No loop over tokens: O(sqrt(T)) vectorised steps; the same maths as the reference."""
    x, a = x.float(), a.float()
    if h0 is None:
        h0 = torch.zeros_like(x[:, 0])
    if x.shape[1] == 1:  # decode: a single fused step
        h = torch.addcmul(x[:, 0], a[:, 0], h0.float())
        return h[:, None], h
    h = _LinearScan.apply(x, a, h0.float())
    return h, h[:, -1]


class _LinearScan(torch.autograd.Function):
    """h = scan(x, a, h0) with the backward pass as a reversed scan.

    With g_t = dL/dh_t accumulated backwards (g_t = dh_t + a_{t+1} g_{t+1}):
    dL/dx_t = g_t, dL/da_t = g_t * h_{t-1}, dL/dh0 = a_1 g_1.
    """

    @staticmethod
    def forward(ctx, x, a, h0):
        h = _scan_forward(x, a, h0)
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, dh):
        a, h, h0 = ctx.saved_tensors
        a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1)
        g = _scan_forward(dh.flip(1), a_next.flip(1), torch.zeros_like(h0)).flip(1)
        h_prev = torch.cat([h0[:, None], h[:, :-1]], dim=1)
        return g, g * h_prev, a[:, 0] * g[:, 0]


def _scan_forward(x: torch.Tensor, a: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Blocked scan: every block scanned at once from a zero carry, then the carries."""
    B, T, E = x.shape
    L = min(BLOCK, math.isqrt(T - 1) + 1)  # tokens per block
    n = -(-T // L)
    # Float32 working copies, padded with steps that leave h unchanged (a=1, x=0).
    xb = x.new_zeros(B, n * L, E, dtype=torch.float32)
    ab = a.new_ones(B, n * L, E, dtype=torch.float32)
    xb[:, :T], ab[:, :T] = x, a
    xb, ab = xb.view(B, n, L, E), ab.view(B, n, L, E)
    for i in range(1, L):  # in-block prefix: h with zero carry, and the product of a
        xb[:, :, i].addcmul_(ab[:, :, i], xb[:, :, i - 1])
        ab[:, :, i].mul_(ab[:, :, i - 1])
    carry = h0
    for j in range(n):  # the carry into block j is block j-1's last h
        xb[:, j].addcmul_(ab[:, j], carry[:, None])
        carry = xb[:, j, -1]
    return xb.view(B, n * L, E)[:, :T]
