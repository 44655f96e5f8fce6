"""The bundled model's corpus: synthetic children's stories, and dialogues about them.

Most documents (60% by default) are stories (`stories.py`, words and plots from `grammar.py`),
written as `{"text": ...}` records. The rest are dialogues in Gemma's chat format
(`dialogues.py`, words from `dialogue_grammar.py`): questions about a story, requests to tell,
continue or summarize one, greetings and "who are you?", 2-8 turns, some with a system message,
written as `{"messages": [...]}` records that `rgemma train` renders with the chat template and
learns the model's turns of. Answers are drawn from the same cast and plot as the story, so they
are true of it. Everything is written for this project (license-clean) and needs no download.

Document `i` is drawn from its own RNG seeded with "split:seed:i", so a smaller corpus is a
prefix of a larger one, the "heldout" split never shares a stream with "train", and with
`--dialogues 0` document i is the story that the mixed corpus holds at i when i is a story.

    python -m rgemma.bundled.corpus data/train.jsonl --docs 20000 --seed 0
    python -m rgemma.bundled.corpus data/heldout.jsonl --docs 1000 --split heldout --dialogues 0
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from rgemma.bundled.dialogues import dialogue
from rgemma.bundled.stories import story
from rgemma.io.atomic import atomic_file

SPLITS = ("train", "heldout")
DIALOGUES = 0.4  # the share of documents that are dialogues

Record = str | list[dict[str, str]]  # a story, or a dialogue (a list of messages)


def documents(
    n_docs: int, seed: int = 0, split: str = "train", dialogues: float = DIALOGUES
) -> Iterator[Record]:
    """The corpus, document by document; document i depends only on (split, seed, i)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 <= dialogues <= 1:
        raise ValueError(f"dialogues must be a share in [0, 1], got {dialogues}")
    for i in range(n_docs):
        rng = random.Random(f"{split}:{seed}:{i}")
        yield dialogue(rng) if rng.random() < dialogues else story(rng)


def stories(n_docs: int, seed: int = 0, split: str = "train") -> Iterator[str]:
    """Stories only: `documents` with no dialogues."""
    yield from documents(n_docs, seed, split, dialogues=0.0)


def record_text(record: Record) -> str:
    """A story's text, or a dialogue's messages one after another."""
    return record if isinstance(record, str) else "\n\n".join(m["content"] for m in record)


@dataclass(frozen=True)
class CorpusStats:
    docs: int
    dialogues: int
    chars: int
    megabytes: float
    words: int
    distinct_words: int


def write_corpus(
    path: str | Path, n_docs: int, seed: int = 0, split: str = "train", dialogues: float = DIALOGUES
) -> CorpusStats:
    """Write `n_docs` documents as JSONL (`{"text": ...}` or `{"messages": [...]}`), atomically."""
    path = Path(path)
    chars = words = n_dialogues = 0
    vocab: set[str] = set()
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for record in documents(n_docs, seed, split, dialogues):
            is_story = isinstance(record, str)
            line = {"text": record} if is_story else {"messages": record}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
            text = record_text(record)
            tokens = re.findall(r"[A-Za-z']+", text)
            chars, words, n_dialogues = chars + len(text), words + len(tokens), n_dialogues + (not is_story)
            vocab.update(t.lower() for t in tokens)
    size = round(path.stat().st_size / 2**20, 2)
    return CorpusStats(n_docs, n_dialogues, chars, size, words, len(vocab))


def main(argv: list[str] | None = None) -> None:
    summary = __doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m rgemma.bundled.corpus", description=summary)
    parser.add_argument("out_file", type=Path, help="JSONL file to write")
    parser.add_argument("--docs", type=int, default=20000, help="number of documents (default 20000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--split", choices=SPLITS, default="train", help="heldout: a disjoint stream of documents"
    )
    parser.add_argument(
        "--dialogues",
        type=float,
        default=DIALOGUES,
        help=f"share of dialogues (default {DIALOGUES}); 0: stories only, as `rgemma perplexity` reads",
    )
    args = parser.parse_args(argv)
    stats = write_corpus(args.out_file, args.docs, args.seed, args.split, args.dialogues)
    print(json.dumps({"path": str(args.out_file), **asdict(stats)}), file=sys.stderr)


if __name__ == "__main__":
    main()
