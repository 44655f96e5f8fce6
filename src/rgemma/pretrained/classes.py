"""The classes users import, shaped like transformers': the architecture of rgemma.models plus
`from_pretrained`, `save_pretrained` and `generate`, which need the checkpoint and text layers
that sit above the model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rgemma.io.shards import MAX_SHARD_SIZE
from rgemma.models.griffin import GriffinForCausalLM, GriffinModel
from rgemma.pretrained.checkpoint import load_model, save_model
from rgemma.text.generate import generate


class PreTrainedMixin:
    """from_pretrained, save_pretrained and generate()."""

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | Path,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        torch_dtype=None,
        progress: bool = False,
    ):
        """Load an HF-format directory (or a repo id found in the local HF cache).

        `dtype=None` keeps the checkpoint's dtype; `torch_dtype` is accepted as an alias."""
        return load_model(
            cls,
            path_or_repo_id,
            dtype=dtype if dtype is not None else torch_dtype,
            device=device,
            progress=progress,
        )

    def save_pretrained(
        self,
        save_directory: str | Path,
        max_shard_size: int | str = MAX_SHARD_SIZE,
        safe_serialization: bool = True,
    ) -> None:
        """Write config.json, generation_config.json and (sharded) safetensors, atomically."""
        if not safe_serialization:
            raise ValueError("rgemma writes safetensors only (safe_serialization=False is unsupported)")
        save_model(self, save_directory, max_shard_size=max_shard_size)

    def generate(self, input_ids=None, **kwargs):
        """transformers-style generate(); see rgemma.text.generate.generate for the arguments."""
        return generate(self, input_ids, **kwargs)


class RecurrentGemmaModel(PreTrainedMixin, GriffinModel):
    """The backbone: embedding, residual blocks, final norm (rgemma.models.griffin)."""


class RecurrentGemmaForCausalLM(PreTrainedMixin, GriffinForCausalLM):
    """The causal LM: backbone, tied LM head, logit soft-cap (rgemma.models.griffin)."""

    backbone = RecurrentGemmaModel
