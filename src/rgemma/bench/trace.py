"""What ran: the CPU features and kernel level a benchmark ran at, and which of rgemma's
kernels one call of a measure used (`traced`), for the report beside each figure."""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

import torch

from rgemma import kernels
from rgemma.accel import linears, quantize


def kernel_info() -> dict:
    """The CPU flags rgemma's kernels look for, the level they run at, and whether torch's
    bf16 GEMM is native here (else half-precision prefill runs in fp32 tiles)."""
    return {
        "cpu_features": list(kernels.cpu_features()),
        "kernel_level": kernels.level(),
        "bf16_gemm": "native"
        if kernels.fast_half_gemm(torch.bfloat16)
        else "widened (prefill in fp32 tiles)",
    }


def kernel_line(info: dict) -> str:
    features = " ".join(info.get("cpu_features") or ["none"])
    level, gemm = info.get("kernel_level"), info.get("bf16_gemm")
    return f"cpu features: {features}; kernel level: {level}; bf16 GEMM: {gemm}"


@contextmanager
def traced():
    """Counts, by name, the rgemma kernels that run inside the block (the FMA kernels by level,
    e.g. linear_avx2; fp32_tiles for prefill tiles). Products that ran none of them ran torch's.
    Wraps the module functions the accel code calls; for one untimed call, not a timed run."""
    seen: Counter = Counter()
    saved = []

    def wrap(module, name, label):
        fn = getattr(module, name)

        def spy(*args, **kwargs):
            y = fn(*args, **kwargs)
            if y is not None:
                seen[label(args, kwargs)] += 1
            return y

        saved.append((module, name, fn))
        setattr(module, name, spy)

    def fma(args, kwargs):
        return kernels.chosen(args[0], args[1], kwargs.get("level")) or "native"

    wrap(kernels, "linear", fma)
    wrap(kernels, "int8_linear", fma)
    wrap(kernels, "amx_linear", lambda a, k: "amx_linear")
    wrap(kernels, "int8_gemv", lambda a, k: "int8_gemv")
    wrap(linears, "fp32_tiles", lambda a, k: "fp32_tiles")
    wrap(quantize, "fp32_tiles", lambda a, k: "fp32_tiles")
    try:
        yield seen
    finally:
        for module, name, fn in reversed(saved):
            setattr(module, name, fn)


def summary(seen: Counter) -> str:
    """ "torch" when no rgemma kernel ran, else the kernels by use, most first ("+torch" is not
    implied: products outside these kernels, e.g. attention, always run torch's)."""
    return "+".join(name for name, _ in seen.most_common()) or "torch"
