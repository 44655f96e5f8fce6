"""The fixed-size recurrent state of RecurrentGemma, as an explicit object.

Per sequence (row) it holds, whatever the text length:
- per recurrent layer: the last K-1 conv inputs (model dtype), oldest first, and the RG-LRU
  vector `h` (always float32);
- per attention layer: a ring of the last W keys and values (post-RoPE). The key of the
  token with count c sits in slot c % W;
- per row: `count` (tokens seen; padding is never counted), `doc_start` (the count at which
  the current document began, i.e. of the last position-0 token) and `next_pos` (the
  position the next token gets when the caller passes no positions).

Visibility is derived from counts alone: an entry with count c is visible to a query with
count q iff doc_start(q) <= c and q - c <= window. So empty slots, previous documents and
padding need no stored masks.

The model updates a State in place and returns it; `clone()` first to keep a snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import torch

from rgemma.models.config import RecurrentGemmaConfig


@dataclass
class RecurrentState:
    conv: torch.Tensor  # (B, K-1, E) last conv inputs, oldest first
    h: torch.Tensor  # (B, E) float32


@dataclass
class AttentionState:
    k: torch.Tensor  # (B, W, Hkv, Dh) ring; slot = count % W
    v: torch.Tensor  # (B, W, Hkv, Dh)


@dataclass
class State:
    """Everything a model needs to continue a batch of sequences. See the module docstring."""

    layers: list[RecurrentState | AttentionState]
    count: torch.Tensor  # (B,) int64
    doc_start: torch.Tensor  # (B,) int64
    next_pos: torch.Tensor  # (B,) int64
    fingerprint: str = field(default="", compare=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def zeros(
        cls,
        config: RecurrentGemmaConfig,
        batch_size: int,
        dtype: torch.dtype,
        device: torch.device | str | None = None,
    ) -> State:
        """An empty state: nothing seen yet."""
        layers: list[RecurrentState | AttentionState] = []
        kv = (batch_size, config.attention_window_size, config.num_key_value_heads, config.head_dim)
        for kind in config.layers_block_type:
            if kind == "recurrent":
                layers.append(
                    RecurrentState(
                        conv=torch.zeros(
                            batch_size, config.conv1d_width - 1, config.lru_width, dtype=dtype, device=device
                        ),
                        h=torch.zeros(batch_size, config.lru_width, dtype=torch.float32, device=device),
                    )
                )
            else:
                layers.append(
                    AttentionState(
                        k=torch.zeros(kv, dtype=dtype, device=device),
                        v=torch.zeros(kv, dtype=dtype, device=device),
                    )
                )
        zeros = torch.zeros(batch_size, dtype=torch.long, device=device)
        return cls(layers, zeros, zeros.clone(), zeros.clone(), fingerprint=state_fingerprint(config))

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], config: RecurrentGemmaConfig) -> State:
        """The inverse of `tensors()`: the state of a `config` model from its named tensors, as
        they are (`.to()` then moves them and sets the dtype)."""
        layers: list[RecurrentState | AttentionState] = []
        for i, kind in enumerate(config.layers_block_type):
            layer = RecurrentState if kind == "recurrent" else AttentionState
            layers.append(layer(**{f.name: tensors[f"layers.{i}.{f.name}"] for f in fields(layer)}))
        counters = (tensors["count"], tensors["doc_start"], tensors["next_pos"])
        return cls(layers, *counters, fingerprint=state_fingerprint(config))

    # ------------------------------------------------------------------ properties
    @property
    def batch_size(self) -> int:
        return self.count.shape[0]

    @property
    def device(self) -> torch.device:
        return self.count.device

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor, by a stable name (used by save/load and size accounting)."""
        out = {"count": self.count, "doc_start": self.doc_start, "next_pos": self.next_pos}
        for i, layer in enumerate(self.layers):
            for name, t in vars(layer).items():
                out[f"layers.{i}.{name}"] = t
        return out

    def nbytes(self) -> int:
        """Size of the state in bytes (all rows)."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    # ------------------------------------------------------------------ row operations
    def map(self, fn) -> State:
        """A new State with `fn` applied to every tensor (all are batch-first)."""
        layers = [type(layer)(**{k: fn(t) for k, t in vars(layer).items()}) for layer in self.layers]
        return State(
            layers, fn(self.count), fn(self.doc_start), fn(self.next_pos), fingerprint=self.fingerprint
        )

    def clone(self) -> State:
        return self.map(torch.clone)

    def select(self, rows: torch.Tensor | list[int]) -> State:
        """Rows `rows` (reorder for beam search, drop finished rows, repeat for n samples)."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        if index.ndim != 1:
            raise ValueError(f"select() wants a 1-D list of row indices, got shape {tuple(index.shape)}")
        if index.numel() and (index.min() < 0 or index.max() >= self.batch_size):
            raise ValueError(f"select(): row index out of range for a state of {self.batch_size} rows")
        return self.map(lambda t: t.index_select(0, index))

    @classmethod
    def cat(cls, states: list[State]) -> State:
        """Stack the rows of several states of the same model (continuous batching)."""
        if not states:
            raise ValueError("State.cat() needs at least one state")
        first = states[0]
        for s in states[1:]:
            if s.fingerprint != first.fingerprint or len(s.layers) != len(first.layers):
                raise ValueError("State.cat(): states come from different models")
        layers = [
            type(layer)(**{k: torch.cat([getattr(s.layers[i], k) for s in states]) for k in vars(layer)})
            for i, layer in enumerate(first.layers)
        ]
        return cls(
            layers,
            torch.cat([s.count for s in states]),
            torch.cat([s.doc_start for s in states]),
            torch.cat([s.next_pos for s in states]),
            fingerprint=first.fingerprint,
        )

    def to(self, device=None, dtype: torch.dtype | None = None) -> State:
        """Move to a device; `dtype` converts conv windows and K/V rings (h stays float32,
        counters stay int64)."""

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device)

        out = self.map(move)
        if dtype is not None:
            for layer in out.layers:
                for name, t in vars(layer).items():
                    if name != "h":
                        setattr(layer, name, t.to(dtype))
        return out

    def check_compatible(self, config: RecurrentGemmaConfig, batch_size: int) -> None:
        """Raise ValueError if this state cannot continue `batch_size` rows of this model."""
        if self.fingerprint and self.fingerprint != state_fingerprint(config):
            raise ValueError(
                "cache was built for a different model config "
                f"({self.fingerprint} != {state_fingerprint(config)})"
            )
        if len(self.layers) != config.num_hidden_layers:
            raise ValueError(f"cache has {len(self.layers)} layers, the model has {config.num_hidden_layers}")
        if self.batch_size != batch_size:
            raise ValueError(f"cache holds {self.batch_size} rows but the input has {batch_size}")


def state_fingerprint(config: RecurrentGemmaConfig) -> str:
    """The shape-defining fields of a config, as a short string (not the weights)."""
    return (
        f"L{config.num_hidden_layers}-D{config.hidden_size}-E{config.lru_width}"
        f"-H{config.num_attention_heads}-KV{config.num_key_value_heads}"
        f"-W{config.attention_window_size}-K{config.conv1d_width}-"
        + "".join(k[0] for k in config.block_types)
    )
