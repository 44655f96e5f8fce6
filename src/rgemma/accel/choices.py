"""Which fast path a model runs, chosen per model: `Accel`, applied by `configure`.

Every choice lives on the model's own modules (rgemma.accel.swap): the scan on each RGLRU
(`scan`), the attention on each LocalAttention (`attend`), the linear kernels by MatVecLinear /
MatVecRGLRU in place of nn.Linear / RGLRU (`amx_rows`), the int8 kernel on each Int8Linear
(`kernel`), the compiled step by CompiledBlock in place of ResidualBlock. The Accel last applied
is kept as `model.accel`. Nothing is process-wide, so two models in one process can differ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from rgemma.accel.compile import CompiledBlock
from rgemma.accel.crossover import faster_tanh
from rgemma.accel.linears import AMX_ROWS, NATIVE_ROWS, PREFILLS, MatVecLinear, MatVecRGLRU, stack_rows
from rgemma.accel.quantize import INT8_KERNELS, Int8Linear
from rgemma.accel.swap import rebuild
from rgemma.models.griffin import (
    RGLRU,
    GriffinForCausalLM,
    LocalAttention,
    ResidualBlock,
    attend_ref,
    attend_sdpa,
    tanh_fp32,
)
from rgemma.ops.scan import rnn_scan_fast, rnn_scan_ref

SCANS = ("fast", "ref", "triton")
ATTENTIONS = {"sdpa": attend_sdpa, "ref": attend_ref}
LINEARS = ("torch", "matvec")
TANHS = {"fp32": tanh_fp32, "dtype": torch.tanh}  # the soft cap's tanh: equal values


@dataclass(frozen=True)
class Accel:
    """The fast paths of one model. The defaults are the plain model as constructed.

    scan: the RG-LRU scan (rgemma.ops.scan): "fast", "ref" (the loop), "triton" (CUDA).
    attention: multi-token attention: "sdpa" (torch's fused kernel) or "ref" (DeepMind's
      computation, which rounds the scores to the model dtype).
    linears: "torch" (nn.Linear) or "matvec" (rgemma.accel.linears: decode-sized products on
      CPUs through rgemma's AMX or FMA kernels, and the RG-LRU's gates as one product where
      one of those loads).
    amx_rows: with "matvec", the most rows rgemma's AMX kernel takes (0: never).
    native_rows: with "matvec", the most rows rgemma's FMA kernels (AVX2, AVX-512F, AVX-512 BF16)
      take: bf16 on a CPU without AMX, float32 on any (0: never); fewer bf16 rows where this machine's
      torch GEMM is faster from fewer rows (rgemma.accel.crossover).
    prefill: with "matvec" (and for every Int8Linear), the arithmetic of half-precision
      products above the decode sizes: "fp32" (float32 tiles of the weight, rgemma.accel.
      linears.fp32_tiles), "dtype" (torch's GEMM in the model's dtype), "auto" (fp32 where this
      CPU has no native GEMM in that dtype: no AMX / AVX512-BF16 for bf16).
    soft_cap: the tanh of the logit soft cap in bf16/fp16: "fp32" (computed in float32 and
      rounded back), "dtype" (torch's tanh in that dtype), "auto" (the faster here, measured
      once per process on the CPU; "fp32" off it). Every choice gives the same values.
    int8_kernel: the kernel of every Int8Linear (rgemma.accel.quantize): "auto" picks per call;
      "native", "amx", "pack", "dequant" force one (an error where it cannot run).
    compile, compile_mode, compile_backend: torch.compile of the one-token step, block by
      block (rgemma.accel.compile.CompiledBlock).
    """

    scan: str = "fast"
    attention: str = "sdpa"
    linears: str = "torch"
    amx_rows: int = AMX_ROWS
    native_rows: int = NATIVE_ROWS
    prefill: str = "auto"
    soft_cap: str = "fp32"
    int8_kernel: str = "auto"
    compile: bool = False
    compile_mode: str | None = None
    compile_backend: str | Callable = "inductor"  # a torch.compile backend

    def __post_init__(self):
        for name, allowed in (
            ("scan", SCANS),
            ("attention", tuple(ATTENTIONS)),
            ("linears", LINEARS),
            ("int8_kernel", INT8_KERNELS),
            ("prefill", PREFILLS),
            ("soft_cap", (*TANHS, "auto")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; expected one of {allowed}")
        for name in ("amx_rows", "native_rows"):
            rows = getattr(self, name)
            if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
                raise ValueError(f"{name} must be a count of rows (0 or more), got {rows!r}")


PLAIN = Accel()


def configure(model: nn.Module, accel: Accel | None = None, **changes) -> nn.Module:
    """Give `model` the fast paths of `accel` (default: the model's own, `model.accel`) with
    `changes` (Accel fields) on top, in place; every earlier choice is replaced, so
    `configure(model, PLAIN)` gives back the plain model. Parameters are shared, never copied
    (except the RG-LRU's stacked gates), and state_dict keys stay. Returns the model (a new
    object only when `model` is itself a module that gets replaced, e.g. a bare nn.Linear)."""
    target = replace(accel or accel_of(model), **changes)
    model = rebuild(model, lambda module: _replacement(module, target))
    scan, attend = _scan(target.scan), ATTENTIONS[target.attention]
    for module in model.modules():
        if isinstance(module, RGLRU):
            module.scan = scan
        elif isinstance(module, LocalAttention):
            module.attend = attend
        elif isinstance(module, Int8Linear):
            module.kernel, module.prefill = target.int8_kernel, target.prefill
        elif isinstance(module, GriffinForCausalLM):
            module.tanh = _tanh(target.soft_cap, module.lm_head.weight)
    model.accel = target
    return model


def accel_of(model: nn.Module) -> Accel:
    """The Accel last applied to `model` by configure (PLAIN if none)."""
    return getattr(model, "accel", PLAIN)


def _replacement(module: nn.Module, accel: Accel) -> nn.Module:
    """What `module` becomes under `accel`: itself, or a module of the same parts."""
    kind = type(module)
    if kind in (nn.Linear, MatVecLinear):
        if accel.linears == "matvec":
            return MatVecLinear.from_linear(module, accel.amx_rows, accel.native_rows, accel.prefill)
        return module.to_plain() if kind is MatVecLinear else module
    if kind in (RGLRU, MatVecRGLRU):
        if accel.linears == "matvec" and _stacking_pays(module, accel):
            return MatVecRGLRU.from_rglru(module, accel.amx_rows, accel.native_rows)
        return module.to_plain() if kind is MatVecRGLRU else module
    if kind in (ResidualBlock, CompiledBlock):
        if accel.compile:
            return CompiledBlock.from_block(module, accel.compile_mode, accel.compile_backend)
        return module.to_plain() if kind is CompiledBlock else module
    return module


def _stacking_pays(rg_lru: RGLRU, accel: Accel) -> bool:
    """The stacked gates do H times the multiply-adds for one pass over the weight: a gain
    only with bf16 gates on a CPU where rgemma's AMX or FMA kernel loads (linears.stack_rows)."""
    w = rg_lru.input_gate_weight
    return (
        w.dtype == torch.bfloat16
        and w.device.type == "cpu"
        and stack_rows(accel.amx_rows, accel.native_rows) > 0
    )


def _tanh(name: str, weight: torch.Tensor):
    """The soft cap's tanh for `name`; "auto" measures for the LM head's dtype on the CPU."""
    if name == "auto":
        name = faster_tanh(weight.dtype) if weight.device.type == "cpu" else "fp32"
    return TANHS[name]


def _scan(name: str):
    if name == "triton":
        from rgemma.ops.scan_triton import rnn_scan_triton  # imports triton: only when asked for

        return rnn_scan_triton
    return {"fast": rnn_scan_fast, "ref": rnn_scan_ref}[name]
