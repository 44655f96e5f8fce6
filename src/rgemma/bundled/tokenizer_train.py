"""Train a small Gemma-style tokenizer on a JSONL corpus (see `corpus.py`).

The result is a `tokenizers` BPE that behaves like Gemma's SentencePiece model, scaled
down: byte fallback (the 256 `<0x00>`..`<0xFF>` pieces are in the vocabulary, so any
Unicode text encodes), yet every printable ASCII character (Python's `string.printable`: tab,
CR and newline too) is a piece whether the corpus has it or not, so what users type, digits,
capitals and `#$%&@` included, never needs byte pieces, which the model never learns to read
or write. Words carry a leading "▁" (Metaspace, added to the start of the text only),
newlines are pieces of their own, and the decoder chain is Replace("▁", " "), ByteFallback,
Fuse, Strip(1 leading space). Special tokens sit at fixed ids: `<pad>`=0,
`<eos>`=1, `<bos>`=2, `<unk>`=3, `<start_of_turn>`=4, `<end_of_turn>`=5; the byte pieces
follow at 6..261, then the learned pieces. The post-processor adds `<bos>` like Gemma's.

Two consequences of the "▁" prefix, shared with Llama-style tokenizers: a text that starts
with a space decodes without that one space, and decoding with special tokens kept shows
"<bos> Once" (the prefix space is only stripped at the very start of the output).
`tokenizer_config.json` names `PreTrainedTokenizerFast` rather than `GemmaTokenizer`, because
transformers' Gemma class rebuilds the pipeline without the prefix and would encode
differently; the generic class runs `tokenizer.json` as it is.

A chat record is learned from as the model reads it: rendered with the chat template, each
special token read as a newline (the BPE trainer would not split them out; a word after one,
as after a newline, carries no "▁").

    python -m rgemma.bundled.tokenizer_train data/train.jsonl data/tokenizer --vocab-size 2048

Writes `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json`.
"""

from __future__ import annotations

import argparse
import json
import re
import string
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from rgemma.io.documents import read_records
from rgemma.text.tokenizer import GEMMA_CHAT_TEMPLATE, normalize_messages, render_template

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
# Printable ASCII with its whitespace (a space is "▁"): pieces whatever the corpus holds.
ALPHABET = ("▁", *(c for c in string.printable if c != " "))
MIN_VOCAB = len(SPECIAL_TOKENS) + len(BYTE_TOKENS) + len(ALPHABET) + 32
_SPECIAL = re.compile("|".join(map(re.escape, SPECIAL_TOKENS)))


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    # Newline runs stand alone (as in Gemma's vocabulary); "first" puts "▁" only before the
    # text's first word, so "Once" at the start of a prompt is the same piece as mid-text.
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\n+"), behavior="isolated"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
        ]
    )


def _decoder() -> decoders.Decoder:
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    return decoders.Sequence([*steps, decoders.Strip(" ", 1, 0)])


def _learn_bpe(texts: Iterable[str], n_pieces: int) -> tuple[list[str], list[tuple[str, str]]]:
    """BPE pieces (specials first) and merges learned from `texts`."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = _pre_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=n_pieces,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=list(ALPHABET),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    model = json.loads(tok.to_str())["model"]
    pieces = sorted(model["vocab"], key=model["vocab"].get)
    return pieces, [tuple(m) for m in model["merges"]]


def training_texts(corpus_path: str | Path) -> Iterator[str]:
    """The corpus as the model reads it: a text as it is, a chat rendered with the template and
    its special tokens read as newlines (see the module docstring)."""
    for record in read_records(corpus_path):
        if isinstance(record, str):
            yield record
        else:
            rendered = render_template(GEMMA_CHAT_TEMPLATE, normalize_messages(record), bos_token="")
            yield _SPECIAL.sub("\n", rendered).lstrip("\n")


def build_tokenizer(pieces: list[str], merges: list[tuple[str, str]]) -> Tokenizer:
    """The full tokenizer: specials, then byte pieces, then `pieces` (minus specials)."""
    learned = [p for p in pieces if p not in SPECIAL_TOKENS and p not in BYTE_TOKENS]
    vocab = {p: i for i, p in enumerate((*SPECIAL_TOKENS, *BYTE_TOKENS, *learned))}
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = _decoder()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos>:1 $B:1", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return tok


def _token_spec(token: str) -> dict:
    flags = ("lstrip", "normalized", "rstrip", "single_word")
    return {"content": token, **dict.fromkeys(flags, False)}


def tokenizer_config() -> dict:
    """`tokenizer_config.json` with Gemma's fields (see the module docstring for the class)."""
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {
            str(i): {**_token_spec(t), "special": True} for i, t in enumerate(SPECIAL_TOKENS)
        },
        "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"],
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "chat_template": GEMMA_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "spaces_between_special_tokens": False,
        "model_max_length": 1_000_000,
        "padding_side": "left",
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def special_tokens_map() -> dict:
    named = {f"{k}_token": _token_spec(f"<{k}>") for k in ("bos", "eos", "pad", "unk")}
    return {"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"], **named}


def save_tokenizer(tok: Tokenizer, out_dir: str | Path) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    configs = {
        "tokenizer_config.json": tokenizer_config(),
        "special_tokens_map.json": special_tokens_map(),
    }
    for name, data in configs.items():
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        (out / name).write_text(text, encoding="utf-8")


def train_tokenizer(corpus_path: str | Path, out_dir: str | Path, vocab_size: int = 2048) -> Tokenizer:
    """Learn a `vocab_size`-piece tokenizer from a JSONL corpus and save it to `out_dir`.

    The vocabulary may come out smaller when the corpus has too few distinct pairs.
    """
    if vocab_size < MIN_VOCAB:
        need = f"at least {MIN_VOCAB} (specials, 256 bytes, the ASCII alphabet, 32 more)"
        raise ValueError(f"vocab_size must be {need}, got {vocab_size}")
    pieces, merges = _learn_bpe(training_texts(corpus_path), vocab_size - len(BYTE_TOKENS))
    tok = build_tokenizer(pieces, merges)
    save_tokenizer(tok, out_dir)
    return tok


def main(argv: list[str] | None = None) -> None:
    summary = __doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m rgemma.bundled.tokenizer_train", description=summary)
    parser.add_argument("corpus", type=Path, help="JSONL corpus: a 'text' or 'messages' record per line")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--vocab-size", type=int, default=2048)
    args = parser.parse_args(argv)
    tok = train_tokenizer(args.corpus, args.out_dir, args.vocab_size)
    stats = {"out_dir": str(args.out_dir), "vocab_size": tok.get_vocab_size()}
    print(json.dumps(stats), file=sys.stderr)


if __name__ == "__main__":
    main()
