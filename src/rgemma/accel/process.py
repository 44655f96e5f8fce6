"""Process-wide CPU settings (not per model: the allocator and the thread pool are the process's)."""

from __future__ import annotations

import torch

from rgemma.accel.memory import libc

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def set_threads(n: int | None) -> int:
    """Use `n` intra-op CPU threads (None leaves torch's default); returns the count in force."""
    if n is not None:
        if n < 1:
            raise ValueError(f"threads must be at least 1, got {n}")
        torch.set_num_threads(n)
    return torch.get_num_threads()


def reuse_memory() -> bool:
    """Make glibc serve allocations up to 1 GiB from its heap and never trim freed memory back
    to the OS (mallopt), process-wide. Without it, blocks over 32 MiB are mmap'd afresh on
    every allocation and page-fault in 4 KiB at a time: a 2B decode step at batch 32 builds
    several such logits-sized tensors. Memory freed stays mapped for reuse, so RSS holds its
    peak: call it once the model is loaded (and quantized), so that those steps' big
    temporaries go back to the OS. Returns whether it applied (False off glibc)."""
    mallopt = getattr(libc(), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30) and mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))
