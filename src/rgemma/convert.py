"""Foreign checkpoint formats to Hugging Face keys: one declarative table plus shape fixes.

DeepMind's PyTorch state dict (`recurrentgemma.torch.Griffin`) maps to HF keys by the rules in
DEEPMIND_TORCH_RULES. Every source key must be used exactly once; anything left over, missing,
or of an unexpected shape stops the conversion with a message naming the key.
"""

from __future__ import annotations

import re
from typing import Callable, Iterator

import torch


Fix = Callable[[torch.Tensor], list[torch.Tensor]]


def _same(t: torch.Tensor) -> list[torch.Tensor]:
    return [t]


def _conv(t: torch.Tensor) -> list[torch.Tensor]:  # DeepMind [K, E] -> HF [E, 1, K], no flip
    return [t.t().unsqueeze(1).contiguous()]


def _split_up_w(t: torch.Tensor) -> list[torch.Tensor]:  # [2, D, F] -> gate [F, D], up [F, D]
    return [t[0].t().contiguous(), t[1].t().contiguous()]


def _split_up_b(t: torch.Tensor) -> list[torch.Tensor]:  # [2, 1, 1, F] -> gate [F], up [F]
    return [t[0].reshape(-1).contiguous(), t[1].reshape(-1).contiguous()]


# (DeepMind key regex, HF key template(s), shape fix). `{n}` is the block index.
DEEPMIND_TORCH_RULES: list[tuple[str, tuple[str, ...], Fix]] = [
    (r"embedder\.input_embedding", ("model.embed_tokens.weight",), _same),
    (r"final_norm\.scale", ("model.final_norm.weight",), _same),
    (r"blocks\.(?P<n>\d+)\.(?P<norm>temporal_pre_norm|channel_pre_norm)\.scale",
     ("model.layers.{n}.{norm}.weight",), _same),
    (r"blocks\.(?P<n>\d+)\.recurrent_block\.(?P<lin>linear_x|linear_y|linear_out)\.(?P<p>weight|bias)",
     ("model.layers.{n}.temporal_block.{lin}.{p}",), _same),
    (r"blocks\.(?P<n>\d+)\.recurrent_block\.conv_1d\.w", ("model.layers.{n}.temporal_block.conv_1d.weight",), _conv),
    (r"blocks\.(?P<n>\d+)\.recurrent_block\.conv_1d\.b", ("model.layers.{n}.temporal_block.conv_1d.bias",), _same),
    (r"blocks\.(?P<n>\d+)\.recurrent_block\.rg_lru\.a_param",
     ("model.layers.{n}.temporal_block.rg_lru.recurrent_param",), _same),
    (r"blocks\.(?P<n>\d+)\.recurrent_block\.rg_lru\.input_gate\.(?P<p>w|b)",
     ("model.layers.{n}.temporal_block.rg_lru.input_gate_{pname}",), _same),
    (r"blocks\.(?P<n>\d+)\.recurrent_block\.rg_lru\.a_gate\.(?P<p>w|b)",
     ("model.layers.{n}.temporal_block.rg_lru.recurrent_gate_{pname}",), _same),
    (r"blocks\.(?P<n>\d+)\.attention_block\.proj_(?P<x>q|k|v)\.weight",
     ("model.layers.{n}.temporal_block.{x}_proj.weight",), _same),
    (r"blocks\.(?P<n>\d+)\.attention_block\.proj_final\.(?P<p>weight|bias)",
     ("model.layers.{n}.temporal_block.o_proj.{p}",), _same),
    (r"blocks\.(?P<n>\d+)\.mlp_block\.ffw_up\.w",
     ("model.layers.{n}.mlp_block.gate_proj.weight", "model.layers.{n}.mlp_block.up_proj.weight"),
     _split_up_w),
    (r"blocks\.(?P<n>\d+)\.mlp_block\.ffw_up\.b",
     ("model.layers.{n}.mlp_block.gate_proj.bias", "model.layers.{n}.mlp_block.up_proj.bias"),
     _split_up_b),
    (r"blocks\.(?P<n>\d+)\.mlp_block\.ffw_down\.(?P<p>weight|bias)",
     ("model.layers.{n}.mlp_block.down_proj.{p}",), _same),
]


def map_deepmind_key(key: str) -> tuple[tuple[str, ...], Fix]:
    """HF key(s) and shape fix for one DeepMind key; ValueError naming an unknown key."""
    for pattern, targets, fix in DEEPMIND_TORCH_RULES:
        m = re.fullmatch(pattern, key)
        if m:
            groups = m.groupdict()
            if "p" in groups:
                groups["pname"] = {"w": "weight", "b": "bias"}.get(groups["p"], groups["p"])
            return tuple(t.format(**groups) for t in targets), fix
    raise ValueError(f"unknown DeepMind checkpoint key {key!r}")


def deepmind_to_hf(state: dict[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield HF (key, tensor) pairs, using every source key exactly once."""
    produced: set[str] = set()
    for key in state:
        targets, fix = map_deepmind_key(key)
        tensors = fix(state[key])
        for name, t in zip(targets, tensors):
            if name in produced:
                raise ValueError(f"DeepMind key {key!r} maps to {name!r}, which was already produced")
            produced.add(name)
            yield name, t
