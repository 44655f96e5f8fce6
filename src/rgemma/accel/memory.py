"""Process memory readings and the C library, shared by the commands, the benchmark and
conversion (Linux reads /proc; elsewhere the readings fall back to getrusage or a guess)."""

from __future__ import annotations

import ctypes
import functools
import os
import re
import resource
from pathlib import Path

import torch


@functools.cache
def libc() -> ctypes.CDLL | None:
    """The C library this process runs on (errno kept), or None where it cannot be loaded."""
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def peak_rss_mb() -> float:
    """The resident set's high-water mark in MiB (since start, or since reset_peak_rss)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def reset_peak_rss() -> None:
    """Start a new peak: hand freed heap back to the OS first (else memory freed by an earlier
    phase, a long prefill say, still counts as resident), then reset the high-water mark."""
    trim = getattr(libc(), "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not Linux: the peak is then the process's since it started


def peak_memory_mb() -> float:
    """What the commands report: the CUDA allocator's peak when a GPU was used, else the RSS's."""
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated():
        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss_mb()


def rss_bytes() -> int | None:
    """The resident set now, or None where /proc is missing."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def meminfo_gb(key: str, default: float = 16.0) -> float:
    """A /proc/meminfo field (MemTotal, MemAvailable, ...) in GiB; `default` off Linux."""
    try:
        text = Path("/proc/meminfo").read_text()
        return int(re.search(rf"{key}:\s+(\d+)", text).group(1)) / 2**20
    except (OSError, AttributeError):
        return default
