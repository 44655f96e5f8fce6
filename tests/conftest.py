"""Shared fixtures: tiny random configs and models (CPU, float32, seconds)."""

from __future__ import annotations

import pytest
import torch

from rgemma import RecurrentGemmaConfig, RecurrentGemmaForCausalLM


def tiny_config(**overrides) -> RecurrentGemmaConfig:
    """Griffin pattern, a window of 6 so tests cross it quickly, lru_width != hidden_size."""
    base = dict(num_hidden_layers=4, vocab_size=97, hidden_size=32, intermediate_size=96,
                num_attention_heads=4, num_key_value_heads=1, lru_width=48,
                attention_window_size=6, block_types=("recurrent", "recurrent", "attention"))
    return RecurrentGemmaConfig(**{**base, **overrides})


def random_model(config: RecurrentGemmaConfig | None = None, seed: int = 0,
                 scale: float = 0.2) -> RecurrentGemmaForCausalLM:
    """A model whose every parameter (norms and biases too) is non-trivial."""
    torch.manual_seed(seed)
    model = RecurrentGemmaForCausalLM(config or tiny_config()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


@pytest.fixture
def model() -> RecurrentGemmaForCausalLM:
    return random_model()


@pytest.fixture
def config() -> RecurrentGemmaConfig:
    return tiny_config()
