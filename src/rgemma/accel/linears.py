"""Decode-sized weight products on CPUs: MatVecLinear for nn.Linear, MatVecRGLRU for the RG-LRU's
block-diagonal gates. Each holds its own kernel policy (`amx_rows`, `native_rows`, `prefill`),
set by accel.configure.

bf16 rows, by count (rgemma.kernels has the kernels; each falls back to the next):
- 1 to `amx_rows`: rgemma's AMX kernel where the CPU has AMX;
- 1 to `native_rows` on a CPU without AMX: rgemma's FMA kernel (`kernels.linear`: AVX-512 BF16,
  AVX-512F or AVX2), the exact product rounded once; bf16 rows only up to this machine's
  crossover to torch's GEMM (rgemma.accel.crossover, measured once and cached);
- otherwise one row goes through torch.mv / torch.addmv, which read a bf16 weight at close to
  memory speed where F.linear's GEMM path does not, and up to SMALL_BATCH_ROWS rows are
  computed as W @ x^T (the weight as the streamed left operand);
- more rows (prefill): F.linear, or, for half-precision weights on a CPU whose torch GEMM in
  that dtype is slow (no AMX / AVX512-BF16), `fp32_tiles`: float32 GEMMs a block of weight rows
  at a time (`prefill`: "auto" decides by the CPU, "fp32" / "dtype" force either).
The speed-ups are measured in the README (Speed).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from rgemma import kernels
from rgemma.accel import crossover
from rgemma.accel.swap import adopt
from rgemma.models.griffin import RGLRU

SMALL_BATCH_ROWS = 128  # up to this many rows, W @ x^T beats x @ W^T on CPUs
AMX_ROWS = 32  # the default limit: up to this many bf16 rows rgemma's AMX kernel beats torch's
NATIVE_ROWS = 128  # up to this many rows rgemma's FMA kernels beat torch's (bench/gemv_levels.py)
PREFILLS = ("auto", "fp32", "dtype")  # the arithmetic of products above the decode sizes
TILE_BYTES = 8 << 20  # float32 weight bytes widened at a time by fp32_tiles


class MatVecLinear(nn.Linear):
    """An nn.Linear (the same parameters, the same state_dict) for decode-sized inputs.

    Under torch.compile (outside autograd) the product is one opaque op, rgemma::decode_linear,
    so the compiled step keeps these kernels and inductor fuses only the code around them."""

    amx_rows = AMX_ROWS  # the most rows the AMX kernel takes; 0: never
    native_rows = NATIVE_ROWS  # the most rows the FMA kernels take; 0: never
    prefill = "auto"  # one of PREFILLS

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        amx_rows: int = AMX_ROWS,
        native_rows: int = NATIVE_ROWS,
        prefill: str = "auto",
    ) -> MatVecLinear:
        """`linear`'s parameters (the same tensors) behind these kernels."""
        fast = linear if type(linear) is cls else adopt(linear, cls)
        fast.amx_rows, fast.native_rows, fast.prefill = amx_rows, native_rows, prefill
        return fast

    def to_plain(self) -> nn.Linear:
        return adopt(self, nn.Linear, drop=("amx_rows", "native_rows", "prefill"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        policy = (self.amx_rows, self.native_rows, self.prefill)
        if kernels.needs_grad(x, self.weight):
            return decode_linear(x, self.weight, self.bias, *policy)
        return _decode_product(x, self.weight, self.bias, *policy)


def decode_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    amx_rows: int = AMX_ROWS,
    native_rows: int = NATIVE_ROWS,
    prefill: str = "auto",
) -> torch.Tensor:
    """F.linear(x, weight, bias) through the kernel that suits x's row count (module docstring)."""
    rows = x.numel() // max(x.shape[-1], 1)
    if 1 <= rows <= amx_rows and _amx_fits(x, weight):
        return kernels.amx_linear(x, weight, None, bias)
    if 1 <= rows <= native_rows and _native_fits(x, weight, rows):
        y = kernels.linear(x, weight, bias, level=kernels.FMA_LEVEL)
        if y is not None:
            return y
    if rows == 1:
        row = x.reshape(-1)
        y = torch.mv(weight, row) if bias is None else torch.addmv(bias, weight, row)
        return y.view(*x.shape[:-1], -1)
    if 1 < rows <= SMALL_BATCH_ROWS:
        xt = x.reshape(rows, -1).t()
        y = torch.mm(weight, xt) if bias is None else torch.addmm(bias[:, None], weight, xt)
        return y.t().reshape(*x.shape[:-1], -1)
    if wants_fp32_tiles(x, weight, prefill):
        return fp32_tiles(x, lambda lo, hi: weight[lo:hi].float(), weight.shape[0], bias)
    return F.linear(x, weight, bias)


def wants_fp32_tiles(x: torch.Tensor, weight: torch.Tensor, prefill: str) -> bool:
    """Whether a product of half-precision x (several rows) and `weight` (that dtype, or int8)
    computes in float32 tiles: forced by prefill="fp32", or by "auto" where torch's GEMM in x's
    dtype is slow on this CPU (kernels.fast_half_gemm); never under autograd or off the CPU."""
    if prefill not in PREFILLS:
        raise ValueError(f"unknown prefill {prefill!r}; expected one of {PREFILLS}")
    return (
        prefill != "dtype"
        and x.dtype in (torch.bfloat16, torch.float16)
        and weight.dtype in (x.dtype, torch.int8)
        and x.device.type == weight.device.type == "cpu"
        and not kernels.needs_grad(x, weight)
        and (prefill == "fp32" or not kernels.fast_half_gemm(x.dtype))
    )


def fp32_tiles(
    x: torch.Tensor,
    widen: Callable[[int, int], torch.Tensor],
    n_out: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """x (..., in) @ W^T + bias in float32, rounded once to x's dtype, where widen(lo, hi) gives
    weight rows lo:hi as float32 (lo, hi multiples of the tile). Only TILE_BYTES of the weight
    are float32 at a time, so a half-precision model is never held twice; the products of
    half-precision inputs are exact in float32, so this is at least as exact as torch's GEMM in
    x's dtype (which rounds once too, or more often)."""
    rows = x.reshape(-1, x.shape[-1]).float()
    out = torch.empty(rows.shape[0], n_out, dtype=x.dtype)
    step = max(16, TILE_BYTES // (4 * max(x.shape[-1], 1)) // 16 * 16)
    for lo in range(0, n_out, step):
        hi = min(lo + step, n_out)
        b = bias[lo:hi].float() if bias is not None else None
        out[:, lo:hi] = F.linear(rows, widen(lo, hi), b)  # the copy rounds, once
    return out.view(*x.shape[:-1], n_out)


def _decode_product(x, weight, bias, amx_rows: int, native_rows: int, prefill: str) -> torch.Tensor:
    """decode_linear outside autograd; while torch.compile traces, the opaque op around it."""
    if torch.compiler.is_compiling():
        return torch.ops.rgemma.decode_linear(x, weight, bias, amx_rows, native_rows, prefill)
    return decode_linear(x, weight, bias, amx_rows, native_rows, prefill)


@torch.library.custom_op("rgemma::decode_linear", mutates_args=())
def _decode_linear_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    amx_rows: int,
    native_rows: int,
    prefill: str,
) -> torch.Tensor:
    return decode_linear(x, weight, bias, amx_rows, native_rows, prefill).contiguous()


@_decode_linear_op.register_fake
def _(x, weight, bias, amx_rows, native_rows, prefill):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def _amx_fits(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """bf16 on a CPU with AMX, outside autograd, and not while torch.compile traces (there
    the rgemma::decode_linear op hides the native call)."""
    return (
        x.dtype == weight.dtype == torch.bfloat16
        and x.device.type == "cpu"
        and not kernels.needs_grad(x, weight)
        and not torch.compiler.is_compiling()
        and kernels.amx_available()
    )


def _native_fits(x: torch.Tensor, weight: torch.Tensor, rows: int) -> bool:
    """float32, or bf16 on a CPU without AMX (where AMX loads, it and torch's bf16 GEMM are
    faster) in no more rows than this machine's crossover to torch's GEMM (rgemma.accel.
    crossover), not while torch.compile traces; kernels.linear checks the rest (autograd,
    dtypes, level). float32 has no crossover: the FMA kernel gives each row the same sums
    whatever the batch, so a float32 request decodes the same alone or batched."""
    if torch.compiler.is_compiling() or x.dtype != weight.dtype:
        return False
    if x.dtype == torch.bfloat16 and kernels.amx_available():
        return False
    if x.dtype == torch.bfloat16:
        return rows <= crossover.MIN_ROWS or rows <= crossover.gemm_rows(x.dtype)
    return x.dtype == torch.float32  # whatever the rows: the kernel's sums do not depend on them


_GATES = ("input_gate_weight", "recurrent_gate_weight")


class MatVecRGLRU(RGLRU):
    """An RGLRU (the same state_dict) whose two gates, at decode, are one product.

    Each gate is H block-diagonal products x_h @ W_h with (E/H, E/H) blocks, which torch's bmm
    reads at a fraction of memory speed for one row. Here the H head slices of x become H rows
    against all 2H blocks, transposed and stacked as one (2E, E/H) weight; head h's gates are
    the diagonal blocks of the (H, 2E) result. That is H times the multiply-adds, but one pass
    over the weight bytes, which is what a decode step waits for: on AMX, and with the FMA
    kernels, which beat torch's bmm from 10 to 160 rows of heads at the 2B shape (H = 10) on
    an AVX2 CPU (once a product that small runs on one thread: kernels.THREAD_BYTES).

    The stacked weight is the module's one gate parameter, `gate_weights`; input_gate_weight
    and recurrent_gate_weight are views of it, computed on access, so nothing can make them
    drift apart (a dtype change, a load_state_dict). The state_dict still holds the two under
    their own keys, in the plain order. Other inputs (prefill, more rows of heads than the
    kernel takes: `amx_rows` with AMX, `native_rows` with the FMA kernels, none without either;
    autograd, another device) take the plain RGLRU.gates through those views. Build it with
    from_rglru."""

    amx_rows = AMX_ROWS
    native_rows = NATIVE_ROWS
    stack_limit = 0  # the most rows of heads stacked: stack_rows(amx_rows, native_rows)

    @classmethod
    def from_rglru(
        cls, plain: RGLRU, amx_rows: int = AMX_ROWS, native_rows: int = NATIVE_ROWS
    ) -> MatVecRGLRU:
        """`plain` with its gate weights stacked (one copy made; the old tensors are let go)."""
        if type(plain) is cls:
            plain.amx_rows, plain.native_rows = amx_rows, native_rows
            plain.stack_limit = stack_rows(amx_rows, native_rows)
            return plain
        wx, wa = plain.input_gate_weight, plain.recurrent_gate_weight
        fast = adopt(plain, cls, drop=_GATES)
        with torch.no_grad():  # (2H, out, in) -> (2E, E/H)
            stacked = torch.cat([wx.transpose(1, 2), wa.transpose(1, 2)]).flatten(0, 1)
        fast.gate_weights = nn.Parameter(stacked, requires_grad=wx.requires_grad)
        fast.amx_rows, fast.native_rows, fast._order = amx_rows, native_rows, tuple(plain._parameters)
        fast.stack_limit = stack_rows(amx_rows, native_rows)  # decided here: tracing reads no CPU flags
        return fast

    def to_plain(self) -> RGLRU:
        """The plain RGLRU, its gate weights copied out in the plain layout and order."""
        plain = adopt(self, RGLRU, drop=("gate_weights", "amx_rows", "native_rows", "stack_limit", "_order"))
        for name in _GATES:
            w = getattr(self, name)
            setattr(plain, name, nn.Parameter(w.detach().contiguous(), requires_grad=w.requires_grad))
        for name in self._order:  # move each to the end, in the plain order
            plain._parameters[name] = plain._parameters.pop(name)
        return plain

    @property
    def input_gate_weight(self) -> torch.Tensor:
        return self._gate_view(0)

    @property
    def recurrent_gate_weight(self) -> torch.Tensor:
        return self._gate_view(1)

    def _gate_view(self, gate: int) -> torch.Tensor:
        n = self.gate_weights.shape[-1]
        return self.gate_weights.view(2, self.heads, n, n)[gate].transpose(1, 2)  # (H, in, out)

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stacked = self.gate_weights
        if not self._stacked_applies(x, stacked):
            return super().gates(x)
        H, E = self.heads, x.shape[-1]
        policy = (self.amx_rows, self.native_rows, "dtype")
        y = _decode_product(x.reshape(-1, E // H), stacked, None, *policy)  # a row per
        # (token, head), times every block: (N*H, 2E), through the AMX or FMA kernel
        y = y.view(-1, H, 2, H, E // H)  # (N, row head, gate, block head, E/H)
        # head h's gates are block h of row h: the (row head, block head) diagonal, as a view
        # (torch.diagonal would do; inductor's lowering of it warns on every compile)
        n, row, gate, block, last = y.stride()  # any layout (torch's W @ x^T gives a transpose)
        gate_x, gate_a = (
            y.as_strided((y.shape[0], 2, H, E // H), (n, gate, row + block, last)).reshape(-1, 2, E).unbind(1)
        )
        return (
            torch.sigmoid(gate_x.reshape(x.shape) + self.input_gate_bias.flatten()),
            torch.sigmoid(gate_a.reshape(x.shape) + self.recurrent_gate_bias.flatten()),
        )

    def _stacked_applies(self, x: torch.Tensor, stacked: torch.Tensor) -> bool:
        """Rows of heads within what the kernel takes, the weight's dtype, on a CPU, outside
        autograd."""
        return (
            x.dtype == stacked.dtype
            and x.device.type == "cpu"
            and x.numel() // x.shape[-1] * self.heads <= self.stack_limit
            and not kernels.needs_grad(x, stacked)
        )

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        for name in self._order:
            t = getattr(self, name)
            destination[prefix + name] = t if keep_vars else t.detach()

    def _load_from_state_dict(self, state_dict, prefix, metadata, strict, missing, unexpected, errors):
        keys = {prefix + name: getattr(self, name) for name in _GATES}
        for key, view in keys.items():
            if key not in state_dict:
                missing.extend([key] if strict else [])
            elif state_dict[key].shape != view.shape:
                errors.append(
                    f"size mismatch for {key}: copying a param with shape "
                    f"{tuple(state_dict[key].shape)}, the shape in current model is {tuple(view.shape)}."
                )
            else:
                with torch.no_grad():
                    view.copy_(state_dict[key])  # into the stacked weight
        rest = {k: v for k, v in state_dict.items() if k not in keys}
        super()._load_from_state_dict(rest, prefix, metadata, strict, missing, unexpected, errors)
        if prefix + "gate_weights" in missing:
            missing.remove(prefix + "gate_weights")


def native_available() -> bool:
    """Whether rgemma's FMA kernels (kernels.linear below AMX: AVX2, AVX-512F, AVX-512 BF16) run here."""
    return any(kernels.available(name) for name in ("linear_avx512bf16", "linear_avx512", "linear_avx2"))


def stack_rows(amx_rows: int, native_rows: int) -> int:
    """The most rows of heads the stacked gates take now: the AMX kernel's limit where it
    loads, else the FMA kernels', else 0 (torch's bmm on the plain gates is faster)."""
    if kernels.amx_available():
        return amx_rows
    return native_rows if native_available() else 0
