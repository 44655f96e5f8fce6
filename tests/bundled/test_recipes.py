"""Named training recipes: the draft shares the bundled model's corpus and tokenizer, and a
recipe's data is written once and reused."""

from __future__ import annotations

import json

import pytest

from rgemma.bundled import recipes
from rgemma.models.config import RecurrentGemmaConfig
from rgemma.models.griffin import GriffinForCausalLM


def _parameters(config: dict) -> int:
    return sum(p.numel() for p in GriffinForCausalLM(RecurrentGemmaConfig(**config)).parameters())


def test_the_draft_reads_the_bundled_corpus_and_costs_a_fraction():
    """Same corpus, seed and vocabulary, so the same tokenizer (--draft-model checks it); a
    fraction of the parameters and of the layers (a step's cost on a CPU follows the layers)."""
    bundled, draft = recipes.RECIPES["bundled"], recipes.RECIPES["draft"]
    for key in ("corpus_docs", "heldout_docs", "corpus_seed", "vocab_size"):
        assert draft[key] == bundled[key]
    assert draft["config"]["vocab_size"] == bundled["config"]["vocab_size"]
    assert _parameters(draft["config"]) * 4 < _parameters(bundled["config"])
    assert draft["config"]["num_hidden_layers"] * 2 < bundled["config"]["num_hidden_layers"]


def test_prepare_writes_the_data_once_and_returns_the_training_arguments(tmp_path, monkeypatch):
    small = {**recipes.RECIPES["draft"], "corpus_docs": 40, "heldout_docs": 4, "vocab_size": 400}
    monkeypatch.setitem(recipes.RECIPES, "draft", small)
    args = recipes.prepare("draft", tmp_path)
    data = tmp_path / "data"
    assert args["data"] == [str(data / "train.jsonl")] and args["eval_data"] == [str(data / "heldout.jsonl")]
    assert json.loads(args["init_config"]) == small["config"]
    assert args["steps"] == small["train"]["steps"] and args["tokenizer"] == str(data / "tokenizer")
    assert len((data / "train.jsonl").read_text().splitlines()) == 40
    stamps = {p: p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file()}
    recipes.prepare("draft", tmp_path)  # kept, not rewritten
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file()} == stamps


def test_an_unknown_recipe_is_named():
    with pytest.raises(ValueError, match="unknown recipe 'big'.*bundled"):
        recipes.prepare("big", "unused")
