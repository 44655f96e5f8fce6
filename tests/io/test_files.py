"""A directory where a file belongs (and the reverse) is named as such, never "not found"."""

import io

import pytest

from conftest import tiny_config
from rgemma.cli import main
from rgemma.cli.commands import chat, read_prompt
from rgemma.io.documents import read_documents
from rgemma.io.files import require_dir, require_file
from rgemma.models.config import RecurrentGemmaConfig
from rgemma.text.tokenizer import Tokenizer
from rgemma.training.data import read_records
from rgemma.training.trainer import parse_init_config


def test_require_file_and_dir(tmp_path):
    (tmp_path / "f").write_text("x")
    assert require_file(tmp_path / "f", "data file") == tmp_path / "f"
    assert require_dir(tmp_path, "tokenizer directory") == tmp_path
    with pytest.raises(IsADirectoryError, match=r"^data file .* is a directory, not a file$"):
        require_file(tmp_path, "data file")
    with pytest.raises(FileNotFoundError, match="^data file not found: "):
        require_file(tmp_path / "nope", "data file")
    with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
        require_dir(tmp_path / "f", "tokenizer directory")


@pytest.mark.parametrize(
    "read",
    [
        read_documents,
        lambda p: list(read_records(p)),
        lambda p: read_prompt(None, str(p)),
        RecurrentGemmaConfig.from_json_file,
        Tokenizer.from_file,
        lambda p: parse_init_config(str(p)),
    ],
)
def test_readers_say_is_a_directory(tmp_path, read):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        read(tmp_path)


def test_tokenizer_dir_that_is_a_file(tmp_path):
    (tmp_path / "tok.json").write_text("{}")
    with pytest.raises(NotADirectoryError, match="is a file"):
        Tokenizer.from_dir(tmp_path / "tok.json")


def test_cli_load_state_directory_is_one_line(lm_dir, tmp_path, capsys):
    assert main(["generate", "hi", "--model", str(lm_dir), "--load-state", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "is a directory" in err and err.count("\n") == 1


def test_chat_load_and_save_errors_do_not_end_the_chat(lm_dir, tmp_path):
    script = f"/save {tmp_path / 'early.state'}\n/load {tmp_path}\nhello\n/exit\n"
    err = io.StringIO()
    stdin = io.StringIO(script)
    stdin.isatty = lambda: False
    session = chat(model=str(lm_dir), stdin=stdin, out=io.StringIO(), err=err)
    assert "error: nothing to save yet" in err.getvalue()
    assert "is a directory" in err.getvalue()
    assert [m["role"] for m in session.messages] == ["user", "assistant"]


def test_config_still_constructs_in_python():
    assert tiny_config().hidden_size == 32
