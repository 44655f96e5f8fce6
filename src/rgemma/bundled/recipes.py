"""Named training recipes: everything needed to reproduce a model with one command.

`rgemma train --recipe bundled --out runs/bundled` regenerates the corpus of stories and
dialogues and the tokenizer (both deterministic), trains the bundled model from scratch, and
exports it in bfloat16 to `OUT/export`, ready to copy into `src/rgemma/bundled/assets/rgemma-tiny`.
`--recipe draft` trains, on the same corpus and tokenizer, a model a fraction of its size: a
draft for speculative decoding with the bundled model (`--draft-model runs/draft/export`).

The rows are 1,024 tokens (4 per step, the same 4,096 tokens a step as 16 x 256): a dialogue
runs to 725 tokens, and a row boundary cuts a document in two pieces that do not see each
other, so short rows would mostly part the answers from the story they are about.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rgemma.bundled.corpus import write_corpus
from rgemma.bundled.tokenizer_train import train_tokenizer

BUNDLED: dict[str, Any] = {
    "config": {
        "hidden_size": 128,
        "num_hidden_layers": 6,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "lru_width": 128,
        "intermediate_size": 768,
        "attention_window_size": 256,
        "vocab_size": 2048,
        "logits_soft_cap": 30.0,
    },
    "corpus_docs": 20000,
    "heldout_docs": 1000,
    "corpus_seed": 0,
    "vocab_size": 2048,
    "train": {
        "steps": 1600,
        "batch_size": 4,
        "seq_len": 1024,
        "lr": 2e-3,
        "warmup_steps": 100,
        "eval_every": 400,
        "save_every": 400,
        "seed": 0,
        "weight_decay": 0.1,
    },
}
# A draft model for speculative decoding with the bundled model as the target: the same corpus
# and tokenizer (so `--draft-model` accepts it), 2 recurrent layers 64 wide (0.22M parameters):
# a step costs a fraction of the bundled model's (bench/speculative.py draft).
DRAFT: dict[str, Any] = {
    **BUNDLED,
    "config": {
        **BUNDLED["config"],
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "lru_width": 64,
        "intermediate_size": 256,
    },
    "train": {**BUNDLED["train"], "steps": 800, "lr": 3e-3, "warmup_steps": 50},
}
RECIPES = {"bundled": BUNDLED, "draft": DRAFT}


def prepare(name: str, out: str | Path) -> dict[str, Any]:
    """Write the recipe's data and tokenizer under OUT/data (kept if already there) and
    return the train() keyword arguments it fixes."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    recipe = RECIPES[name]
    data = Path(out) / "data"
    train_file, heldout, tok_dir = data / "train.jsonl", data / "heldout.jsonl", data / "tokenizer"
    if not train_file.is_file():
        print(f"writing the corpus to {data}", file=sys.stderr)
        write_corpus(train_file, recipe["corpus_docs"], recipe["corpus_seed"], "train")
        write_corpus(heldout, recipe["heldout_docs"], recipe["corpus_seed"], "heldout")
    if not (tok_dir / "tokenizer.json").is_file():
        train_tokenizer(train_file, tok_dir, vocab_size=recipe["vocab_size"])
    return {
        "init_config": json.dumps(recipe["config"]),
        "tokenizer": str(tok_dir),
        "data": [str(train_file)],
        "eval_data": [str(heldout)],
        "metrics": str(Path(out) / "metrics.jsonl"),
        **recipe["train"],
    }


def export(checkpoint: str | Path, out: str | Path) -> Path:
    """The trained checkpoint as the package ships it: bfloat16 weights plus tokenizer."""
    import torch

    from rgemma.io.atomic import atomic_directory
    from rgemma.io.checkpoint_files import copy_tokenizer
    from rgemma.pretrained.classes import RecurrentGemmaForCausalLM

    checkpoint = Path(checkpoint)
    model = RecurrentGemmaForCausalLM.from_pretrained(checkpoint, dtype=torch.bfloat16)
    with atomic_directory(out, keep_existing=False) as tmp:
        copy_tokenizer(checkpoint, tmp)
    model.save_pretrained(out)
    return Path(out)
