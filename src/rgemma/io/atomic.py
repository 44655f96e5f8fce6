"""Atomic writes: a directory appears whole, or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from rgemma.io.checkpoint_files import is_weight_file


class atomic_directory:
    """Context manager: yields a temp dir beside `target`; on success it replaces `target`.

    Files already in `target` that the writer did not produce (a tokenizer, say) are kept,
    except old weights, which would mix with the new ones."""

    def __init__(self, target: str | Path, keep_existing: bool = True):
        self.target = Path(target)
        self.keep_existing = keep_existing

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if self.target.exists() and not self.target.is_dir():
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise FileExistsError(f"{self.target} exists and is not a directory")
        if self.target.is_dir() and self.keep_existing:
            for old in self.target.iterdir():
                if not (self.tmp / old.name).exists() and not is_weight_file(old):
                    copy = shutil.copytree if old.is_dir() else shutil.copy2
                    copy(old, self.tmp / old.name)
        _default_permissions(self.tmp)
        backup = None
        if self.target.exists():
            backup = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            os.replace(self.target, backup)
        os.replace(self.tmp, self.target)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)


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
