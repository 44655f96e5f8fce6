"""Checking a path the user gave before reading it: one message for each way it can be wrong."""

from __future__ import annotations

from pathlib import Path


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
