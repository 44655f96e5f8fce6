"""Reading documents for scoring and training: JSONL records or plain text."""

from __future__ import annotations

import json
from pathlib import Path

from rgemma.io.files import require_file


def read_documents(path: str | Path) -> list[str]:
    """JSONL with a `text` field per line, or plain text with documents split by blank lines."""
    path = require_file(path, "data file")
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        docs = []
        for n, line in enumerate(raw.splitlines(), 1):
            if line.strip():
                try:
                    docs.append(json.loads(line)["text"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ValueError(f"{path}:{n}: expected a JSON object with a 'text' field") from None
        return docs
    return [d.strip() for d in raw.split("\n\n") if d.strip()]
