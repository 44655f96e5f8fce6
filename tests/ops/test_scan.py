"""The fast scan equals the reference loop on values, final state and gradients."""

import pytest
import torch

from rgemma.ops.scan import BLOCK, rnn_scan


def _inputs(B=2, T=150, E=5, dtype=torch.float32, seed=0, resets=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, E, generator=g, dtype=torch.float64).to(dtype)
    a = torch.rand(B, T, E, generator=g, dtype=torch.float64).to(dtype)
    if resets:  # document starts (a=0) and skipped pads (a=1, x=0)
        a[:, 7 % T] = 0
        a[1, 90 % T] = 0
        a[0, : min(3, T)] = 1
        x[0, : min(3, T)] = 0
    h0 = torch.randn(B, E, generator=g)
    return x, a, h0


@pytest.mark.parametrize("T", [1, 2, BLOCK - 1, BLOCK, BLOCK + 1, 150])
def test_fast_equals_reference(T):
    x, a, h0 = _inputs(T=T)
    y_ref, h_ref = rnn_scan(x, a, h0, impl="ref")
    y, h = rnn_scan(x, a, h0, impl="fast")
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-5)
    assert y.dtype == torch.float32 and h.dtype == torch.float32


def test_bf16_inputs_accumulate_in_float32():
    x, a, h0 = _inputs(dtype=torch.bfloat16)
    y_ref, h_ref = rnn_scan(x, a, h0, impl="ref")
    y, h = rnn_scan(x, a, h0, impl="fast")
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)


def test_no_initial_state_means_zeros():
    x, a, _ = _inputs()
    y1, _ = rnn_scan(x, a, None, impl="fast")
    y2, _ = rnn_scan(x, a, torch.zeros(x.shape[0], x.shape[2]), impl="ref")
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)


def test_gradients_match_reference():
    x, a, h0 = _inputs(T=100)
    grads = []
    for impl in ("ref", "fast"):
        xs, as_, hs = (t.clone().requires_grad_() for t in (x, a, h0))
        y, h = rnn_scan(xs, as_, hs, impl=impl)
        w = torch.linspace(-1, 1, y.numel()).view_as(y)
        ((y * w).sum() + h.square().sum()).backward()
        grads.append((xs.grad, as_.grad, hs.grad))
    for g_ref, g_fast in zip(*grads):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-4, atol=1e-5)


def test_unknown_impl():
    x, a, h0 = _inputs(T=3)
    with pytest.raises(ValueError, match="impl"):
        rnn_scan(x, a, h0, impl="cuda-magic")
