"""What every model class offers beyond forward, as transformers users know it: `device`,
`dtype`, `num_parameters`, gradient checkpointing switches and input embedding access/resizing.
Loading, saving and generate() sit above, in rgemma.pretrained."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def floating_dtype(tensors: Iterable[torch.Tensor]) -> torch.dtype:
    """The dtype of the first floating-point tensor: a model's dtype, whatever int8 buffers or
    integer tensors come first."""
    for t in tensors:
        if t.is_floating_point():
            return t.dtype
    raise ValueError("no floating-point tensor to take a dtype from")


class ModelSurface:
    config: object

    # ------------------------------------------------------------------ introspection
    @property
    def base_model(self) -> nn.Module:
        return getattr(self, "model", self)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return floating_dtype(self.parameters())

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameters counted once each (the tied LM head is the embedding)."""
        skip = set()
        if exclude_embeddings:
            skip.add(id(self.get_input_embeddings().weight))
        return sum(
            p.numel()
            for p in self.parameters()  # parameters() yields tied ones once
            if id(p) not in skip and (p.requires_grad or not only_trainable)
        )

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

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None
    ) -> nn.Embedding:
        """Grow or shrink the vocabulary; new rows start at the mean of the old ones."""
        old = self.get_input_embeddings()
        if new_num_tokens is None:
            new_num_tokens = old.num_embeddings
        if pad_to_multiple_of:
            new_num_tokens = -(-new_num_tokens // pad_to_multiple_of) * pad_to_multiple_of
        if new_num_tokens <= 0:
            raise ValueError(f"new_num_tokens must be positive, got {new_num_tokens}")
        new = nn.Embedding(
            new_num_tokens, old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype
        )
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
            new.weight[: min(n, old.shape[0])] = old[:n]
            new.weight[old.shape[0] :] = old.mean(0, keepdim=True)
        self.lm_head = new
