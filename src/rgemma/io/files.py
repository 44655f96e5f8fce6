"""Checking a path the user gave before reading it: one message for each way it can be wrong;
and where rgemma keeps what it builds or measures once per machine (`cache_root`)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$RGEMMA_CACHE, else ~/.cache/rgemma: compiled kernels, measured crossovers, bench
    checkpoints. Read on every call, so a test can point it elsewhere."""
    return Path(os.environ.get("RGEMMA_CACHE") or Path.home() / ".cache" / "rgemma")


def require_file(path: str | Path, what: str) -> Path:
    """`path` (with ~ expanded), if it exists and is not a directory; `what` names it in the
    error ("state file", "prompt file"...). Pipes and devices pass: `-f <(cmd)` reads fine."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a directory, not a file")
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def require_dir(path: str | Path, what: str) -> Path:
    """`path` (with ~ expanded), if it is a directory; else an error naming `what`."""
    path = Path(path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{what} {path} is a file, not a directory")
    raise FileNotFoundError(f"{what} does not exist: {path}")
