"""Native CPU kernels, compiled from C on first use and cached; optional by design.

- `int8_gemv(x, q, scale, bias)` (int8_gemv.c): the int8 weight-only product for one to a few
  rows, AVX-512 VNNI, close to memory speed. Needs AVX-512 F, BW, VL and VNNI.
- `amx_linear(x, w, scale, bias)` (amx_linear.c): bf16 activations times bf16 or int8
  weights for decode batches (2 to ~128 rows) on AMX tiles; its int8 path is what makes an
  int8 model as fast as bf16 at batch 8-32 (torch has no fast kernel there). Needs AMX-BF16.

rgemma.accel (quantize, linears) uses them; `int8_gemv_available()` / `amx_available()` say
whether each loaded, and torch's kernels run when not. Building needs a C compiler (`$CC`, else
cc or gcc). RGEMMA_NATIVE=0 turns both off. Each shared library is built once into
$RGEMMA_CACHE/kernels (default ~/.cache/rgemma/kernels), named by a hash of the source and the
build command, and written atomically, so concurrent first uses cannot see half a file.
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
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).parent
BASE_FLAGS = ["-O3", "-fopenmp", "-shared", "-fPIC"]


_PTR, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int


@dataclass(frozen=True)
class Kernel:
    source: str
    cpu_flags: tuple[str, ...]  # as /proc/cpuinfo spells them
    cflags: tuple[str, ...]
    function: str  # the entry point; returns int, 0 on success
    argtypes: tuple
    init: str | None = None  # called once after loading; nonzero means unusable


KERNELS = {
    "int8_gemv": Kernel(
        "int8_gemv.c",
        ("avx512f", "avx512bw", "avx512vl", "avx512_vnni"),
        ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"),
        "rgemma_int8_gemv",
        (_PTR,) * 5 + (_I64,) * 3 + (_INT,) * 2,
    ),
    # Linux (5.16+) hands out AMX state only on request: rgemma_amx_init asks for it.
    "amx_linear": Kernel(
        "amx_linear.c",
        ("avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_tile", "amx_bf16"),
        ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-mamx-tile", "-mamx-bf16"),
        "rgemma_amx_linear",
        (_PTR, _PTR, _INT) + (_PTR,) * 3 + (_I64,) * 3 + (_INT,),
        init="rgemma_amx_init",
    ),
}


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd would record a product of `tensors`: then the native kernels (which
    have no backward) must not run."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def int8_gemv_available() -> bool:
    return _library("int8_gemv") is not None


def amx_available() -> bool:
    return _library("amx_linear") is not None


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


def _native(t: torch.Tensor) -> torch.Tensor:
    """`t` as a contiguous bfloat16 or float32 tensor, the two dtypes the kernel reads."""
    return (t if t.dtype in (torch.bfloat16, torch.float32) else t.float()).contiguous()


def _output(x: torch.Tensor, w: torch.Tensor, dtype: torch.dtype):
    """The empty (..., out) result of x (..., in) times w (out, in)^T, and (rows, out, in):
    the sizes the kernels take. A mismatch is an error here, not a read out of bounds there."""
    n_out, k_in = w.shape
    if x.ndim == 0 or x.shape[-1] != k_in:
        raise ValueError(
            f"inputs of shape {tuple(x.shape)} do not match a weight of shape {tuple(w.shape)} (out, in)"
        )
    return torch.empty(*x.shape[:-1], n_out, dtype=dtype), math.prod(x.shape[:-1]), n_out, k_in


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
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return all(f in flags for f in flags_needed)


def _build(compiler: str, kernel: Kernel) -> Path:
    """Compile the kernel once per (source, command) into the cache; return the library's path."""
    # Link against the OpenMP runtime torch already loaded, so both share one thread pool.
    gomp = Path(torch.__file__).parent / "lib" / "libgomp.so.1"
    link = [str(gomp)] if gomp.exists() else []
    source = HERE / kernel.source
    command = [compiler, *BASE_FLAGS, *kernel.cflags, str(source), *link]
    key = hashlib.sha256(source.read_bytes() + " ".join(command).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("RGEMMA_CACHE", Path.home() / ".cache" / "rgemma")) / "kernels"
    target = cache / f"{source.stem}-{key}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".so.tmp")
    os.close(fd)
    try:
        subprocess.run([*command, "-o", tmp], check=True, capture_output=True, timeout=120)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
