"""The model shipped inside the package: present, small, and writes English offline."""

import re
import subprocess
import sys

import pytest
import torch

from rgemma import bundled_model_dir, load
from rgemma.bundled.corpus import stories
from rgemma.cli.commands import perplexity
from rgemma.text.engine import GenerationConfig, stream
from rgemma.text.sampling import SamplingParams
from rgemma.text.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def bundled():
    return load(None, dtype=torch.float32), Tokenizer.from_dir(bundled_model_dir())


def test_ships_inside_the_package_and_is_small():
    root = bundled_model_dir()
    assert root.parent.name == "assets" and root.parent.parent.name == "bundled"
    names = {p.name for p in root.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert sum(p.stat().st_size for p in root.iterdir()) < 4 * 2**20


def test_greedy_story_is_english(bundled):
    model, tok = bundled
    config = GenerationConfig(max_new_tokens=80, sampling=SamplingParams(temperature=0))
    text = "".join(s.text for s in stream(model, tok, tok.encode("Once upon a time"), config))
    words = re.findall(r"[A-Za-z']+", text)
    assert len(words) > 30
    assert text.isascii() and {"the", "a", "was"} & {w.lower() for w in words}
    assert text.count(".") >= 3  # sentences, not a babble of tokens


def test_heldout_perplexity_is_low(bundled, tmp_path):
    data = tmp_path / "heldout.jsonl"
    import json

    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in stories(20, split="heldout")))
    result = perplexity(data, loaded=bundled)
    assert result["perplexity"] < 2.0  # 1.42 on the full held-out split (README)


def test_readme_main_command_works_offline():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rgemma",
            "generate",
            "Once upon a time",
            "--max-new-tokens",
            "40",
            "--seed",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Once upon a time") and len(proc.stdout.split()) > 15
    assert "generated: 40 tokens" in proc.stderr
