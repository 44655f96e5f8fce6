"""Output containers shaped like transformers' ModelOutput: attribute, key and index access."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

from rgemma.models.rewind import Rewind
from rgemma.models.state import State


class _Output:
    """Fields are reachable as `out.logits`, `out["logits"]`, or `out[0]` (the non-None values,
    in order, as transformers does); `to_tuple()` gives those values."""

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]

    def __iter__(self):
        return iter(self.keys())

    def __contains__(self, key: str) -> bool:
        return key in self.keys()


@dataclass
class BaseModelOutput(_Output):
    last_hidden_state: torch.Tensor | None = None
    cache: State | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    rewind: Rewind | None = None  # forward(rewind=True): rgemma.models.rewind

    @property
    def past_key_values(self) -> State | None:  # transformers' name for the cache
        return self.cache


@dataclass
class CausalLMOutput(_Output):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: State | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    rewind: Rewind | None = None

    @property
    def past_key_values(self) -> State | None:
        return self.cache


@dataclass
class GenerateDecoderOnlyOutput(_Output):
    """generate(return_dict_in_generate=True) for greedy and sampling, as transformers shapes
    it: `scores` are the processed scores and `logits` the raw logits of each step, (B, V)."""

    sequences: torch.Tensor | None = None
    scores: tuple[torch.Tensor, ...] | None = None
    logits: tuple[torch.Tensor, ...] | None = None
    attentions: None = None
    hidden_states: None = None
    past_key_values: State | None = None


@dataclass
class GenerateBeamDecoderOnlyOutput(_Output):
    """generate(num_beams > 1, return_dict_in_generate=True): `sequences_scores` are the final
    (length-normalised) beam scores, `scores` each step's processed log-probs for every beam,
    `beam_indices` the flat beam each generated token came from (-1 after a sequence ends)."""

    sequences: torch.Tensor | None = None
    sequences_scores: torch.Tensor | None = None
    scores: tuple[torch.Tensor, ...] | None = None
    logits: tuple[torch.Tensor, ...] | None = None
    beam_indices: torch.Tensor | None = None
    attentions: None = None
    hidden_states: None = None
    past_key_values: State | None = None
