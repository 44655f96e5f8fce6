"""rgemma: RecurrentGemma (Griffin) for real: exact, fixed-size state, fast.

The public API: the config and model classes (transformers-shaped), the explicit State, and
`load` for a checkpoint directory, a repo id in the local HF cache, or (None) the bundled
model. Names are imported on first use, so `rgemma --help` starts without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "RecurrentGemmaConfig": "config", "PRESETS": "config",
    "RecurrentGemmaModel": "model", "RecurrentGemmaForCausalLM": "model",
    "State": "state", "Tokenizer": "tokenizer", "bundled_model_dir": "checkpoint",
}

if TYPE_CHECKING:  # for type checkers and IDEs
    from .checkpoint import bundled_model_dir
    from .config import PRESETS, RecurrentGemmaConfig
    from .model import RecurrentGemmaForCausalLM, RecurrentGemmaModel
    from .state import State
    from .tokenizer import Tokenizer


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rgemma' has no attribute {name!r}")


def load(path_or_repo_id=None, dtype=None, device=None):
    """Load a causal LM from an HF-format directory, a cached repo id, or (None) the bundled
    model."""
    from .model import RecurrentGemmaForCausalLM

    return RecurrentGemmaForCausalLM.from_pretrained(path_or_repo_id, dtype=dtype, device=device)


__all__ = [*_EXPORTS, "load", "__version__"]
