"""The accel path at every kernel level this CPU runs (RGEMMA_KERNEL_LEVEL; the others skip
with the reason), against its reference: MatVecLinear == the exact product of x and W (fp32
sums rounded once), the int8 "auto" kernel == the exact int8 product, prefill in fp32 tiles ==
the float64 product within one bf16 rounding; each path says which kernel ran. Gradients fall
back to torch's (plain) products."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import random_model, tiny_config
from rgemma import kernels
from rgemma.accel import configure, linears, quantize
from rgemma.accel.linears import NATIVE_ROWS, SMALL_BATCH_ROWS, MatVecLinear, fp32_tiles, wants_fp32_tiles
from rgemma.accel.quantize import Int8Linear
from rgemma.text.generate import prefill

ROWS = (1, 2, 5, 33, NATIVE_ROWS, NATIVE_ROWS + 3)


def _exact(x, w, scale=None, bias=None) -> torch.Tensor:
    y = x.double() @ w.double().T
    y = y * scale.double() if scale is not None else y
    return y + bias.double() if bias is not None else y


def _within_one_rounding(y, x, w, scale=None, bias=None) -> None:
    """|y - exact| <= fp32 sums' error (any order) + half a bf16 step of the result."""
    ref = _exact(x, w, scale, bias)
    sums = x.double().abs() @ w.double().abs().T * x.shape[-1] * 2.0**-23
    sums = sums * scale.double().abs() if scale is not None else sums
    allowed = sums + (ref.abs() + sums) * 2.0**-8 + 1e-30
    assert y.dtype == x.dtype and y.shape == ref.shape
    assert ((y.double() - ref).abs() <= allowed).all(), (
        f"worst {((y.double() - ref).abs() - allowed).max():.3g}"
    )


def _spy(monkeypatch, module, name, calls):
    """Record `name` in `calls` each time the kernel runs (returns a result, not None)."""
    fn = getattr(module, name)

    def spy(*args, **kwargs):
        y = fn(*args, **kwargs)
        calls.extend([name] if y is not None else [])
        return y

    monkeypatch.setattr(module, name, spy)


def _expected_bf16_kernel(level: str, rows: int) -> str | None:
    if level == "amx":
        return "amx_linear" if rows <= linears.AMX_ROWS else None
    return "linear" if level != "none" and rows <= NATIVE_ROWS else None


@pytest.mark.parametrize("bias", [True, False])
def test_matvec_linear_runs_the_levels_kernel_and_equals_the_exact_product(kernel_level, bias, monkeypatch):
    """1 to NATIVE_ROWS bf16 rows: the AMX kernel at "amx" (up to amx_rows), the FMA kernel at
    "avx2"/"avx512", torch's mv / W @ x^T at "none"; every one within one bf16 rounding of the
    exact product (odd widths: partial vectors and blocks). The crossover to torch's GEMM is
    set past the rows tried (test_crossover.py tests it)."""
    monkeypatch.setenv("RGEMMA_GEMM_ROWS", str(NATIVE_ROWS))
    calls = []
    _spy(monkeypatch, kernels, "linear", calls)
    _spy(monkeypatch, kernels, "amx_linear", calls)
    torch.manual_seed(0)
    layer = MatVecLinear.from_linear(nn.Linear(37, 29, bias=bias).to(torch.bfloat16), prefill="fp32")
    for rows in ROWS:
        x = torch.randn(rows, 1, 37, dtype=torch.bfloat16)
        calls.clear()
        with torch.no_grad():
            y = layer(x)
        want = _expected_bf16_kernel(kernel_level, rows)
        assert calls[:1] == ([want] if want else []), (rows, calls)
        _within_one_rounding(y.view(rows, -1), x.view(rows, -1), layer.weight, None, layer.bias)


def test_int8_auto_runs_the_levels_kernel_and_equals_the_exact_product(kernel_level, monkeypatch):
    """int8 "auto": the VNNI GEMV for 1-4 rows where it loads, AMX for bf16 batches, else the
    FMA kernel ("fma") up to FMA_MAX_ROWS rows; torch's otherwise. The exact kernels are within
    one bf16 rounding of the exact int8 product."""
    calls = []
    for name in ("int8_gemv", "amx_linear", "int8_linear"):
        _spy(monkeypatch, kernels, name, calls)
    torch.manual_seed(1)
    q8 = Int8Linear.from_linear(nn.Linear(48, 23).to(torch.bfloat16))
    for rows in ROWS:
        x = torch.randn(rows, 48, dtype=torch.bfloat16)
        calls.clear()
        with torch.no_grad():
            y = q8(x)
        want = _expected_int8_kernel(kernel_level, rows)
        assert calls == ([want] if want else []), (rows, calls)
        if want in ("amx_linear", "int8_linear"):  # the exact kernels (int8_gemv: test_quantize.py)
            _within_one_rounding(y, x, q8.weight, q8.weight_scale, q8.bias)
        else:  # torch's: the pack kernel, or the weights dequantized to bf16
            exact = _exact(x, q8.weight, q8.weight_scale, q8.bias)
            torch.testing.assert_close(y.double(), exact, rtol=2**-6, atol=2**-6)


def _expected_int8_kernel(level: str, rows: int) -> str | None:
    if rows <= quantize.NATIVE_MAX_ROWS and kernels.int8_gemv_available():
        return "int8_gemv"
    if level == "amx" and rows <= quantize.AMX_MAX_ROWS:
        return "amx_linear"
    return "int8_linear" if level != "none" and rows <= quantize.FMA_MAX_ROWS else None


def test_forced_fma_kernel_runs_or_says_why(kernel_level):
    q8 = Int8Linear.from_linear(nn.Linear(32, 8).to(torch.bfloat16))
    q8.kernel = "fma"
    x = torch.randn(3, 32, dtype=torch.bfloat16)
    if kernel_level == "none":
        with pytest.raises(ValueError, match="AVX2"):
            q8(x)
    else:
        _within_one_rounding(q8(x), x, q8.weight, q8.weight_scale, q8.bias)


@pytest.mark.parametrize("int8", [False, True])
def test_fp32_tiles_are_the_exact_product_rounded_once(int8, monkeypatch):
    """Prefill (more than the decode rows) of bf16 weights in float32 tiles, a block of weight
    rows at a time (a tile of 32 rows here, and a partial last one): within one bf16 rounding
    of the float64 product, as exact as torch's bf16 GEMM at least."""
    monkeypatch.setattr(linears, "TILE_BYTES", 32 * 4 * 40)
    torch.manual_seed(2)
    dense = nn.Linear(40, 75).to(torch.bfloat16)
    layer = Int8Linear.from_linear(dense) if int8 else MatVecLinear.from_linear(dense, prefill="fp32")
    layer.prefill = "fp32"
    x = torch.randn(2, SMALL_BATCH_ROWS, 40, dtype=torch.bfloat16)
    with torch.no_grad():
        y = layer(x)
    w, scale = (layer.weight, layer.weight_scale) if int8 else (dense.weight, None)
    _within_one_rounding(y.view(-1, 75), x.view(-1, 40), w, scale, layer.bias)
    bf16_gemm = nn.functional.linear(x, w.to(torch.bfloat16) * (scale[:, None] if int8 else 1), layer.bias)
    exact = _exact(x.view(-1, 40), w, scale, layer.bias).view(y.shape)
    assert (y.double() - exact).abs().sum() <= (bf16_gemm.double() - exact).abs().sum()


def test_prefill_choice_follows_the_cpu_and_can_be_forced(monkeypatch):
    """ "auto" computes in fp32 tiles exactly where torch has no native bf16 GEMM here (no AMX
    or AVX512-BF16); "dtype" runs F.linear in bf16, bit for bit; gradients take F.linear."""
    x = torch.randn(SMALL_BATCH_ROWS + 1, 16, dtype=torch.bfloat16)
    w = torch.randn(8, 16, dtype=torch.bfloat16)
    slow = not kernels.fast_half_gemm(torch.bfloat16)
    assert wants_fp32_tiles(x, w, "auto") == slow
    assert wants_fp32_tiles(x, w, "fp32") and not wants_fp32_tiles(x, w, "dtype")
    assert not wants_fp32_tiles(x.float(), w.float(), "fp32")  # float32 is already float32
    assert not wants_fp32_tiles(x.requires_grad_(), w, "fp32")
    monkeypatch.setattr(kernels, "_cpu_flags", lambda: ("avx2", "avx512_bf16"))
    assert not wants_fp32_tiles(x.detach(), w, "auto")
    layer = MatVecLinear.from_linear(nn.Linear(16, 8).to(torch.bfloat16), prefill="dtype")
    with torch.no_grad():
        assert torch.equal(layer(x.detach()), nn.functional.linear(x.detach(), layer.weight, layer.bias))
    with pytest.raises(ValueError, match="prefill"):
        wants_fp32_tiles(x, w, "fp16")


def test_fp32_tiles_never_widen_more_than_a_tile(monkeypatch):
    widened = []
    x, w = torch.randn(5, 64, dtype=torch.bfloat16), torch.randn(300, 64, dtype=torch.bfloat16)
    monkeypatch.setattr(linears, "TILE_BYTES", 64 * 4 * 64)
    y = fp32_tiles(x, lambda lo, hi: widened.append(hi - lo) or w[lo:hi].float(), 300)
    assert widened == [64, 64, 64, 64, 44]
    _within_one_rounding(y, x, w)


@pytest.mark.parametrize("prefill_choice", ["fp32", "dtype"])
def test_matvec_gradients_fall_back_to_torch(kernel_level, prefill_choice):
    """With autograd on, every row count takes torch's products: values and gradients equal
    nn.Linear's."""
    torch.manual_seed(3)
    ref = nn.Linear(24, 40).to(torch.bfloat16)
    fast = MatVecLinear.from_linear(copy.deepcopy(ref), prefill=prefill_choice)
    for rows in (1, 7, SMALL_BATCH_ROWS + 1):
        x = torch.randn(rows, 24, dtype=torch.bfloat16, requires_grad=True)
        x2 = x.detach().clone().requires_grad_()
        y_ref, y = ref(x), fast(x2)
        torch.testing.assert_close(y, y_ref, rtol=0.02, atol=0.02)
        y_ref.float().square().sum().backward()
        y.float().square().sum().backward()
        torch.testing.assert_close(x2.grad, x.grad, rtol=0.02, atol=0.02)


@pytest.mark.parametrize("int8", [False, True])
def test_bf16_model_decode_and_fp32_prefill_match_the_plain_model(kernel_level, int8):
    """A bf16 model (int8 too) with matvec linears at this level: after a prompt longer than
    the decode rows (fp32 tiles), decode steps equal its own full forward to bf16 noise."""
    config = tiny_config(hidden_size=32, lru_width=48, intermediate_size=64)
    model = random_model(config).to(torch.bfloat16)
    model = quantize.quantize_model(model) if int8 else model
    fast = configure(model, linears="matvec", prefill="fp32")
    ids = torch.randint(0, 97, (1, SMALL_BATCH_ROWS + 12))
    with torch.no_grad():
        full = fast(ids).logits.float()
        logits, state = prefill(fast, ids[:, :-3])
        for t in range(ids.shape[1] - 3, ids.shape[1]):
            torch.testing.assert_close(logits.float(), full[:, t - 1], rtol=0, atol=0.25)  # bf16 noise
            logits = fast.decode_step(ids[:, t], torch.ones(1, dtype=torch.bool), state)
