"""Reference implementations used as test oracles (never imported by rgemma itself).

DeepMind's `recurrentgemma` package imports its JAX half from `__init__`; the torch half needs
only torch, so we register the package without running `__init__` (no jax/flax needed).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import pytest
import torch

from rgemma import RecurrentGemmaForCausalLM
from rgemma.convert.pipeline import deepmind_to_hf


def deepmind():
    """(common, griffin) modules of DeepMind's torch reference, or skip the test."""
    if "recurrentgemma" not in sys.modules:
        spec = importlib.util.find_spec("recurrentgemma")
        if spec is None:
            pytest.skip("recurrentgemma (test extra) is not installed")
        pkg = types.ModuleType("recurrentgemma")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["recurrentgemma"] = pkg
    common = importlib.import_module("recurrentgemma.common")
    griffin = importlib.import_module("recurrentgemma.torch.griffin")
    return common, griffin


def transformers_lm():
    """transformers' RecurrentGemmaForCausalLM class, or skip the test."""
    tf = pytest.importorskip("transformers")
    return tf.RecurrentGemmaForCausalLM


def deepmind_pair(config, seed=0):
    """A random DeepMind Griffin and our model holding the same (converted) weights."""
    common, griffin = deepmind()
    kinds = {"recurrent": common.TemporalBlockType.RECURRENT, "attention": common.TemporalBlockType.ATTENTION}
    dm_config = common.GriffinConfig(
        vocab_size=config.vocab_size,
        width=config.hidden_size,
        mlp_expanded_width=config.mlp_width,
        num_heads=config.num_attention_heads,
        block_types=tuple(kinds[k] for k in config.layers_block_type),
        embeddings_scale_by_sqrt_dim=config.embeddings_scale_by_sqrt_dim,
        attention_window_size=config.attention_window_size,
        logits_soft_cap=config.logits_soft_cap,
        lru_width=config.lru_width,
    )
    torch.manual_seed(seed)
    dm = griffin.Griffin(dm_config, gradient_checkpointing=False).eval()
    with torch.no_grad():
        for p in dm.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    ours = RecurrentGemmaForCausalLM(config).eval()
    ours.load_state_dict(dict(deepmind_to_hf(dm.state_dict())), strict=False)
    return dm, ours


def dm_logits(dm, ids, pos):
    with torch.no_grad():
        logits, _ = dm(ids, pos.int(), return_cache=False)
    return logits
