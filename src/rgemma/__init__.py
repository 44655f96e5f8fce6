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
    "RecurrentGemmaConfig": "models.config",
    "PRESETS": "models.config",
    "RecurrentGemmaModel": "pretrained.classes",
    "RecurrentGemmaForCausalLM": "pretrained.classes",
    "State": "models.state",
    "Tokenizer": "text.tokenizer",
    "bundled_model_dir": "io.checkpoint_files",
}

if TYPE_CHECKING:  # for type checkers and IDEs
    from rgemma.io.checkpoint_files import bundled_model_dir  # noqa: F401
    from rgemma.models.config import PRESETS, RecurrentGemmaConfig  # noqa: F401
    from rgemma.models.state import State  # noqa: F401
    from rgemma.pretrained.classes import RecurrentGemmaForCausalLM, RecurrentGemmaModel  # noqa: F401
    from rgemma.text.tokenizer import Tokenizer  # noqa: F401


# noqa: F401
# noqa: F401
def __getattr__(name: str):  # noqa: F401
    if name in _EXPORTS:  # noqa: F401
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)  # noqa: F401
        globals()[name] = value  # noqa: F401
        return value  # noqa: F401
    raise AttributeError(f"module 'rgemma' has no attribute {name!r}")  # noqa: F401


# noqa: F401
# noqa: F401
def load(path_or_repo_id=None, dtype=None, device=None):  # noqa: F401
    """Load a causal LM from an HF-format directory, a cached repo id, or (None) the bundled  # noqa: F401
    model."""  # noqa: F401
    from rgemma.pretrained.classes import RecurrentGemmaForCausalLM  # noqa: F401

    # noqa: F401
    return RecurrentGemmaForCausalLM.from_pretrained(path_or_repo_id, dtype=dtype, device=device)  # noqa: F401


# noqa: F401
# noqa: F401
__all__ = [*_EXPORTS, "load", "__version__"]  # noqa: F401
