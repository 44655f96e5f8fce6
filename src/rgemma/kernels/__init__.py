"""Native CPU kernels, compiled from C on first use and cached; optional by design.

`int8_gemv(x, q, scale, bias)`: the int8 weight-only product for decode-sized inputs
(int8_gemv.c), used by rgemma.quantize. It needs an x86-64 CPU with AVX-512 (F, BW, VL, VNNI)
and a C compiler (`$CC`, else cc or gcc); `int8_gemv_available()` says whether it loaded, and
rgemma.quantize uses torch's kernels when it did not. RGEMMA_NATIVE=0 turns it off. The shared
library is built once into $RGEMMA_CACHE/kernels (default ~/.cache/rgemma/kernels), named by a
hash of the source and the build command, and written atomically, so concurrent first uses
cannot see half a file.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("int8_gemv.c")
CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_vnni")
CFLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-fopenmp", "-shared", "-fPIC"]


def int8_gemv_available() -> bool:
    return _library() is not None


def int8_gemv(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor,
              bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (rows, in) float @ (q int8 (out, in) * scale (out,))^T + bias, in float32 (rows, out).
    Call only when int8_gemv_available(); every tensor on the CPU."""
    lib = _library()
    xf = x.to(torch.float32).contiguous()
    sf = scale.to(torch.float32).contiguous()
    bf = bias.to(torch.float32).contiguous() if bias is not None else None
    rows, (n_out, k_in) = xf.shape[0], q.shape
    y = torch.empty(rows, n_out, dtype=torch.float32)
    status = lib.rgemma_int8_gemv(xf.data_ptr(), q.contiguous().data_ptr(), sf.data_ptr(),
                                  bf.data_ptr() if bf is not None else None, y.data_ptr(),
                                  rows, n_out, k_in, torch.get_num_threads())
    if status != 0:
        raise MemoryError("int8_gemv: out of memory for the quantized activations")
    return y


@functools.cache
def _library() -> ctypes.CDLL | None:
    if os.environ.get("RGEMMA_NATIVE", "1") == "0" or not _cpu_supported():
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    try:
        lib = ctypes.CDLL(str(_build(compiler)))
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"rgemma: native int8 kernel unavailable ({exc}); using torch's", file=sys.stderr)
        return None
    lib.rgemma_int8_gemv.restype = ctypes.c_int
    lib.rgemma_int8_gemv.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 3 + [ctypes.c_int]
    return lib


def _cpu_supported() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return all(f in flags for f in CPU_FLAGS)


def _build(compiler: str) -> Path:
    """Compile SOURCE once per (source, command) into the cache; return the library's path."""
    # Link against the OpenMP runtime torch already loaded, so both share one thread pool.
    gomp = Path(torch.__file__).parent / "lib" / "libgomp.so.1"
    link = [str(gomp)] if gomp.exists() else []
    command = [compiler, *CFLAGS, str(SOURCE), *link]
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(command).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("RGEMMA_CACHE", Path.home() / ".cache" / "rgemma")) / "kernels"
    target = cache / f"int8_gemv-{key}.so"
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
