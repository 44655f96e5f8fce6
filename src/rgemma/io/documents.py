"""The one document reader, for training and for scoring (`rgemma train`, `rgemma perplexity`).

Formats, chosen by file name:
- `*.jsonl`: one JSON object per line, either `{"text": "..."}` (a plain document) or
  `{"messages": [{"role": ..., "content": ...}, ...]}` (a chat). Blank lines are skipped.
- anything else: plain UTF-8 text, one document per run of non-blank lines: documents are
  separated by one or more blank lines (lines of only whitespace count as blank; CRLF is read
  as LF). A document that itself holds blank lines belongs in JSONL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from rgemma.io.files import require_file

BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")

Record = str | list[dict]  # a text, or a chat (a list of messages)


def read_records(path: str | Path) -> Iterator[Record]:
    """The documents of one file, in order: a text (str) or a chat (list of messages)."""
    path = require_file(path, "data file")
    if path.suffix == ".jsonl":
        yield from _read_jsonl(path)
        return
    text = path.read_text(encoding="utf-8")
    for doc in BLANK_LINES.split(text.replace("\r\n", "\n")):
        if doc.strip():
            yield doc.strip("\n")


def read_documents(path: str | Path) -> list[str]:
    """The text documents of a file, split as `read_records` splits them; chats are refused."""
    docs = []
    for n, record in enumerate(read_records(path), 1):
        if not isinstance(record, str):
            raise ValueError(f"{path}: record {n} is a chat; scoring reads 'text' records")
        docs.append(record)
    return docs


def _read_jsonl(path: Path) -> Iterator[Record]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: invalid JSON ({err.msg})") from None
            if isinstance(record, dict) and isinstance(record.get("text"), str):
                yield record["text"]
            elif isinstance(record, dict) and isinstance(record.get("messages"), list):
                yield record["messages"]
            else:
                raise ValueError(f"{path}:{n}: expected an object with a 'text' string or a 'messages' list")
