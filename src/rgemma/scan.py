"""The linear recurrence h_t = a_t * h_{t-1} + x_t, behind one function with two implementations.

`rnn_scan(x, a, h0, impl="ref")` is the specification: a plain loop over time. `impl="fast"`
(the default) computes the same thing without a Python loop over tokens: a log-depth
(Hillis-Steele) scan inside blocks of `BLOCK` tokens, then one carry per block, with a
hand-written backward that is itself a reversed scan, so training memory stays O(T*E).
Both accumulate in float32 whatever the input dtype, as DeepMind's reference does.
"""

from __future__ import annotations

import torch

BLOCK = 64  # tokens per block of the fast scan; log2(BLOCK) vectorised steps per block


def rnn_scan(x: torch.Tensor, a: torch.Tensor, h0: torch.Tensor | None = None,
             impl: str = "fast") -> tuple[torch.Tensor, torch.Tensor]:
    """Run h_t = a_t * h_{t-1} + x_t over time.

    x, a: (B, T, E) in any float dtype; h0: (B, E) float32 or None (zeros).
    Returns (h (B, T, E) float32, h_T (B, E) float32). Resets are expressed by a_t = 0,
    skipped (padding) steps by a_t = 1 and x_t = 0.
    """
    if impl == "ref":
        return rnn_scan_ref(x, a, h0)
    if impl == "fast":
        return rnn_scan_fast(x, a, h0)
    raise ValueError(f"unknown scan impl {impl!r}; expected 'ref' or 'fast'")


def rnn_scan_ref(x: torch.Tensor, a: torch.Tensor, h0: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The specification: one float32 step per token."""
    x, a = x.float(), a.float()
    h = torch.zeros_like(x[:, 0]) if h0 is None else h0.float()
    out = []
    for t in range(x.shape[1]):
        h = a[:, t] * h + x[:, t]
        out.append(h)
    return torch.stack(out, dim=1), h


def rnn_scan_fast(x: torch.Tensor, a: torch.Tensor, h0: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Loop-free over tokens (log-depth within blocks); exact same maths as the reference."""
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
    """Blocked scan: in-block log-depth scan, then a carry from block to block."""
    B, T, E = x.shape
    n = -(-T // BLOCK)
    pad = n * BLOCK - T
    if pad:  # padding steps are a=1, x=0: they leave h unchanged
        x = torch.cat([x, x.new_zeros(B, pad, E)], dim=1)
        a = torch.cat([a, a.new_ones(B, pad, E)], dim=1)
    xb, ab = _block_scan(x.view(B, n, BLOCK, E), a.view(B, n, BLOCK, E))
    # xb: in-block prefix sums (h with zero carry); ab: in-block prefix products of a.
    out = torch.empty_like(xb)
    carry = h0
    for i in range(n):  # one step per block, not per token
        out[:, i] = torch.addcmul(xb[:, i], ab[:, i], carry[:, None])
        carry = out[:, i, -1]
    return out.view(B, n * BLOCK, E)[:, :T]


def _block_scan(x: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hillis-Steele inclusive scan along dim 2 of the pair (a, x) under composition."""
    step = 1
    while step < x.shape[2]:
        x = torch.cat([x[:, :, :step], torch.addcmul(x[:, :, step:], a[:, :, step:],
                                                     x[:, :, :-step])], dim=2)
        a = torch.cat([a[:, :, :step], a[:, :, step:] * a[:, :, :-step]], dim=2)
        step *= 2
    return x, a
