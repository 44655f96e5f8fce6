"""Training data: read documents, tokenize them, pack them into fixed-length rows.

Files are read by rgemma.io.documents.read_records (the reader `rgemma perplexity` uses too):
JSONL `{"text"}` or `{"messages"}` records, or plain text split on blank lines.

Tokens and labels. A plain document becomes `[BOS] text [EOS]` and every token is a target. A
chat is rendered with the tokenizer's chat template (which writes BOS itself); only the
assistant turns are targets: each assistant span runs from the end of the generation prompt
(`<start_of_turn>model\\n` for Gemma) to the end of the rendered turn, end-of-turn marker
included, so the model learns where to stop. Spans are found by rendering the conversation
incrementally, tokenizing each prefix, and taking the length the prefix shares with the full
tokenization. Everything else (user turns, template markup) gets the label -100.

Packing. Documents, in file order, are laid end to end and the stream is cut into rows of
`seq_len` tokens. Every document starts at position 0, which resets the RG-LRU, the conv and
attention (see positions.py), so a packed row computes exactly what the documents would alone.
A document cut by a row boundary continues in the next row as an independent piece that again
starts at position 0: positions that continued without the state of the previous row would not
be exact. The label of every position-0 token is -100: it would be predicted from the last
token of the previous document (or nothing), which is not a real target. The model's loss is
shifted (token t+1 is predicted at t), so this masks exactly the cross-document predictions.
The last row is filled up with pad tokens, labelled -100, as one more document.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rgemma.io.documents import read_records
from rgemma.text.tokenizer import Message, Tokenizer

IGNORE = -100

Example = tuple[list[int], list[int]]  # (token ids, labels with -100 where not a target)


# --------------------------------------------------------------------------- tokenizing
def tokenize_text(tokenizer: Tokenizer, text: str) -> Example:
    """[BOS] text [EOS]; every token is a target."""
    ids = tokenizer.encode(text, add_bos=True)
    if tokenizer.eos_id is not None:
        ids.append(tokenizer.eos_id)
    return ids, list(ids)


def tokenize_chat(tokenizer: Tokenizer, messages: Sequence[Message]) -> Example:
    """The rendered chat; labels only on the assistant turns (see the module docstring)."""
    from rgemma.text.tokenizer import normalize_messages

    chat = normalize_messages(messages)  # validates, merges a system turn into the first user
    ids = tokenizer.encode_chat(chat, add_generation_prompt=False)
    labels = [IGNORE] * len(ids)
    for i, message in enumerate(chat):
        if message["role"] != "assistant":
            continue
        start = _shared_len(ids, tokenizer.encode_chat(chat[:i], add_generation_prompt=True))
        end = _shared_len(ids, tokenizer.encode_chat(chat[: i + 1], add_generation_prompt=False))
        labels[start:end] = ids[start:end]
    return ids, labels


def _shared_len(ids: list[int], prefix: list[int]) -> int:
    """How many leading tokens `prefix` shares with `ids`."""
    n = 0
    for a, b in zip(ids, prefix):
        if a != b:
            break
        n += 1
    return n


def load_examples(paths: Iterable[str | Path], tokenizer: Tokenizer) -> list[Example]:
    """Every document of every file, tokenized, in order."""
    examples = []
    for path in paths:
        try:
            records = list(read_records(path))
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
        for record in records:
            try:
                examples.append(_tokenize(tokenizer, record))
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
    return examples


def _tokenize(tokenizer: Tokenizer, record: str | list) -> Example:
    if isinstance(record, str):
        return tokenize_text(tokenizer, record)
    return tokenize_chat(tokenizer, record)


def no_target_reason(examples: Sequence[Example]) -> str:
    """Why `examples` give no target token (each document's first token is never one)."""
    if not examples:
        return "no documents (the file is empty)"
    if all(len(ids) < 2 for ids, _ in examples):
        return "every document is shorter than 2 tokens"
    return "no assistant turns (only assistant replies are trained on; every label is masked)"


def split_heldout(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, heldout): a seeded random `fraction` of the documents is held out."""
    if not 0 <= fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {fraction}")
    n_held = round(len(examples) * fraction)
    if fraction > 0 and len(examples) > 1:
        n_held = min(max(n_held, 1), len(examples) - 1)
    order = list(range(len(examples)))
    random.Random(f"heldout:{seed}").shuffle(order)
    held = set(order[:n_held])
    return (
        [e for i, e in enumerate(examples) if i not in held],
        [e for i, e in enumerate(examples) if i in held],
    )


# --------------------------------------------------------------------------- packing
@dataclass
class Packed:
    """Rows of packed documents: input_ids, position_ids and labels, each (N, seq_len) long."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]

    def rows(self, index: torch.Tensor | slice) -> Packed:
        return Packed(self.input_ids[index], self.position_ids[index], self.labels[index])

    def n_targets(self) -> int:
        """Tokens that count in the shifted loss."""
        return int((self.labels[:, 1:] != IGNORE).sum())


def pack(examples: Sequence[Example], seq_len: int, pad_id: int) -> Packed:
    """Lay documents end to end in rows of `seq_len`, positions restarting at 0 for each
    document and for each piece of a document cut by a row boundary."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    ids: list[int] = []
    pos: list[int] = []
    labels: list[int] = []
    for doc_ids, doc_labels in examples:
        start = 0
        while start < len(doc_ids):  # a cut at a row boundary starts the next row afresh
            stop = min(len(doc_ids), start + seq_len - len(ids) % seq_len)
            _append(ids, pos, labels, doc_ids[start:stop], doc_labels[start:stop])
            start = stop
    fill = -len(ids) % seq_len
    if fill:
        _append(ids, pos, labels, [pad_id] * fill, [IGNORE] * fill)
    shape = (-1, seq_len)
    return Packed(
        torch.tensor(ids, dtype=torch.long).view(shape),
        torch.tensor(pos, dtype=torch.long).view(shape),
        torch.tensor(labels, dtype=torch.long).view(shape),
    )


def _append(
    ids: list[int], pos: list[int], labels: list[int], piece_ids: list[int], piece_labels: list[int]
) -> None:
    """One piece that starts at position 0; its first label is masked (cross-document)."""
    if not piece_ids:
        return
    ids.extend(piece_ids)
    pos.extend(range(len(piece_ids)))
    labels.append(IGNORE)
    labels.extend(piece_labels[1:])


# --------------------------------------------------------------------------- order
def epoch_order(n_rows: int, epoch: int, seed: int) -> torch.Tensor:
    """The order rows are visited in during `epoch`: a permutation fixed by (seed, epoch)."""
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**64)  # any 64-bit seed
    return torch.randperm(n_rows, generator=gen)


def global_rows(start: int, count: int, n_rows: int, seed: int) -> torch.Tensor:
    """Row indices `start .. start+count` of the endless sequence of shuffled epochs."""
    out = []
    while count > 0:
        epoch, offset = divmod(start, n_rows)
        take = min(count, n_rows - offset)
        out.append(epoch_order(n_rows, epoch, seed)[offset : offset + take])
        start, count = start + take, count - take
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)
