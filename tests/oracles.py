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
