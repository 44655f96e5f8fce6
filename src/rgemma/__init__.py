"""rgemma: RecurrentGemma (Griffin) for real: exact, fixed-size state, fast.

The public API: the config and model classes (transformers-shaped), the explicit State, and
`load` for a checkpoint directory or a repo id in the local HF cache.
"""

from .config import PRESETS, RecurrentGemmaConfig
from .model import RecurrentGemmaForCausalLM, RecurrentGemmaModel
from .state import State

__version__ = "0.1.0"


def load(path_or_repo_id, dtype=None, device=None) -> RecurrentGemmaForCausalLM:
    """Load a causal LM from an HF-format directory or a cached repo id."""
    return RecurrentGemmaForCausalLM.from_pretrained(path_or_repo_id, dtype=dtype, device=device)


__all__ = ["PRESETS", "RecurrentGemmaConfig", "RecurrentGemmaForCausalLM", "RecurrentGemmaModel",
           "State", "load", "__version__"]
