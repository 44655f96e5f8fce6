"""The conveniences users call on a transformers model, kept out of the model file.

`PreTrainedMixin` gives RecurrentGemmaModel and RecurrentGemmaForCausalLM `from_pretrained`,
`save_pretrained`, `generate`, `num_parameters`, gradient checkpointing switches, input
embedding access/resizing, and `device`/`dtype`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class PreTrainedMixin:
    config: object

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, dtype: torch.dtype | str | None = None,
                        device: torch.device | str | None = None, torch_dtype=None,
                        progress: bool = False):
        """Load an HF-format directory (or a repo id found in the local HF cache).

        `dtype=None` keeps the checkpoint's dtype; `torch_dtype` is accepted as an alias."""
        from .checkpoint import load_model

        return load_model(cls, path_or_repo_id, dtype=dtype if dtype is not None else torch_dtype,
                          device=device, progress=progress)

    def save_pretrained(self, save_directory: str | Path, max_shard_size: int | str = "2GB",
                        safe_serialization: bool = True) -> None:
        """Write config.json, generation_config.json and (sharded) safetensors, atomically."""
        from .checkpoint import save_model

        if not safe_serialization:
            raise ValueError("rgemma writes safetensors only (safe_serialization=False is unsupported)")
        save_model(self, save_directory, max_shard_size=max_shard_size)

    def generate(self, input_ids=None, **kwargs):
        """transformers-style generate(); see rgemma.generate.generate for the arguments."""
        from .generate import generate

        return generate(self, input_ids, **kwargs)

    # ------------------------------------------------------------------ introspection
    @property
    def base_model(self) -> nn.Module:
        return getattr(self, "model", self)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameters counted once each (the tied LM head is the embedding)."""
        skip = set()
        if exclude_embeddings:
            skip.add(id(self.get_input_embeddings().weight))
        return sum(p.numel() for p in self.parameters()  # parameters() yields tied ones once
                   if id(p) not in skip and (p.requires_grad or not only_trainable))

    # ------------------------------------------------------------------ training switches
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None) -> None:
        self.base_model.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.base_model.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.base_model.gradient_checkpointing

    # ------------------------------------------------------------------ embeddings
    def get_input_embeddings(self) -> nn.Embedding:
        return self.base_model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        if not isinstance(value, nn.Embedding) or value.embedding_dim != self.config.hidden_size:
            raise ValueError(f"input embeddings must be an nn.Embedding of width {self.config.hidden_size}")
        self.base_model.embed_tokens = value
        self.config.vocab_size = value.num_embeddings
        self._retie()

    def get_output_embeddings(self) -> nn.Module | None:
        return getattr(self, "lm_head", None)

    def resize_token_embeddings(self, new_num_tokens: int | None = None,
                                pad_to_multiple_of: int | None = None) -> nn.Embedding:
        """Grow or shrink the vocabulary; new rows start at the mean of the old ones."""
        old = self.get_input_embeddings()
        if new_num_tokens is None:
            new_num_tokens = old.num_embeddings
        if pad_to_multiple_of:
            new_num_tokens = -(-new_num_tokens // pad_to_multiple_of) * pad_to_multiple_of
        if new_num_tokens <= 0:
            raise ValueError(f"new_num_tokens must be positive, got {new_num_tokens}")
        new = nn.Embedding(new_num_tokens, old.embedding_dim, device=old.weight.device,
                           dtype=old.weight.dtype)
        n = min(new_num_tokens, old.num_embeddings)
        with torch.no_grad():
            new.weight[:n] = old.weight[:n]
            new.weight[n:] = old.weight.mean(0, keepdim=True)
        self.set_input_embeddings(new)
        return new

    def _retie(self) -> None:
        """Make the LM head match the (new) vocabulary: the embedding itself when tied, else
        its old rows kept and new rows at their mean."""
        head = getattr(self, "lm_head", None)
        if head is None:
            return
        if self.config.tie_word_embeddings:
            head.out_features = self.config.vocab_size
            head.weight = self.get_input_embeddings().weight
            return
        old, n = head.weight, self.config.vocab_size
        new = nn.Linear(old.shape[1], n, bias=False, device=old.device, dtype=old.dtype)
        with torch.no_grad():
            new.weight[:min(n, old.shape[0])] = old[:n]
            new.weight[old.shape[0]:] = old.mean(0, keepdim=True)
        self.lm_head = new
