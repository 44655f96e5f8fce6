"""The one atomic writer: files and directories appear whole, and dead writers' temps go."""

import os
import subprocess
import sys

import pytest

from rgemma.io.atomic import atomic_directory, atomic_file


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_atomic_file_replaces_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a.bin"
    old = os.umask(0o022)
    try:
        with atomic_file(target) as tmp:
            assert tmp.name.startswith(f".a.bin.tmp-{os.getpid()}-") and tmp.parent == tmp_path
            tmp.write_bytes(b"one")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"one" and target.stat().st_mode & 0o777 == 0o644
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_bytes(b"two")
        raise RuntimeError
    assert target.read_bytes() == b"one" and [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_atomic_directory_keeps_other_files(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        (tmp / "model.safetensors").write_text("old weights")
        (tmp / "tokenizer.json").write_text("{}")
    with atomic_directory(target) as tmp:
        assert tmp.name.startswith(f".model.tmp-{os.getpid()}-")
        (tmp / "config.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "tokenizer.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


@pytest.mark.parametrize("writer", [atomic_file, atomic_directory])
def test_stale_temps_of_dead_processes_are_removed(tmp_path, writer):
    dead, live = dead_pid(), os.getppid()
    (tmp_path / f".out.tmp-{dead}-abc").mkdir()
    (tmp_path / f".out.tmp-{dead}-abc" / "half.safetensors").write_text("x")
    (tmp_path / f".out.tmp-{dead}-old").write_text("x")
    (tmp_path / f".out.tmp-{live}-def").write_text("a live writer's")
    (tmp_path / f".other.tmp-{dead}-abc").write_text("another target's")
    with writer(tmp_path / "out") as tmp:
        if tmp.is_dir():
            (tmp / "f").write_text("done")
        else:
            tmp.write_text("done")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([f".out.tmp-{live}-def", f".other.tmp-{dead}-abc", "out"])
