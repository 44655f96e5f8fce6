"""Shared fixtures: tiny random configs and models (CPU, float32, seconds)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see rgemma.cli.main

import pytest
import torch

from rgemma import RecurrentGemmaConfig, RecurrentGemmaForCausalLM


def tiny_config(**overrides) -> RecurrentGemmaConfig:
    """Griffin pattern, a window of 6 so tests cross it quickly, lru_width != hidden_size."""
    base = dict(
        num_hidden_layers=4,
        vocab_size=97,
        hidden_size=32,
        intermediate_size=96,
        num_attention_heads=4,
        num_key_value_heads=1,
        lru_width=48,
        attention_window_size=6,
        block_types=("recurrent", "recurrent", "attention"),
    )
    return RecurrentGemmaConfig(**{**base, **overrides})


def random_model(
    config: RecurrentGemmaConfig | None = None, seed: int = 0, scale: float = 0.2
) -> RecurrentGemmaForCausalLM:
    """A model whose every parameter (norms and biases too) is non-trivial."""
    torch.manual_seed(seed)
    model = RecurrentGemmaForCausalLM(config or tiny_config()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


def require_level(name: str) -> str:
    """`name` when this CPU (and the environment) runs rgemma's kernels at that level, else a
    pytest skip that says why (another architecture's level, the flags the CPU lacks, or the cap
    in the environment)."""
    from rgemma import kernels

    if name not in kernels.levels():
        pytest.skip(f"kernel level {name!r}: this architecture's levels are {', '.join(kernels.levels())}")
    have = kernels.level()
    if kernels.LEVELS.index(name) > kernels.LEVELS.index(have):
        needed = [
            f for lv in kernels.LEVELS[1 : kernels.LEVELS.index(name) + 1] for f in kernels.LEVEL_FLAGS[lv]
        ]
        missing = [f for f in needed if f not in kernels.cpu_features()]
        why = (
            f"lacks {', '.join(missing)}"
            if missing
            else f"is capped at {have!r} (RGEMMA_KERNEL_LEVEL/NATIVE)"
        )
        pytest.skip(f"kernel level {name!r}: this CPU {why}")
    return name


@pytest.fixture(params=("none", "avx2", "avx512", "avx512bf16", "amx"))
def kernel_level(request, monkeypatch) -> str:
    """Each kernel level in turn (RGEMMA_KERNEL_LEVEL set for the test); the levels this CPU
    cannot run skip with the reason. A level whose kernel did not build skips too."""
    from rgemma import kernels

    name = require_level(request.param)
    monkeypatch.setenv("RGEMMA_KERNEL_LEVEL", name)
    kernel = {
        "avx2": "linear_avx2",
        "avx512": "linear_avx512",
        "avx512bf16": "linear_avx512bf16",
        "amx": "amx_linear",
    }.get(name)
    if kernel and not kernels.available(kernel):
        pytest.skip(f"kernel level {name!r}: no C compiler, or {kernel} did not build")
    return name


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run as fast on one thread, and a busy shared machine cannot stall them
    (use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def model() -> RecurrentGemmaForCausalLM:
    return random_model()


@pytest.fixture
def config() -> RecurrentGemmaConfig:
    return tiny_config()


@pytest.fixture(scope="session")
def lm_dir(tmp_path_factory):
    """An HF-format directory: a tiny random model plus a byte-fallback BPE tokenizer with
    Gemma's special ids (and <start_of_turn>/<end_of_turn>)."""
    from rgemma.text.tokenizer import Tokenizer
    from tokenizer_files import _write_dir

    root = tmp_path_factory.mktemp("lm")
    _write_dir(root, "gemma")
    vocab = Tokenizer.from_dir(root).vocab_size
    random_model(tiny_config(vocab_size=vocab), scale=0.3).save_pretrained(root)
    return root


@pytest.fixture(scope="session")
def lm(lm_dir):
    """(model, tokenizer) loaded from `lm_dir`."""
    from rgemma import RecurrentGemmaForCausalLM
    from rgemma.text.tokenizer import Tokenizer

    return RecurrentGemmaForCausalLM.from_pretrained(lm_dir), Tokenizer.from_dir(lm_dir)
