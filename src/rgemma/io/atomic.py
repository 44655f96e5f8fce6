"""Atomic writes: a file or a directory appears whole, or not at all.

Both writers build their output in a temp sibling named `.NAME.tmp-PID-XXXX` (PID: the writing
process) and rename it into place when the block succeeds. A process killed mid-write leaves its
temp behind; the next writer of the same NAME removes such leftovers of processes that are no
longer alive (a live writer's temp is never touched).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rgemma.io.checkpoint_files import is_weight_file


@contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """Yields a temp file path beside `target` (an empty file); on success the file gets
    ordinary permissions and replaces `target`; on failure it is removed."""
    target = Path(target)
    tmp = _claim(target, directory=False)
    try:
        yield tmp
        os.chmod(tmp, default_mode())
        os.replace(tmp, target)
    finally:
        _remove(tmp)


@contextmanager
def atomic_directory(target: str | Path, keep_existing: bool = True) -> Iterator[Path]:
    """Yields a temp directory beside `target`; on success it replaces `target`.

    With `keep_existing`, files already in `target` that the writer did not produce (a
    tokenizer, say) are kept, except old weights, which would mix with the new ones."""
    target = Path(target)
    tmp = _claim(target, directory=True)
    try:
        yield tmp
        _install(tmp, target, keep_existing)
    finally:
        _remove(tmp)


def _install(tmp: Path, target: Path, keep_existing: bool) -> None:
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory")
    if target.is_dir() and keep_existing:
        for old in target.iterdir():
            if not (tmp / old.name).exists() and not is_weight_file(old):
                copy = shutil.copytree if old.is_dir() else shutil.copy2
                copy(old, tmp / old.name)
    _default_permissions(tmp)
    backup = None
    if target.exists():
        backup = target.with_name(f"{_prefix(target)}old")
        os.replace(target, backup)
    os.replace(tmp, target)
    if backup is not None:
        _remove(backup)


# --------------------------------------------------------------------------- temp siblings
def _prefix(target: Path) -> str:
    return f".{target.name}.tmp-{os.getpid()}-"


def _claim(target: Path, directory: bool) -> Path:
    """A new temp sibling of `target`, after clearing the leftovers of dead writers."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    if directory:
        return Path(tempfile.mkdtemp(prefix=_prefix(target), dir=target.parent))
    fd, name = tempfile.mkstemp(prefix=_prefix(target), dir=target.parent)
    os.close(fd)
    return Path(name)


def remove_stale(target: str | Path) -> list[Path]:
    """Remove the temp siblings of `target` left by processes that are no longer alive;
    returns what was removed."""
    target = Path(target)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.tmp-(\d+)-")
    removed = []
    for path in target.parent.glob(f".{glob.escape(target.name)}.tmp-*"):
        match = pattern.match(path.name)
        if match and not _alive(int(match.group(1))):
            _remove(path)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- permissions
def default_mode(directory: bool = False) -> int:
    """The mode a plain open()/mkdir() would give under the current umask (temp files and
    directories are created private, 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def _default_permissions(root: Path) -> None:
    os.chmod(root, default_mode(directory=True))
    for path in root.rglob("*"):
        os.chmod(path, default_mode(directory=path.is_dir()))
