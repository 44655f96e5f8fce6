"""The one document reader: training and scoring split a file the same way."""

import pytest

from rgemma.io.documents import read_documents, read_records

TRICKY = "one\r\nline two\r\n\r\n\r\n  \nsecond doc\n \t \n  indented third\n\n"


def test_plain_text_splits_on_blank_and_whitespace_lines(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(TRICKY.encode())
    want = ["one\nline two", "second doc", "  indented third"]
    assert list(read_records(path)) == want
    assert read_documents(path) == want


def test_jsonl_texts_and_chats(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"text": "x"}\n\n{"messages": []}\n')
    assert list(read_records(path)) == ["x", []]
    with pytest.raises(ValueError, match="record 2 is a chat"):
        read_documents(path)
    (tmp_path / "c.jsonl").write_text('{"other": 1}\n')
    with pytest.raises(ValueError, match="c.jsonl:1"):
        read_documents(tmp_path / "c.jsonl")
    with pytest.raises(FileNotFoundError):
        read_documents(tmp_path / "missing.txt")
