"""Choices between equal-valued paths that only a measurement on this machine can make.

`gemm_rows(dtype)`: where torch's bf16 GEMM overtakes rgemma's FMA kernels. For a few rows the
FMA kernels (kernels.linear) beat torch: they stream the weight at memory speed. For more rows
a product becomes bound by arithmetic, and then a CPU whose torch GEMM is native in bf16
(oneDNN on AVX-512 BF16, say) can be faster (on a Zen 5 core from 16 rows). CPU flags do not
tell: a VM that shows AVX-512 BF16 but hides AMX ran torch's bf16 GEMM slower than its float32
one. So the first product of more than MIN_ROWS rows times both on one weight at rows 16, 32,
64, 128 and keeps the most rows for which the FMA kernel was still no slower than torch
(within TOLERANCE). The answer is cached per CPU, thread count, torch version and kernel level
in $RGEMMA_CACHE/crossover.json (default ~/.cache/rgemma), written atomically;
RGEMMA_GEMM_ROWS=N sets it instead. rgemma.accel.linears asks only for bf16: float32 stays on
the FMA kernel, whose sums do not depend on the batch (the float32 server's determinism).

`faster_tanh(dtype)`: the soft cap's bf16/fp16 tanh computed in float32 and rounded back, or
torch's own tanh in that dtype (the same values). Which is faster depends on the CPU's vector
code (the float32 detour wins on Sapphire Rapids, loses on Zen 5); timed once per process on a
few rows of logits, in about a millisecond.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import time
from pathlib import Path

import torch

from rgemma import kernels
from rgemma.io.atomic import atomic_file
from rgemma.io.files import cache_root
from rgemma.models.griffin import tanh_fp32

MIN_ROWS = 8  # up to this many rows the FMA kernel always runs: it reads the weight at memory speed
LADDER = (16, 32, 64, 128)  # the row counts timed above MIN_ROWS
SHAPE = (4096, 2560)  # (out, in) of the weight timed: a 2B-sized product
ROUNDS = 3  # alternating rounds; the best time of each counts
TOLERANCE = 1.05  # the FMA kernel keeps a row count unless torch is faster by more than this


def gemm_rows(dtype: torch.dtype) -> int:
    """The most rows of `dtype` (bf16 or float32) activations against a weight of the same
    dtype that the FMA kernels should take on this machine, at least MIN_ROWS; more go to
    torch's GEMM. RGEMMA_GEMM_ROWS overrides it."""
    forced = os.environ.get("RGEMMA_GEMM_ROWS")
    if forced:
        if not forced.isdigit():
            raise ValueError(f"RGEMMA_GEMM_ROWS must be a count of rows (0 or more), got {forced!r}")
        return int(forced)
    return _cached(dtype, torch.get_num_threads(), kernels.level())


@functools.cache
def _cached(dtype: torch.dtype, threads: int, level: str) -> int:
    key = _key(dtype, threads, level)
    path = cache_path()
    table = _read(path)
    if not isinstance(table.get(key), int):
        rows = measure(dtype)
        table = {**_read(path), key: rows}  # read again: another process may have written meanwhile
        _write(path, table)
    return table[key]


def cache_path() -> Path:
    return cache_root() / "crossover.json"


def _key(dtype: torch.dtype, threads: int, level: str) -> str:
    cpu = f"{platform.machine()} {kernels.cpu_model()} {' '.join(kernels.cpu_features())}"
    digest = hashlib.sha256(cpu.encode()).hexdigest()[:12]
    name = str(dtype).removeprefix("torch.")
    return f"{name}|{level}|threads={threads}|torch={torch.__version__}|cpu={digest}"


def measure(dtype: torch.dtype, shape: tuple[int, int] = SHAPE) -> int:
    """The largest row count of LADDER (MIN_ROWS at least) up to which the FMA kernel was no
    slower than torch's GEMM (W @ x^T, as the decode path calls it) within TOLERANCE."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(shape, generator=g).to(dtype)
    best = MIN_ROWS
    for rows in LADDER:
        x = torch.randn(rows, shape[1], generator=g).to(dtype)
        native, gemm = _race(lambda x=x: kernels.linear(x, w), lambda x=x: torch.mm(w, x.t()))
        if native is None or native > TOLERANCE * gemm:
            break
        best = rows
    return best


TANH_SHAPE = (4, 65536)  # logits timed by faster_tanh


def faster_tanh(dtype: torch.dtype) -> str:
    """ "fp32" or "dtype" (rgemma.accel.choices.TANHS), whichever computed tanh faster on
    TANH_SHAPE logits of `dtype` here, at the current thread count; "fp32" for float32 (the
    two are one)."""
    if dtype not in (torch.bfloat16, torch.float16):
        return "fp32"
    return _faster_tanh(dtype, torch.get_num_threads())


@functools.cache
def _faster_tanh(dtype: torch.dtype, threads: int) -> str:
    x = torch.randn(TANH_SHAPE, generator=torch.Generator().manual_seed(0)).to(dtype)
    widened, native = _race(lambda: tanh_fp32(x), lambda: torch.tanh(x))
    return "fp32" if widened <= native else "dtype"


def _race(a, b) -> tuple[float | None, float]:
    """Best seconds of a() and b() over alternating rounds (None where a() has no kernel)."""
    if a() is None:
        return None, 0.0
    b()
    times = ([], [])
    for _ in range(ROUNDS):
        for fn, out in ((a, times[0]), (b, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return min(times[0]), min(times[1])


def _read(path: Path) -> dict:
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def _write(path: Path, table: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass  # a read-only cache: measured again by the next process
