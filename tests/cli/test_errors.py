"""Every subcommand, fed bad input, says what is wrong in one line and exits non-zero: no
traceback unless --debug. Most cases run in this process through `main(argv)`; the ones about
the process itself (argv bytes, a closed stdout, a reader that leaves) run as subprocesses."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rgemma.cli import COMMANDS, main

SRC = str(Path(__file__).resolve().parents[2] / "src")
CUDA = torch.cuda.is_available()


class Evil:
    """A pickle that would run a command when loaded without weights_only."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def bad(tmp_path_factory, lm_dir) -> dict[str, str]:
    """Paths for the placeholders of the table (LM, a damaged model, damaged files...)."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("bad")
    garbage_tok = root / "garbage-tok"
    shutil.copytree(lm_dir, garbage_tok)
    (garbage_tok / "tokenizer.json").write_text("{garbage")
    (root / "dir").mkdir()
    (root / "file.txt").write_text("not a model\n")
    (root / "random.state").write_bytes(os.urandom(256))
    save_file({"nonsense": torch.zeros(3)}, str(root / "wrong.state"))
    (root / "data.jsonl").write_text('{"text": "hello world"}\n{"text": "the quick brown fox"}\n')
    (root / "no-assistant.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    (root / "empty.txt").write_text("")
    (root / "latin1.txt").write_bytes(b"caf\xe9\n")
    good = root / "good-ckpt"
    good.mkdir()
    torch.save({"step": 1, "t": torch.zeros(4096)}, good / "trainer_state.pt")
    truncated = root / "truncated-ckpt"
    truncated.mkdir()
    data = (good / "trainer_state.pt").read_bytes()
    (truncated / "trainer_state.pt").write_bytes(data[: len(data) // 2])
    evil = root / "evil-ckpt"
    evil.mkdir()
    torch.save({"step": 1, "data": Evil(root / "PWNED")}, evil / "trainer_state.pt")
    names = {
        "LM": lm_dir,
        "GARBAGE_TOK": garbage_tok,
        "DIR": root / "dir",
        "FILE": root / "file.txt",
        "MISSING": root / "missing",
        "RANDOM": root / "random.state",
        "WRONG": root / "wrong.state",
        "DATA": root / "data.jsonl",
        "NO_ASSISTANT": root / "no-assistant.jsonl",
        "EMPTY": root / "empty.txt",
        "LATIN1": root / "latin1.txt",
        "TRUNCATED_CKPT": truncated,
        "EVIL_CKPT": evil,
        "OUT": root / "out",
        "PWNED": root / "PWNED",
    }
    return {k: str(v) for k, v in names.items()}


# (argv, stdin bytes or None, exit status, early: the error is the only line on stderr and
# nothing reached stdout; otherwise loading progress may come first)
MODEL = ["--model", "LM"]
TRAIN = ["--model", "LM", "--data", "DATA", "--out", "OUT", "--steps", "1", "--no-progress"]
TABLE = [
    (["generate", "-", *MODEL], b"\xff\xfe", 1, True),
    (["generate", "hi", *MODEL, "--device", "bogus"], None, 2, True),
    pytest.param(
        ["generate", "hi", *MODEL, "--device", "cuda"],
        None,
        2,
        True,
        marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA"),
    ),
    (["generate", "hi", *MODEL, "--seed", str(2**64)], None, 2, True),
    (["generate", "hi", *MODEL, "--seed", "-1"], None, 2, True),
    (["generate", "hi", *MODEL, "--temperature", "-1"], None, 1, True),
    (["generate", "hi", *MODEL, "--temperature", "nan"], None, 1, True),
    (["generate", "hi", *MODEL, "--temperature", "hot"], None, 2, True),
    (["generate", "hi", *MODEL, "--top-p", "1.5"], None, 1, True),
    (["generate", "hi", "--model", "MISSING"], None, 1, True),
    (["generate", "hi", "--model", "FILE"], None, 1, True),
    (["generate", "hi", "--model", "GARBAGE_TOK"], None, 1, False),
    (["generate", "hi", *MODEL, "--load-state", "MISSING"], None, 1, True),
    (["generate", "hi", *MODEL, "--load-state", "DIR"], None, 1, True),
    (["generate", "hi", *MODEL, "--load-state", "RANDOM"], None, 1, False),
    (["generate", "hi", *MODEL, "--load-state", "WRONG"], None, 1, False),
    (["generate", "hi", *MODEL, "--save-state", "DIR"], None, 1, True),
    (["generate", "-f", "LATIN1", *MODEL], None, 1, True),
    (["chat", *MODEL, "--device", "bogus"], None, 2, True),
    (["chat", *MODEL, "--seed", str(2**64)], None, 2, True),
    (["chat", *MODEL, "--top-p", "0"], None, 1, True),
    (["chat", "--model", "MISSING"], None, 1, True),
    (["chat", "--model", "GARBAGE_TOK"], None, 1, False),
    (["perplexity", *MODEL, "--data", "MISSING"], None, 1, True),
    (["perplexity", *MODEL, "--data", "LATIN1"], None, 1, True),
    (["perplexity", *MODEL, "--data", "EMPTY"], None, 1, True),
    (["perplexity", "--model", "FILE", "--data", "DATA"], None, 1, True),
    (["perplexity", *MODEL, "--data", "DATA", "--device", "bogus"], None, 2, True),
    (["convert", "MISSING", "OUT"], None, 1, True),
    (["convert", "RANDOM", "OUT", "--from", "deepmind-torch"], None, 1, False),
    (["convert", "LM", "DIR"], None, 1, True),  # DST exists, no --force
    (["convert", "LM", "OUT", "--max-shard-size", "lots"], None, 1, True),
    (["serve", *MODEL, "--port", "99999"], None, 2, True),
    (["serve", *MODEL, "--port", "0"], None, 2, True),
    (["serve", *MODEL, "--port", "-1"], None, 2, True),
    (["serve", *MODEL, "--device", "bogus"], None, 2, True),
    (["serve", "--model", "MISSING"], None, 1, True),
    (["serve", "--model", "FILE"], None, 1, True),
    (["train", "--model", "LM", "--data", "MISSING", "--out", "OUT"], None, 1, True),
    (["train", "--model", "LM", "--out", "OUT"], None, 2, True),
    (["train", *TRAIN, "--resume", "TRUNCATED_CKPT"], None, 1, True),
    (["train", *TRAIN, "--resume", "EVIL_CKPT"], None, 1, True),
    (["train", *TRAIN, "--resume", "MISSING"], None, 1, True),
    (["train", "--model", "LM", "--data", "NO_ASSISTANT", "--out", "OUT"], None, 1, True),
    (["train", "--model", "LM", "--data", "EMPTY", "--out", "OUT"], None, 1, True),
    (["train", "--model", "LM", "--data", "LATIN1", "--out", "OUT"], None, 1, True),
    (["train", *TRAIN, "--seed", str(2**64)], None, 1, True),
    (["bench", "--device", "bogus"], None, 2, True),
    (["bench", "--measures", "nonsense"], None, 2, True),
    (["eval", *MODEL], None, 2, True),
    (["eval", "--model", "MISSING", "--tasks", "x"], None, 1, True),
    (["eval", *MODEL, "--tasks", "x", "--device", "bogus"], None, 2, True),
    (["bench", "--perplexity", "LM"], None, 2, True),
    (["bench", "--perplexity", "MISSING", "--data", "DATA"], None, 1, True),
]


def _ids(entry) -> str:
    argv = entry.values[0] if hasattr(entry, "values") else entry[0]
    return " ".join(argv)


def one_error_line(err: str, command: str, early: bool) -> str:
    """The error line of `err`, after checking it is the only one (and the only line at all
    when `early`), with no traceback."""
    lines = err.splitlines()
    assert "Traceback" not in err, err
    errors = [line for line in lines if line.startswith(f"rgemma {command}: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert len(lines) == 1 or not early, err
    return errors[0]


def test_every_command_is_in_the_table():
    covered = [(e.values if hasattr(e, "values") else e)[0][0] for e in TABLE]
    assert {c: covered.count(c) >= 2 for c in COMMANDS} == dict.fromkeys(COMMANDS, True)


@pytest.mark.parametrize("argv,stdin,status,early", TABLE, ids=[_ids(e) for e in TABLE])
def test_bad_input_is_one_line_and_nonzero(argv, stdin, status, early, bad, capsys, monkeypatch):
    argv = [bad.get(a, a) for a in argv]
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    assert main(argv) == status
    out, err = capsys.readouterr()
    line = one_error_line(err, argv[0], early)
    assert not early or out == ""
    assert "weights_only" not in line and not Path(bad["PWNED"]).exists()


def test_messages_say_what_is_wrong(bad, capsys, monkeypatch):
    def error(*argv, stdin=None):
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
        main([bad.get(a, a) for a in argv])
        return capsys.readouterr().err

    assert "stdin is not UTF-8" in error("generate", "-", "--model", "LM", stdin=b"\xff\xfe")
    assert "[0, 2**64 - 1]" in error("generate", "hi", "--model", "LM", "--seed", str(2**64))
    assert "1..65535" in error("serve", "--port", "99999")
    assert "unknown device 'bogus'" in error("serve", "--device", "bogus")
    assert "tokenizer.json is not a valid tokenizer file" in error("chat", "--model", "GARBAGE_TOK")
    train = ["train", "--model", "LM", "--out", "OUT", "--data"]
    assert "no-assistant.jsonl: no assistant turns" in error(*train, "NO_ASSISTANT")
    assert "empty.txt" in error(*train, "EMPTY")
    evil = error(*train, "DATA", "--resume", "EVIL_CKPT")
    assert "refusing" in evil and "posix.system" in evil and "weights_only" not in evil
    assert "damaged or truncated" in error(*train, "DATA", "--resume", "TRUNCATED_CKPT")


def test_debug_shows_the_traceback(bad, capsys, monkeypatch):
    argv = ["generate", "hi", "--model", bad["LM"], "--load-state", bad["WRONG"]]
    assert main(["--debug", *argv]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main([*argv, "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("RGEMMA_DEBUG", "1")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1].startswith("rgemma generate: error: ")


def test_ctrl_c_exits_130_quietly(lm_dir, capsys, monkeypatch):
    from rgemma.cli import commands

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "generate", interrupted)
    assert main(["generate", "hi", "--model", str(lm_dir)]) == 130
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- subprocesses
def rgemma(argv: list, shell_wrap: str | None = None, **kw) -> subprocess.CompletedProcess:
    """`python -m rgemma ARGV` (inside `sh -c SHELL_WRAP` when given, as "$@")."""
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    env.pop("RGEMMA_DEBUG", None)
    cmd = [sys.executable, "-m", "rgemma", *argv]
    if shell_wrap:
        cmd = [kw.pop("executable", "/bin/sh"), "-c", shell_wrap, "sh", *cmd]
    kw = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kw}
    return subprocess.run(cmd, env=env, timeout=120, **kw)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_argv_that_is_not_utf8(command):
    proc = rgemma([command, b"--model", b"caf\xe9"])
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "not valid UTF-8" in one_error_line(err, command, early=True)


@pytest.mark.parametrize("command", ["generate", "train"])
def test_closed_stdout(command, lm_dir, tmp_path):
    argv = {
        "generate": ["generate", "hello", "--model", str(lm_dir), "--max-new-tokens", "3"],
        "train": ["train", "--model", str(lm_dir), "--data", "x.txt", "--out", str(tmp_path)],
    }[command]
    # `>&-`: the process starts with fd 1 closed (Python then has no sys.stdout)
    proc = rgemma(argv, stdout=None, shell_wrap='exec "$@" >&-')
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "stdout is closed" in one_error_line(err, command, early=True)


def test_a_reader_that_leaves_early_ends_generate_quietly(lm_dir):
    """`rgemma generate ... | head -c 10`: exit 0, nothing on stderr once the reader is gone."""
    argv = ["generate", "hello", "--model", str(lm_dir), "--max-new-tokens", "2000", "--seed", "0"]
    proc = rgemma(argv, shell_wrap='"$@" | head -c 10; exit "${PIPESTATUS[0]}"', executable="/bin/bash")
    assert proc.returncode == 0, proc.stderr.decode()
    assert len(proc.stdout) == 10
    assert proc.stderr.decode().splitlines()[-1].startswith("loaded "), proc.stderr.decode()
