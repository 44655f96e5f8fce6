"""The int8 quantizer kernel (quantize.c) at every level this CPU runs, against the torch
reference (rgemma.accel.quantize._quantize_rows), bit for bit: q and the scales, for bf16 and
float32 weights and scales, odd widths (vector tails), all-zero rows, rows so small that the
scale is subnormal, and exact ties, which both round to even."""

from __future__ import annotations

import pytest
import torch

from conftest import require_level
from rgemma import kernels
from rgemma.accel.quantize import _quantize_rows, quantize_weight

DTYPES = (torch.bfloat16, torch.float32)


def _level(name: str) -> str:
    require_level(name)
    if not kernels.available(f"quantize_{name}", name):
        pytest.skip(f"kernel level {name!r}: no C compiler, or its kernel did not build")
    return name


def _weights(rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
    """Rows from 1e-41 (subnormal scales) to 1e3 wide, one all zero, one ending in ties."""
    gen = torch.Generator().manual_seed(rows * 1000 + cols)
    w = torch.randn(rows, cols, generator=gen) * torch.logspace(-41, 3, rows)[:, None]
    w[rows // 2] = 0
    if cols >= 6:  # scale 2^-4 exactly: w / s = 127, and halves that round to even
        w[1, :6] = torch.tensor([127.0, 0.5, 1.5, 2.5, -0.5, -2.5]) * 2.0**-4
        w[1, 6:] = 0
    return w.to(dtype)


@pytest.mark.parametrize("level", ["avx2", "avx512"])
@pytest.mark.parametrize("w_dtype", DTYPES)
@pytest.mark.parametrize("scale_dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 6), (9, 1), (33, 37), (64, 4001)])
def test_kernel_equals_the_reference_bit_for_bit(level, w_dtype, scale_dtype, shape):
    w = _weights(*shape, w_dtype)
    q, scale = kernels.quantize_rows(w, scale_dtype, level=_level(level))
    ref_q, ref_scale = _quantize_rows(w, scale_dtype)
    assert q.dtype == torch.int8 and scale.dtype == scale_dtype
    assert torch.equal(q, ref_q) and torch.equal(scale, ref_scale)
    if shape[1] >= 6:
        assert q[1, :6].tolist() == [127, 0, 2, 2, 0, -2] and scale[1].item() == 2.0**-4


def test_other_inputs_are_left_to_torch():
    w = torch.randn(4, 8)
    assert kernels.quantize_rows(w.half(), torch.float16) is None
    assert kernels.quantize_rows(w, torch.float16) is None
    assert kernels.quantize_rows(w[None], torch.float32) is None
    q, scale = quantize_weight(w.half())  # the reference runs them
    assert q.dtype == torch.int8 and scale.dtype == torch.float16


def test_no_kernel_at_level_none(monkeypatch):
    monkeypatch.setenv("RGEMMA_KERNEL_LEVEL", "none")
    assert kernels.quantize_rows(torch.randn(4, 8), torch.float32) is None


@pytest.mark.parametrize("level", ["avx2", "avx512"])
@pytest.mark.parametrize("w_dtype", DTYPES)
def test_a_nan_or_inf_weight_shows_in_its_rows_scale(level, w_dtype):
    w = torch.randn(3, 40).to(w_dtype)
    w[0, 7], w[2, 39] = float("nan"), float("-inf")
    for scale in (kernels.quantize_rows(w, w_dtype, level=_level(level))[1], _quantize_rows(w, w_dtype)[1]):
        assert scale[0].isnan() and scale[1].isfinite() and scale[2].isinf()
    # a float32 NaN of any payload, the scale in bf16 or float32: NaN (rounding a NaN's bits
    # to bf16 could carry into the sign and give -0, then the 0 -> 1 rule a scale of 1)
    for bits in (0x7FC00000, 0x7FFFFFFF, 0x7F80FFFF, -1):
        nan = torch.tensor([bits], dtype=torch.int32).view(torch.float32)
        w32 = torch.randn(2, 40)
        w32[0, 3] = nan[0]
        for scale_dtype in (torch.bfloat16, torch.float32):
            scale = kernels.quantize_rows(w32, scale_dtype, level=_level(level))[1]
            assert scale[0].isnan() and scale[1].isfinite(), (hex(bits), scale_dtype)
