"""Native CPU kernels, compiled from C on first use and cached; optional by design.

Each kernel has a level, chosen at run time by the CPU's features (`level()`). The levels are
per architecture (`levels()`): on x86-64 "none" < "avx2" < "avx512" < "avx512bf16" < "amx", on
aarch64 "none" < "neon" (Advanced SIMD, "asimd" in /proc/cpuinfo's Features), elsewhere "none"
alone. RGEMMA_KERNEL_LEVEL=<level> caps it (never above what the CPU has, so an AVX-512 machine
can run and test the AVX2 kernels; a name that is not one of this architecture's levels is an
error), and RGEMMA_NATIVE=0 turns every kernel off.

- `linear(x, w, bias)` / `int8_linear(x, q, scale, bias)`: bf16, float32 or int8 weights, the exact
  product (fp32 sums, rounded once), through the best kernel at the current level, else None:
  linear_fma.c (avx2: AVX2 + FMA + F16C; avx512: the same source on AVX-512F; avx512bf16: the
  same source on vdpbf16ps, for bf16 activations; neon: the same source on aarch64's 4-lane
  vfmaq_f32) or, at "amx" with bf16 activations, amx_linear. The NEON variant is tested for
  correctness under qemu-user (tests/kernels/test_neon.py), not measured for speed on ARM
  hardware, and rgemma.accel does not pick it.
- `int8_gemv(x, q, scale, bias)` (int8_gemv.c, "avx512"): the int8 weight-only product for one
  to a few rows on AVX-512 VNNI, close to memory speed; it rounds each activation row to int16
  (14 bits) first, so it is not the exact product. Needs AVX-512 F, BW, VL and VNNI.
- `quantize_rows(w, scale_dtype)` (quantize.c, "avx2" and "avx512"): int8 weights and their
  per-row scales, bit for bit rgemma.accel.quantize's torch reference, in one pass per row.
- `amx_linear(x, w, scale, bias)` (amx_linear.c, "amx"): bf16 activations times bf16 or int8
  weights for decode batches (2 to ~128 rows) on AMX tiles; its int8 path gives int8 models a
  fast batched decode, where torch has no fast kernel. Needs AMX-BF16.

rgemma.accel (quantize, linears) uses all of them: amx_linear where AMX loads, else `linear` /
`int8_linear` at AVX2 or AVX-512F for decode rows; `int8_gemv_available()` / `amx_available()`
say whether each loaded, and torch's kernels run when none does. `fast_half_gemm(dtype)` says
whether torch's GEMM in bf16/fp16 is native on this CPU (accel prefills in fp32 tiles if not).
Building needs a C compiler (`$CC`, else cc or gcc). Each shared library is built once into
$RGEMMA_CACHE/kernels (default ~/.cache/rgemma/kernels), named by a hash of the source and the
build command, and written atomically (rgemma.io.atomic), so concurrent first uses cannot see
half a file.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from rgemma.io.atomic import atomic_file
from rgemma.io.files import cache_root

HERE = Path(__file__).parent
BASE_FLAGS = ["-O3", "-fopenmp", "-shared", "-fPIC"]


_PTR, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int


# Each architecture's levels above "none", lowest first, with the /proc/cpuinfo flags each adds to
# the ones below it. A kernel also lists the flags it needs itself (int8_gemv, at "avx512", needs
# VNNI too), so it loads only where they are.
ARCH_LEVEL_FLAGS = {
    "x86_64": {
        "avx2": ("avx2", "fma", "f16c"),
        "avx512": ("avx512f", "avx512bw", "avx512vl"),
        "avx512bf16": ("avx512_vnni", "avx512_bf16"),
        "amx": ("amx_tile", "amx_bf16"),
    },
    "aarch64": {"neon": ("asimd",)},
}
CPUINFO_FLAGS = {"x86_64": "flags", "aarch64": "Features"}  # the /proc/cpuinfo line that lists them
# linear_fma.c's best variant per architecture (below AMX's kernel on x86-64)
ARCH_FMA_LEVEL = {"x86_64": "avx512bf16", "aarch64": "neon"}


def _arch() -> str:
    """This machine's architecture as ARCH_LEVEL_FLAGS names it (AMD64 and arm64 included)."""
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def _level_flags() -> dict[str, tuple[str, ...]]:
    return ARCH_LEVEL_FLAGS.get(_arch(), {})


def levels() -> tuple[str, ...]:
    """This architecture's kernel levels, lowest ("none") first."""
    return ("none", *_level_flags())


LEVELS = levels()  # this machine's levels and their flags, as at import
LEVEL_FLAGS = _level_flags()


@dataclass(frozen=True)
class Kernel:
    source: str
    level: str  # the lowest level that runs it
    cpu_flags: tuple[str, ...]  # as /proc/cpuinfo spells them
    cflags: tuple[str, ...]
    function: str  # the entry point; returns int, 0 on success
    argtypes: tuple
    init: str | None = None  # called once after loading; nonzero means unusable
    # tuning: (CPU, more cflags), the CPU as "vendor_id" or "vendor_id/cpu family"; the most
    # specific match counts
    vendor_cflags: tuple[tuple[str, tuple[str, ...]], ...] = ()


FMA_LEVEL = ARCH_FMA_LEVEL.get(_arch(), "none")  # this machine's best linear_fma.c variant

# linear_fma.c: x, w, q8, scale, bias, y, rows, n_out, k_in, threads, kinds
_LINEAR_ARGS = (_PTR, _PTR, _INT, _PTR, _PTR, _PTR) + (_I64,) * 3 + (_INT,) * 2

KERNELS = {
    "linear_avx2": Kernel(
        "linear_fma.c",
        "avx2",
        ("avx2", "fma", "f16c"),
        ("-mavx2", "-mfma", "-mf16c"),
        "rgemma_linear_avx2",
        _LINEAR_ARGS,
    ),
    # The same source with 16-lane vectors; it needs only AVX-512F, but runs at the "avx512" level.
    "linear_avx512": Kernel(
        "linear_fma.c",
        "avx512",
        ("avx512f", "avx2", "fma", "f16c"),
        ("-mavx512f", "-mavx2", "-mfma", "-mf16c", "-DVW=16"),
        "rgemma_linear_avx512",
        _LINEAR_ARGS,
    ),
    # The same source on vdpbf16ps: bf16 activations only (they are its exact inputs).
    "linear_avx512bf16": Kernel(
        "linear_fma.c",
        "avx512bf16",
        ("avx512f", "avx512bw", "avx512_bf16", "avx2", "fma", "f16c"),
        ("-mavx512f", "-mavx512bw", "-mavx512bf16", "-mavx2", "-mfma", "-mf16c", "-DVW=16", "-DDPBF16")
        + ("-DNB=8", "-DRB=4"),  # tiles of 8 x 4 (bench/gemv_levels.py)
        "rgemma_linear_avx512bf16",
        _LINEAR_ARGS,
    ),
    # The same source on aarch64 (baseline ARMv8-A: NEON is part of it).
    "linear_neon": Kernel(
        "linear_fma.c",
        "neon",
        ("asimd",),
        ("-march=armv8-a",),
        "rgemma_linear_neon",
        _LINEAR_ARGS,
    ),
    "int8_gemv": Kernel(
        "int8_gemv.c",
        "avx512",
        ("avx512f", "avx512bw", "avx512vl", "avx512_vnni"),
        ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"),
        "rgemma_int8_gemv",
        (_PTR,) * 5 + (_I64,) * 3 + (_INT,) * 2,
        # AMD Zen 4 (family 25) streams the weight rows faster without the software prefetch
        # (26.0 against 22.9 GB/s on the 2B's LM head, one row, alternating); Zen 5 (family 26)
        # and Intel faster with it (Zen 5: 38.7 against 34.6 GB/s, 512 or 1024 bytes ahead)
        vendor_cflags=(("AuthenticAMD/25", ("-DPREFETCH=0",)),),
    ),
    # quantize.c: w, kinds, scale, q, rows, cols, threads; plain C, vectorized per level.
    "quantize_avx2": Kernel(
        "quantize.c",
        "avx2",
        ("avx2",),
        ("-mavx2", "-ffp-contract=off"),
        "rgemma_quantize_rows",
        (_PTR, _INT, _PTR, _PTR, _I64, _I64, _INT),
    ),
    "quantize_avx512": Kernel(
        "quantize.c",
        "avx512",
        ("avx512f", "avx512bw"),
        ("-mavx512f", "-mavx512bw", "-ffp-contract=off"),
        "rgemma_quantize_rows",
        (_PTR, _INT, _PTR, _PTR, _I64, _I64, _INT),
    ),
    # Linux (5.16+) hands out AMX state only on request: rgemma_amx_init asks for it.
    "amx_linear": Kernel(
        "amx_linear.c",
        "amx",
        ("avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_tile", "amx_bf16"),
        ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-mamx-tile", "-mamx-bf16"),
        "rgemma_amx_linear",
        (_PTR, _PTR, _INT) + (_PTR,) * 3 + (_I64,) * 3 + (_INT,),
        init="rgemma_amx_init",
    ),
}


def cpu_features() -> tuple[str, ...]:
    """The CPU flags the kernels look for that this CPU has, in level order."""
    have = set(_cpu_flags())
    return tuple(f for flags in _level_flags().values() for f in flags if f in have)


def cpu_level() -> str:
    """The highest level this CPU's features allow (each level needs the flags of those below)."""
    have, found = set(_cpu_flags()), "none"
    for name, flags in _level_flags().items():
        if not have.issuperset(flags):
            break
        found = name
    return found


def level() -> str:
    """The level the kernels run at: the CPU's, capped by RGEMMA_KERNEL_LEVEL, "none" under
    RGEMMA_NATIVE=0. The variables are read on every call, so a test can set either."""
    native, cap = os.environ.get("RGEMMA_NATIVE", "1"), os.environ.get("RGEMMA_KERNEL_LEVEL") or ""
    return _level(native, cap, _cpu_flags, platform.machine)


@functools.lru_cache(maxsize=64)
def _level(native: str, cap: str, flags_source, machine_source) -> str:
    """level() for these variables, memoized: each decode product asks several times. The
    sources of the CPU flags and architecture are part of the key, so a test that fakes a CPU
    (replacing either function) gets its own answer."""
    if native == "0":
        return "none"
    return _cap(cpu_level(), cap or levels()[-1])


def _cap(found: str, limit: str) -> str:
    here = levels()
    if limit not in here:
        raise ValueError(f"unknown kernel level {limit!r} on {_arch()}; the levels are {', '.join(here)}")
    return min(found, limit, key=here.index)


def available(name: str, at: str | None = None) -> bool:
    """Whether kernel `name` runs at level `at` (default `level()`, and never above it): the CPU
    has its features, the level allows it, and it built and loaded. False for a kernel of another
    architecture."""
    return _runs(name, level() if at is None else _cap(level(), at))


def _runs(name: str, limit: str) -> bool:
    """Whether kernel `name` is at or below level `limit` here, and built and loaded."""
    here, need = levels(), KERNELS[name].level
    return need in here and here.index(need) <= here.index(limit) and _library(name) is not None


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd would record a product of `tensors`: then the native kernels (which
    have no backward) must not run."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def int8_gemv_available() -> bool:
    return available("int8_gemv")


def amx_available() -> bool:
    return available("amx_linear")


# The CPU flags with which torch's GEMM in each half dtype runs natively (oneDNN); without
# them it widens inside the GEMM and runs several times slower than float32 (README, Speed).
HALF_GEMM_FLAGS = {torch.bfloat16: ("avx512_bf16", "amx_bf16"), torch.float16: ("avx512_fp16", "amx_fp16")}


def fast_half_gemm(dtype: torch.dtype) -> bool:
    """Whether this CPU has a native GEMM for `dtype` (bf16: AVX512-BF16 or AMX-BF16; fp16:
    AVX512-FP16 or AMX-FP16); float32 always counts as native. By the CPU's flags alone, so
    RGEMMA_KERNEL_LEVEL (which caps rgemma's kernels, not torch's) does not change it."""
    flags = HALF_GEMM_FLAGS.get(dtype)
    return flags is None or any(f in _cpu_flags() for f in flags)


def linear(
    x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, *, level: str | None = None
) -> torch.Tensor | None:
    """F.linear(x, w, bias) for a bf16 or float32 weight w (out, in) and x (..., in) bf16 or
    float32 on the CPU, through the best native kernel at `level` (default, and at most,
    `level()`; float32 weights take the FMA kernels, avx2, avx512 or neon): the exact
    product x.float() @ w.float().T + bias in fp32, rounded once to x's dtype (at "amx", bf16
    activations take amx_linear, which reads bias as bf16). None when no kernel takes these
    inputs (another dtype or device, autograd recording, no kernel at this level); ValueError
    when the widths do not match."""
    name = _choose(x, w, level)
    if name is None or w.dtype not in (torch.bfloat16, torch.float32):
        return None
    if name == "amx_linear":
        return amx_linear(x, w, None, bias)
    return _linear_fma(name, x, w, None, bias)


def int8_linear(
    x: torch.Tensor,
    q: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    level: str | None = None,
) -> torch.Tensor | None:
    """x (..., in) @ (q int8 (out, in) * scale (out,))^T + bias, as `linear`: the exact product
    x.float() @ q.float().T * scale + bias in fp32, rounded once to x's dtype (bf16 or float32),
    or None when no kernel takes these inputs (at "amx", bf16 activations take amx_linear, which
    reads scale and bias as bf16). int8_gemv, which rounds x to 14 bits first, is not among
    the kernels it picks."""
    name = _choose(x, q, level)
    if name is None or q.dtype != torch.int8:
        return None
    if name == "amx_linear":
        return amx_linear(x, q, scale, bias)
    return _linear_fma(name, x, q, scale, bias)


def chosen(x: torch.Tensor, w: torch.Tensor, level: str | None = None) -> str | None:
    """The kernel `linear` / `int8_linear` would run for x and w (bf16 or int8), or None."""
    return _choose(x, w, level)


def _choose(x: torch.Tensor, w: torch.Tensor, at: str | None) -> str | None:
    _check_widths(x, w)  # first, whatever runs
    if (
        x.device.type != "cpu"
        or w.device.type != "cpu"
        or x.dtype not in (torch.bfloat16, torch.float32)
        or w.dtype not in (torch.bfloat16, torch.int8, torch.float32)
        or needs_grad(x, w)
    ):
        return None
    names = ["linear_avx512", "linear_avx2", "linear_neon"]
    if x.dtype == torch.bfloat16 and w.dtype != torch.float32:
        names[:0] = ["amx_linear", "linear_avx512bf16"]
    limit = level() if at is None else _cap(level(), at)
    return next((name for name in names if _runs(name, limit)), None)


def _linear_fma(
    name: str, x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor | None, bias: torch.Tensor | None
) -> torch.Tensor:
    xc, wc = x.contiguous(), w.contiguous()
    sc = _native(scale) if scale is not None else None
    bc = _native(bias) if bias is not None else None
    y, rows, n_out, k_in = _output(xc, wc, xc.dtype)
    if y.numel() == 0:
        return y
    bf16 = torch.bfloat16
    kinds = (
        (xc.dtype == bf16)
        | (sc is not None and sc.dtype == bf16) << 1
        | (bc is not None and bc.dtype == bf16) << 2
        | (y.dtype == bf16) << 3
    )
    status = getattr(_library(name), KERNELS[name].function)(
        xc.data_ptr(),
        wc.data_ptr(),
        _WEIGHT_KINDS[wc.dtype],
        sc.data_ptr() if sc is not None else None,
        bc.data_ptr() if bc is not None else None,
        y.data_ptr(),
        rows,
        n_out,
        k_in,
        _threads(wc.nbytes, rows),
        kinds,
    )
    if status == -2:
        raise ValueError(f"{name} does not take {xc.dtype} activations with {wc.dtype} weights")
    if status != 0:
        raise MemoryError(f"{name}: out of memory for the fp32 activations")
    return y


_WEIGHT_KINDS = {torch.bfloat16: 0, torch.int8: 1, torch.float32: 2}  # linear_fma.c's wk
THREAD_BYTES = 4 << 20  # weight bytes (per 8 rows) below which another thread costs more than it gives


def _threads(weight_bytes: int, rows: int) -> int:
    """Threads for a product: torch's count, fewer for a small one, where starting and joining a
    thread (a barrier; far longer when another process holds a core) outweighs its share."""
    work = weight_bytes * -(-rows // 8)
    return max(1, min(torch.get_num_threads(), work // THREAD_BYTES))


def int8_gemv(
    x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """x (..., in) float @ (q int8 (out, in) * scale (out,))^T + bias, as (..., out) in x's
    dtype when that is bfloat16 or float32 (else float32). The kernel reads and writes both
    dtypes itself, so a bf16 call converts nothing. Call only when int8_gemv_available();
    every tensor on the CPU."""
    lib = _library("int8_gemv")
    xc, sc = _native(x), _native(scale)
    bc = _native(bias) if bias is not None else None
    y, rows, n_out, k_in = _output(xc, q, xc.dtype)
    bf16 = torch.bfloat16
    kinds = (
        (xc.dtype == bf16)
        | (sc.dtype == bf16) << 1
        | (bc is not None and bc.dtype == bf16) << 2
        | (y.dtype == bf16) << 3
    )
    status = lib.rgemma_int8_gemv(
        xc.data_ptr(),
        q.contiguous().data_ptr(),
        sc.data_ptr(),
        bc.data_ptr() if bc is not None else None,
        y.data_ptr(),
        rows,
        n_out,
        k_in,
        torch.get_num_threads(),
        kinds,
    )
    if status != 0:
        raise MemoryError("int8_gemv: out of memory for the quantized activations")
    return y


def quantize_rows(
    w: torch.Tensor, scale_dtype: torch.dtype, *, level: str | None = None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """w (out, in) bf16 or float32 on the CPU -> (q int8 (out, in), scale (out,) bf16 or float32)
    through quantize.c at `level` (default, and at most, `level()`): bit for bit
    rgemma.accel.quantize's reference. None when no kernel takes these inputs (another dtype,
    device or rank, or no kernel at this level)."""
    names = [n for n in ("quantize_avx512", "quantize_avx2") if available(n, level)]
    if (
        not names
        or w.device.type != "cpu"
        or w.ndim != 2
        or w.dtype not in (torch.bfloat16, torch.float32)
        or scale_dtype not in (torch.bfloat16, torch.float32)
    ):
        return None
    wc = w.detach().contiguous()
    q = torch.empty(wc.shape, dtype=torch.int8)
    scale = torch.empty(wc.shape[0], dtype=scale_dtype)
    if q.numel():
        kinds = (wc.dtype == torch.bfloat16) | (scale_dtype == torch.bfloat16) << 1
        threads = max(1, min(torch.get_num_threads(), wc.nbytes // THREAD_BYTES))
        _library(names[0]).rgemma_quantize_rows(
            wc.data_ptr(), kinds, scale.data_ptr(), q.data_ptr(), wc.shape[0], wc.shape[1], threads
        )
    return q, scale


def _native(t: torch.Tensor) -> torch.Tensor:
    """`t` as a contiguous bfloat16 or float32 tensor, the two dtypes the kernel reads."""
    return (t if t.dtype in (torch.bfloat16, torch.float32) else t.float()).contiguous()


def _output(x: torch.Tensor, w: torch.Tensor, dtype: torch.dtype):
    """The empty (..., out) result of x (..., in) times w (out, in)^T, and (rows, out, in):
    the sizes the kernels take. A mismatch is an error here, not a read out of bounds there."""
    _check_widths(x, w)
    n_out, k_in = w.shape
    return torch.empty(*x.shape[:-1], n_out, dtype=dtype), math.prod(x.shape[:-1]), n_out, k_in


def _check_widths(x: torch.Tensor, w: torch.Tensor) -> None:
    if w.ndim != 2 or x.ndim == 0 or x.shape[-1] != w.shape[1]:
        raise ValueError(
            f"inputs of shape {tuple(x.shape)} do not match a weight of shape {tuple(w.shape)} (out, in)"
        )


def amx_linear(
    x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor | None = None, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """x (..., in) bf16 @ w^T [* scale] + bias -> (..., out) bf16, with w (out, in) bf16, or
    int8 with `scale` (out,). Call only when amx_available(); every tensor on the CPU."""
    lib = _library("amx_linear")
    if x.dtype != torch.bfloat16 or w.dtype not in (torch.bfloat16, torch.int8):
        raise ValueError(f"amx_linear takes bf16 activations and bf16/int8 weights, got {x.dtype}, {w.dtype}")
    if (w.dtype == torch.int8) != (scale is not None):
        raise ValueError("amx_linear needs a scale exactly when the weight is int8")
    xc, wc, sc, bc = x.contiguous(), w.contiguous(), _bf16(scale), _bf16(bias)
    y, rows, n_out, k_in = _output(xc, wc, torch.bfloat16)
    status = lib.rgemma_amx_linear(
        xc.data_ptr(),
        wc.data_ptr(),
        int(wc.dtype == torch.int8),
        sc.data_ptr() if sc is not None else None,
        bc.data_ptr() if bc is not None else None,
        y.data_ptr(),
        rows,
        n_out,
        k_in,
        torch.get_num_threads(),
    )
    if status != 0:
        raise MemoryError("amx_linear: out of memory for its buffers")
    return y


def _bf16(t: torch.Tensor | None) -> torch.Tensor | None:
    if t is None:
        return None
    return (t if t.dtype == torch.bfloat16 else t.to(torch.bfloat16)).contiguous()


@functools.cache
def _library(name: str) -> ctypes.CDLL | None:
    kernel = KERNELS[name]
    if os.environ.get("RGEMMA_NATIVE", "1") == "0" or not _cpu_supported(kernel.cpu_flags):
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    try:
        lib = ctypes.CDLL(str(_build(compiler, kernel)))
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"rgemma: native kernel {name} unavailable ({exc}); using torch's", file=sys.stderr)
        return None
    entry = getattr(lib, kernel.function)
    entry.restype, entry.argtypes = _INT, list(kernel.argtypes)
    if kernel.init is not None and getattr(lib, kernel.init)() != 0:
        return None
    return lib


def _cpu_supported(flags_needed: tuple[str, ...]) -> bool:
    return set(_cpu_flags()).issuperset(flags_needed)


def _vendor() -> str:
    """/proc/cpuinfo's vendor_id (GenuineIntel, AuthenticAMD), or "" where there is none."""
    return _cpuinfo("vendor_id")


def _tuning(kernel: Kernel) -> list[str]:
    """The kernel's tuning flags for this CPU: those for its vendor and family, else its vendor."""
    table = dict(kernel.vendor_cflags)
    for key in (f"{_vendor()}/{_cpuinfo('cpu family')}", _vendor()):
        if key in table:
            return list(table[key])
    return []


def cpu_model() -> str:
    """/proc/cpuinfo's model name (x86) or CPU part (ARM), or "" where there is none."""
    return _cpuinfo("model name") or _cpuinfo("CPU part")


@functools.cache
def _cpuinfo(field: str) -> str:
    """The first value of `field` in /proc/cpuinfo, or ""."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    found = (line.split(":", 1)[1].strip() for line in lines if line.split(":", 1)[0].strip() == field)
    return next(found, "")


@functools.cache
def _cpu_flags() -> tuple[str, ...]:
    """/proc/cpuinfo's flags on x86-64 Linux, its Features on aarch64 Linux; none elsewhere."""
    key = CPUINFO_FLAGS.get(_arch())
    return tuple(_cpuinfo(key).split()) if key is not None else ()


def build_command(compiler: str, kernel: Kernel) -> list[str]:
    """The compiler command for `kernel` on this CPU (its vendor's tuning flags included), less
    the output file."""
    # Link against the OpenMP runtime torch already loaded, so both share one thread pool.
    gomp = Path(torch.__file__).parent / "lib" / "libgomp.so.1"
    link = [str(gomp)] if gomp.exists() else []
    tuned = _tuning(kernel)
    return [compiler, *BASE_FLAGS, *kernel.cflags, *tuned, str(HERE / kernel.source), *link]


def _build(compiler: str, kernel: Kernel) -> Path:
    """Compile the kernel once per (source, headers, command) into the cache; return the
    library's path."""
    source, command = HERE / kernel.source, build_command(compiler, kernel)
    headers = b"".join(h.read_bytes() for h in sorted(HERE.glob("*.h")))  # what the sources include
    key = hashlib.sha256(source.read_bytes() + headers + " ".join(command).encode()).hexdigest()[:16]
    cache = cache_root() / "kernels"
    target = cache / f"{source.stem}-{key}.so"
    if target.exists():
        return target
    with atomic_file(target) as tmp:
        subprocess.run([*command, "-o", str(tmp)], check=True, capture_output=True, timeout=120)
    return target
