"""The Triton scan equals the reference loop: values, final state, gradients, resets.

Without a GPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set here before
triton is imported). Without the `triton` package the tests skip: it is not a dependency of
rgemma (`pip install triton` gives a package that imports and interprets on a CPU machine).
"""

import os
import sys

import pytest
import torch

if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip(
    "triton", reason="triton is not installed (pip install triton); the Triton scan is then untested here"
)
if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
    pytest.skip(
        "triton was imported before TRITON_INTERPRET=1 could be set and there is no GPU",
        allow_module_level=True,
    )

from test_scan import _inputs  # noqa: E402

from rgemma.ops.scan import rnn_scan  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _on(device, *tensors):
    return [t.to(device) for t in tensors]


@pytest.mark.parametrize("B,T,E", [(2, 1, 5), (2, 37, 70), (3, 64, 130)])
def test_triton_equals_reference(B, T, E):
    x, a, h0 = _inputs(B=B, T=T, E=E)
    y_ref, h_ref = rnn_scan(x, a, h0, impl="ref")
    y, h = rnn_scan(*_on(DEVICE, x, a, h0), impl="triton")
    assert y.dtype == torch.float32 and h.dtype == torch.float32
    torch.testing.assert_close(y.cpu(), y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h.cpu(), h_ref, rtol=1e-5, atol=1e-5)


def test_bf16_inputs_and_no_initial_state():
    x, a, _ = _inputs(T=20, E=9, dtype=torch.bfloat16)
    y_ref, _ = rnn_scan(x, a, None, impl="ref")
    y, _ = rnn_scan(*_on(DEVICE, x, a), None, impl="triton")
    torch.testing.assert_close(y.cpu(), y_ref, rtol=1e-5, atol=1e-5)


def test_gradients_match_reference():
    x, a, h0 = _inputs(T=30, E=70)
    grads = []
    for impl, device in (("ref", "cpu"), ("triton", DEVICE)):
        xs, as_, hs = (t.to(device).requires_grad_() for t in (x, a, h0))
        y, h = rnn_scan(xs, as_, hs, impl=impl)
        w = torch.linspace(-1, 1, y.numel(), device=device).view_as(y)
        ((y * w).sum() + h.square().sum()).backward()
        grads.append([g.cpu() for g in (xs.grad, as_.grad, hs.grad)])
    for g_ref, g_triton in zip(*grads):
        torch.testing.assert_close(g_triton, g_ref, rtol=1e-4, atol=1e-5)


def test_model_with_triton_scan_equals_default():
    from conftest import random_model
    from rgemma.accel import configure

    model = random_model().to(DEVICE)
    ids = torch.randint(0, 97, (2, 12), device=DEVICE)
    ref = model(ids).logits
    configure(model, scan="triton")
    torch.testing.assert_close(model(ids).logits, ref, rtol=1e-5, atol=1e-5)
