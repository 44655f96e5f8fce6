"""int8 weight-only linear layers for CPU decode, swapped in from outside the model.

Each `nn.Linear` weight W (out, in) becomes int8 `q` with one scale per output channel:
s = max|W_row| / 127, rounded to the activation dtype first so that q = round(W / s) is
quantized against the very scale it is used with. Activations stay in the model dtype, so
y = (x @ q^T) * s + b. Embeddings are never quantized; the tied LM head is (it gets its own
int8 copy, and the embedding stays as it was for the lookup).

Kernels, picked per call ("auto", or forced per module by `Int8Linear.kernel`, which
rgemma.accel.configure sets), on a CPU: for up to NATIVE_MAX_ROWS rows with AVX-512
VNNI, rgemma's int8 GEMV ("native"; rgemma.kernels, C compiled on first use): it reads 1 byte
per weight at close to memory speed, rounding each activation row to int16 against its absmax
on the way (14 bits, finer than bf16). Up to AMX_MAX_ROWS bf16 rows on a CPU with AMX,
rgemma's AMX kernel ("amx"): int8 rows widened to bf16 in cache, exact bf16 x int8 products,
as fast as a bf16 model at batch 8-32. Otherwise, up to FMA_MAX_ROWS rows on a CPU with AVX2
or AVX-512F, rgemma's FMA kernel ("fma", `kernels.int8_linear`): the exact product in fp32,
rounded once. Without those, up to PACK_MAX_ROWS rows, `torch._weight_int8pack_mm` (no
dequantized copy, but compute-bound). Otherwise (prefill, other devices) the fallback
dequantizes: above FMA_MAX_ROWS rows (prefill), half-precision activations on a CPU whose GEMM
in that dtype is slow take float32 tiles (rgemma.accel.linears.fp32_tiles, `Int8Linear.prefill`);
other inputs, and "dequant", F.linear in their dtype.
Measured in the README (Speed).

Checkpoint format (shared with `rgemma convert`): for each quantized Linear `X`,
`X.weight` int8 (out, in) and `X.weight_scale` (out,) in the checkpoint's dtype (exports
written before the quantizer was shared hold float32 scales; they load the same way, cast to
the model's dtype); config.json has
`"quantization": {"method": "int8-weight-only", ...}`. `load_quantized_state` takes those.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from rgemma import kernels
from rgemma.accel.linears import fp32_tiles, native_available, wants_fp32_tiles
from rgemma.models.surface import floating_dtype

METHOD = "int8-weight-only"
INT8_KERNELS = ("auto", "native", "amx", "fma", "pack", "dequant")  # native: the int8 GEMV;
# fma: kernels.int8_linear (AVX2/AVX-512F); pack: torch._weight_int8pack_mm; dequant:
# dequantize + F.linear; auto: the fastest that applies
NATIVE_MAX_ROWS = 4  # the int8 GEMV wins for 1-4 rows (README, Speed); it runs any row count
AMX_MAX_ROWS = 128  # then the AMX kernel, up to decode batch sizes
FMA_MAX_ROWS = 128  # without AMX, the FMA kernel beats the others up to here (bench/gemv_levels.py)
PACK_MAX_ROWS = 8  # above this many rows dequantize + GEMM beats the pack kernel (README, Speed)


def quantize_weight(
    weight: torch.Tensor, scale_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """W (out, in) -> (q int8 (out, in), scale (out,) in `scale_dtype`, default W's dtype).

    The one int8 quantizer: `--quantize int8` at load and `rgemma convert --quantize int8`
    both call it, so they give the same bytes for the same weights. The scale, max|W_row| / 127,
    is rounded to the dtype it is used in (the model's) before q is computed, so q * scale is
    the nearest int8 grid that this dtype can express: dequantizing adds no error beyond
    scale/2 per element. A row whose scale is 0 (all zeros, or so small that the scale
    underflows, as in float16 for max|W_row| under ~4e-6) gets scale 1 instead: q is then 0 and
    finite, where a zero scale would give 0/0 = NaN. A row holding a NaN or an Inf gets a NaN or
    Inf scale, so the scales alone tell whether the weight was finite (a loader checks them).

    bf16/float32 weights and scales on a CPU with AVX2 take rgemma's kernel
    (`kernels.quantize_rows`, one pass per row, about 10x faster), bit for bit the torch code
    below (`_quantize_rows`, the reference), which the other cases run."""
    native = kernels.quantize_rows(weight, scale_dtype or weight.dtype)
    if native is not None:
        return native
    q = torch.empty(weight.shape, dtype=torch.int8, device=weight.device)
    scale = torch.empty(weight.shape[0], dtype=scale_dtype or weight.dtype, device=weight.device)
    step = max(1, QUANTIZE_BLOCK // max(weight.shape[1], 1))  # rows at a time: the float32
    for lo in range(0, weight.shape[0], step):  # temporaries stay small (an LM head is 2.6 GB)
        q[lo : lo + step], scale[lo : lo + step] = _quantize_rows(weight[lo : lo + step], scale.dtype)
    return q, scale


QUANTIZE_BLOCK = 1 << 22  # weights quantized at a time


def _quantize_rows(weight: torch.Tensor, scale_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127).to(scale_dtype)
    scale = torch.where(scale != 0, scale, torch.ones_like(scale))  # NaN and Inf stay
    q = torch.round(w / scale.float()[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def dequantize_weight(
    q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """q * scale[:, None] as `dtype`: within scale/2 of the weight `quantize_weight` took."""
    return (q.float() * scale.float()[:, None]).to(dtype)


class Int8Linear(nn.Module):
    """y = x @ (q * scale)^T + bias, with q int8 (out, in) and scale (out,) per output channel.
    `kernel` (one of INT8_KERNELS) is this module's kernel choice."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: torch.dtype = torch.bfloat16,
        device=None,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer(
            "weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device)
        )
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=dtype, device=device))
        self.bias = (
            nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device), requires_grad=False)
            if bias
            else None
        )
        self.kernel = "auto"
        self.prefill = "auto"  # one of rgemma.accel.linears.PREFILLS

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        w = linear.weight
        out = cls(linear.in_features, linear.out_features, linear.bias is not None, w.dtype, w.device)
        out.weight, out.weight_scale = quantize_weight(w)
        if linear.bias is not None:
            out.bias = nn.Parameter(linear.bias.detach(), requires_grad=False)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() and not kernels.needs_grad(x):
            return torch.ops.rgemma.int8_linear(
                x, self.weight, self.weight_scale, self.bias, self.kernel, self.prefill
            )
        return int8_linear(x, self.weight, self.weight_scale, self.bias, self.kernel, self.prefill)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def int8_linear(
    x: torch.Tensor,
    q: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    kernel: str = "auto",
    prefill: str = "auto",
) -> torch.Tensor:
    """x (..., in) @ (q * scale)^T + bias, through `kernel` (see INT8_KERNELS); the dequantizing
    fallback in `prefill`'s arithmetic (rgemma.accel.linears.wants_fp32_tiles). Traced by
    torch.compile, only torch's kernels run (a native call would break the graph); Int8Linear
    avoids that by calling the rgemma::int8_linear op below, opaque to the compiler."""
    if not torch.compiler.is_compiling():
        y = _native_kernels(x, q, scale, bias, kernel)
        if y is not None:
            return y
    return _torch_kernels(x, q, scale, bias, kernel, prefill)


def _native_kernels(x, q, scale, bias, kernel: str) -> torch.Tensor | None:
    """The product through rgemma's int8 GEMV, AMX or FMA kernel, if `kernel` picks one."""
    if _picks(
        "native",
        kernel,
        x,
        NATIVE_MAX_ROWS,
        "a CPU tensor, AVX-512 VNNI and a C compiler",
        lambda: x.device.type == "cpu" and x.dtype.is_floating_point and kernels.int8_gemv_available(),
    ):
        y = kernels.int8_gemv(x, q, scale, bias)
        return y if y.dtype == x.dtype else y.to(x.dtype)
    if _picks(
        "amx",
        kernel,
        x,
        AMX_MAX_ROWS,
        "bf16 activations on a CPU with AMX and a C compiler",
        lambda: x.device.type == "cpu" and x.dtype == torch.bfloat16 and kernels.amx_available(),
    ):
        return kernels.amx_linear(x, q, scale, bias)
    if _picks(
        "fma",
        kernel,
        x,
        FMA_MAX_ROWS,
        "bf16/float32 activations on a CPU with AVX2 (or AVX-512F) and a C compiler",
        lambda: x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float32) and native_available(),
    ):
        return kernels.int8_linear(x, q, scale, bias, level=kernels.FMA_LEVEL)  # None under autograd
    return None


def _torch_kernels(x, q, scale, bias, kernel: str, prefill: str) -> torch.Tensor:
    """The product through torch: the pack kernel, or dequantized (in fp32 tiles, or whole)."""
    rows, out_shape = x.reshape(-1, x.shape[-1]), (*x.shape[:-1], q.shape[0])
    # The pack kernel wants activations and scales of one dtype, a contiguous q, and
    # in_features a multiple of 16 (other widths crash it). It also takes float32, but is
    # slower there than a float32 F.linear, so "auto" keeps it to bfloat16.
    if _picks(
        "pack",
        kernel,
        x,
        PACK_MAX_ROWS if x.dtype == torch.bfloat16 else 0,
        f"bf16/float32 activations of the scale's dtype and in_features a multiple of 16 "
        f"(in_features {q.shape[1]})",
        lambda: (
            hasattr(torch, "_weight_int8pack_mm")
            and x.device.type == "cpu"
            and x.dtype in (torch.bfloat16, torch.float32)
            and scale.dtype == x.dtype
            and q.is_contiguous()
            and q.shape[1] % 16 == 0
        ),
    ):
        y = torch._weight_int8pack_mm(rows, q, scale).view(out_shape)
        return y + bias if bias is not None else y
    if kernel == "auto" and rows.shape[0] > FMA_MAX_ROWS and wants_fp32_tiles(x, q, prefill):
        return fp32_tiles(x, lambda lo, hi: dequantize_weight(q[lo:hi], scale[lo:hi]), q.shape[0], bias)
    return F.linear(x, q.to(x.dtype) * scale.to(x.dtype)[:, None], bias)


@torch.library.custom_op("rgemma::int8_linear", mutates_args=())
def _int8_linear_op(
    x: torch.Tensor,
    q: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    kernel: str,
    prefill: str,
) -> torch.Tensor:
    return int8_linear(x, q, scale, bias, kernel, prefill).contiguous()


@_int8_linear_op.register_fake
def _(x, q, scale, bias, kernel, prefill):
    return x.new_empty(*x.shape[:-1], q.shape[0])


def _picks(kernel: str, choice: str, x: torch.Tensor, max_rows: int, needs: str, fits) -> bool:
    """Whether `kernel` runs this call: forced by `choice` (an error when it cannot take the
    input), or chosen by "auto" for at most `max_rows` rows outside autograd. `fits()` says
    whether it can take the input; it is only asked when the kernel is in play."""
    if choice not in ("auto", kernel):
        return False
    ok = fits()
    if choice == kernel:
        if not ok:
            raise ValueError(
                f"the int8 {kernel} kernel needs {needs}; got {x.dtype} on {x.device} (see rgemma.kernels)"
            )
        return True
    return ok and x.numel() // x.shape[-1] <= max_rows and not kernels.needs_grad(x)


# --------------------------------------------------------------------------- model surgery
def quantize_model(model: nn.Module, method: str = "int8", skip: tuple[str, ...] = ()) -> nn.Module:
    """Swap every nn.Linear of `model` (names in `skip` excepted) for an Int8Linear, in place.
    Embeddings stay as they are. Returns the model."""
    if method not in ("int8", METHOD):
        raise ValueError(f"unknown quantization method {method!r}; expected 'int8'")
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and name not in skip:
            _replace(model, name, Int8Linear.from_linear(module))
    return model


def quantized_names(keys) -> list[str]:
    """The modules a checkpoint stores quantized: every `X` with an `X.weight_scale` key."""
    return [k[: -len(".weight_scale")] for k in keys if k.endswith(".weight_scale")]


def prepare_int8(model: nn.Module, names, dtype: torch.dtype | None = None) -> nn.Module:
    """Swap the nn.Linear modules `names` for empty Int8Linears of the same shape (on the
    module's device, the meta device included), ready for a loader to assign `X.weight` (int8),
    `X.weight_scale` and `X.bias` into. Returns the model."""
    for name in names:
        linear = model.get_submodule(name)
        if not isinstance(linear, nn.Linear):
            raise ValueError(
                f"{name} is a {type(linear).__name__}, not an nn.Linear: it cannot hold int8 weights"
            )
        _replace(
            model,
            name,
            Int8Linear(
                linear.in_features,
                linear.out_features,
                linear.bias is not None,
                dtype or linear.weight.dtype,
                linear.weight.device,
            ),
        )
    return model


def load_quantized_state(model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> set[str]:
    """Install pre-quantized linears: for each `X.weight_scale` in `tensors`, module `X`
    becomes an Int8Linear holding `X.weight` (int8) and the scale (cast to the model's
    dtype); `X.bias` is taken from `tensors` when present, else kept. Call it after
    tie_weights(): re-tying would overwrite a quantized head. Returns the keys used."""
    used = set()
    for name in quantized_names(tensors):
        linear = model.get_submodule(name)
        q, scale = tensors[f"{name}.weight"], tensors[f"{name}.weight_scale"]
        _check_quantized(name, linear, q, scale)
        dtype = (
            linear.bias.dtype
            if getattr(linear, "bias", None) is not None
            else floating_dtype(model.parameters())
        )
        new = Int8Linear(q.shape[1], q.shape[0], linear.bias is not None, dtype, q.device)
        new.weight, new.weight_scale = q.contiguous(), scale.to(dtype)
        bias = tensors.get(f"{name}.bias", linear.bias)
        if bias is not None:
            new.bias = nn.Parameter(bias.detach().to(dtype), requires_grad=False)
        _replace(model, name, new)
        used |= {f"{name}.weight", f"{name}.weight_scale"} | ({f"{name}.bias"} & set(tensors))
    return used


def _check_quantized(name: str, linear: nn.Module, q: torch.Tensor, scale: torch.Tensor) -> None:
    want = (getattr(linear, "out_features", None), getattr(linear, "in_features", None))
    if q.dtype != torch.int8 or tuple(q.shape) != want:
        raise ValueError(
            f"{name}.weight must be int8 of shape {want} for a quantized layer, got "
            f"{q.dtype} {tuple(q.shape)}"
        )
    if tuple(scale.shape) != (want[0],) or not scale.is_floating_point():
        raise ValueError(
            f"{name}.weight_scale must be a float vector of {want[0]} scales, got "
            f"{scale.dtype} {tuple(scale.shape)}"
        )


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)
