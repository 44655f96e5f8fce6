"""DeepMind's checkpoints in Hugging Face names: one declarative table per format, plus shape
fixes, and the config fields their shapes reveal.

DEEPMIND_TORCH_RULES maps the `.pt` state dict of `recurrentgemma.torch.Griffin`;
DEEPMIND_FLAX_RULES maps the Flax tree of `recurrentgemma.jax.Griffin` flattened with "."
(the same names, except that Dense layers hold `kernel` [in, out] where torch holds `weight`
[out, in]). Width, heads, lru width, MLP width, vocabulary, conv width and the layer pattern come
from the shapes (as DeepMind's `GriffinConfig.from_torch_params` reads them); the attention
window, the logit soft-cap and the embedding scaling come from a preset or explicit values.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch

from rgemma.models.config import PRESETS, RecurrentGemmaConfig

Fix = Callable[[torch.Tensor], list[torch.Tensor]]


# --------------------------------------------------------------------------- shape fixes
def _same(t: torch.Tensor) -> list[torch.Tensor]:
    return [t]


def _transpose(t: torch.Tensor) -> list[torch.Tensor]:  # Flax Dense kernel [in, out] -> [out, in]
    _rank(t, 2)
    return [t.t().contiguous()]


def _conv(t: torch.Tensor) -> list[torch.Tensor]:  # DeepMind [K, E] -> HF [E, 1, K], no flip
    _rank(t, 2)
    return [t.t().unsqueeze(1).contiguous()]


def _split_up_w(t: torch.Tensor) -> list[torch.Tensor]:  # [2, D, F] -> gate [F, D], up [F, D]
    _rank(t, 3, first=2)
    return [t[0].t().contiguous(), t[1].t().contiguous()]


def _split_up_b(t: torch.Tensor) -> list[torch.Tensor]:  # [2, 1, 1, F] -> gate [F], up [F]
    _rank(t, 4, first=2)
    return [t[0].reshape(-1).contiguous(), t[1].reshape(-1).contiguous()]


def _rank(t: torch.Tensor, n: int, first: int | None = None) -> None:
    if t.ndim != n or (first is not None and t.shape[0] != first):
        lead = f" with leading dimension {first}" if first is not None else ""
        raise ValueError(f"expected {n} dimensions{lead}")


# --------------------------------------------------------------------------- the tables
class Rule(NamedTuple):
    """`source` key template -> HF key template(s); `{n}` is the block index."""

    source: str
    targets: tuple[str, ...]
    fix: Fix = _same


L = "model.layers.{n}"
T = L + ".temporal_block"

_DEEPMIND_SHARED = [
    Rule("embedder.input_embedding", ("model.embed_tokens.weight",)),
    Rule("final_norm.scale", ("model.final_norm.weight",)),
    Rule("blocks.{n}.temporal_pre_norm.scale", (L + ".temporal_pre_norm.weight",)),
    Rule("blocks.{n}.channel_pre_norm.scale", (L + ".channel_pre_norm.weight",)),
    Rule("blocks.{n}.recurrent_block.conv_1d.w", (T + ".conv_1d.weight",), _conv),
    Rule("blocks.{n}.recurrent_block.conv_1d.b", (T + ".conv_1d.bias",)),
    Rule("blocks.{n}.recurrent_block.rg_lru.a_param", (T + ".rg_lru.recurrent_param",)),
    Rule("blocks.{n}.recurrent_block.rg_lru.input_gate.w", (T + ".rg_lru.input_gate_weight",)),
    Rule("blocks.{n}.recurrent_block.rg_lru.input_gate.b", (T + ".rg_lru.input_gate_bias",)),
    Rule("blocks.{n}.recurrent_block.rg_lru.a_gate.w", (T + ".rg_lru.recurrent_gate_weight",)),
    Rule("blocks.{n}.recurrent_block.rg_lru.a_gate.b", (T + ".rg_lru.recurrent_gate_bias",)),
    Rule(
        "blocks.{n}.mlp_block.ffw_up.w",
        (L + ".mlp_block.gate_proj.weight", L + ".mlp_block.up_proj.weight"),
        _split_up_w,
    ),
    Rule(
        "blocks.{n}.mlp_block.ffw_up.b",
        (L + ".mlp_block.gate_proj.bias", L + ".mlp_block.up_proj.bias"),
        _split_up_b,
    ),
]


def _dense(src: str, dst: str, kernel: str, fix: Fix, bias: bool = True) -> list[Rule]:
    """A dense layer: its weight (called `kernel` in the source) and its bias, if any."""
    rules = [Rule(f"blocks.{{n}}.{src}.{kernel}", (dst + ".weight",), fix)]
    return rules + ([Rule(f"blocks.{{n}}.{src}.bias", (dst + ".bias",))] if bias else [])


def _dense_rules(kernel: str, fix: Fix) -> list[Rule]:
    return [
        *_dense("recurrent_block.linear_x", T + ".linear_x", kernel, fix),
        *_dense("recurrent_block.linear_y", T + ".linear_y", kernel, fix),
        *_dense("recurrent_block.linear_out", T + ".linear_out", kernel, fix),
        *_dense("attention_block.proj_q", T + ".q_proj", kernel, fix, bias=False),
        *_dense("attention_block.proj_k", T + ".k_proj", kernel, fix, bias=False),
        *_dense("attention_block.proj_v", T + ".v_proj", kernel, fix, bias=False),
        *_dense("attention_block.proj_final", T + ".o_proj", kernel, fix),
        *_dense("mlp_block.ffw_down", L + ".mlp_block.down_proj", kernel, fix),
    ]


DEEPMIND_TORCH_RULES: list[Rule] = _DEEPMIND_SHARED + _dense_rules("weight", _same)
DEEPMIND_FLAX_RULES: list[Rule] = _DEEPMIND_SHARED + _dense_rules("kernel", _transpose)


@functools.cache
def _pattern(template: str) -> re.Pattern:
    return re.compile(r"(?P<n>\d+)".join(re.escape(part) for part in template.split("{n}")))


def match_rule(rules: list[Rule], key: str) -> tuple[tuple[str, ...], Fix]:
    """HF key(s) and shape fix for one source key; ValueError naming an unknown key."""
    for rule in rules:
        m = _pattern(rule.source).fullmatch(key)
        if m:
            return tuple(t.format(**m.groupdict()) for t in rule.targets), rule.fix
    hint = (
        " (this looks like a Hugging Face state dict: use --from hf on its directory)"
        if key.startswith(("model.", "lm_head."))
        else ""
    )
    raise ValueError(f"unknown DeepMind checkpoint key {key!r}{hint}")


def source_name(rules: list[Rule], hf_key: str) -> str:
    """The source key that would produce `hf_key` (for messages about missing tensors)."""
    for rule in rules:
        for target in rule.targets:
            m = _pattern(target).fullmatch(hf_key)
            if m:
                return rule.source.format(**m.groupdict())
    return hf_key


def deepmind_to_hf(state: dict[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield HF (key, tensor) pairs of a DeepMind torch state dict, each source key used once."""
    for key, tensor in state.items():
        targets, fix = match_rule(DEEPMIND_TORCH_RULES, key)
        yield from zip(targets, fix(tensor))


# --------------------------------------------------------------------------- config inference
_LAYER = re.compile(r"model\.layers\.(\d+)\.")
_STRUCTURE = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "lru_width",
    "intermediate_size",
    "conv1d_width",
    "block_types",
)


def infer_structure(shapes: dict[str, tuple[int, ...]], name: Callable[[str], str]) -> dict:
    """Config fields readable from HF-layout shapes, as DeepMind's `from_torch_params` reads them."""

    def dims(key: str, n: int) -> tuple[int, ...]:
        if key not in shapes:
            raise ValueError(f"missing tensor {name(key)!r}")
        if len(shapes[key]) != n:
            raise ValueError(f"tensor {name(key)!r} has {len(shapes[key])} dimensions, expected {n}")
        return shapes[key]

    vocab, width = dims("model.embed_tokens.weight", 2)
    numbers = {int(m.group(1)) for k in shapes if (m := _LAYER.match(k))}
    if not numbers:
        raise ValueError("no layers found (no 'blocks.N...' tensors)")
    kinds, heads, lru_width, conv_width = [], {}, None, 4
    for i in range(max(numbers) + 1):
        block = f"model.layers.{i}.temporal_block."
        if block + "rg_lru.recurrent_gate_weight" in shapes:
            h, e, _ = dims(block + "rg_lru.recurrent_gate_weight", 3)
            kinds.append("recurrent")
            heads.setdefault(h, i)
            lru_width, conv_width = h * e, dims(block + "conv_1d.weight", 3)[-1]
        elif block + "k_proj.weight" in shapes:
            head_dim = dims(block + "k_proj.weight", 2)[0]  # DeepMind: one key/value head
            kinds.append("attention")
            heads.setdefault(width // max(head_dim, 1), i)
        else:
            raise ValueError(
                f"cannot tell the temporal block of layer {i}: found neither "
                f"{name(block + 'rg_lru.recurrent_gate_weight')!r} "
                f"nor {name(block + 'k_proj.weight')!r}"
            )
    if len(heads) > 1:
        (h1, i1), (h2, i2) = list(heads.items())[:2]
        raise ValueError(f"layers disagree on the number of heads: {h1} (layer {i1}) and {h2} (layer {i2})")
    mlp = dims("model.layers.0.mlp_block.gate_proj.weight", 2)[0]
    return dict(
        vocab_size=vocab,
        hidden_size=width,
        num_hidden_layers=len(kinds),
        num_attention_heads=next(iter(heads)),
        num_key_value_heads=1,
        lru_width=lru_width,
        intermediate_size=2 * mlp,
        conv1d_width=conv_width,
        block_types=_period(kinds),
    )


def _period(kinds: list[str]) -> tuple[str, ...]:
    """The shortest pattern whose cycle gives `kinds` (Griffin: recurrent, recurrent, attention)."""
    for p in range(1, len(kinds) + 1):
        if all(kinds[i] == kinds[i % p] for i in range(len(kinds))):
            return tuple(kinds[:p])
    return tuple(kinds)


def deepmind_config(
    structure: dict, preset: str | None, window: int | None, cap: float | None, embedding_scale: bool | None
) -> RecurrentGemmaConfig:
    """The inferred shapes plus what only a preset or the user can say."""
    fields: dict = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        values = PRESETS[preset]
        for f in _STRUCTURE:
            want, got = values.get(f, structure[f]), structure[f]
            if f == "lru_width":  # None means hidden_size
                want, got = want or values["hidden_size"], got or structure["hidden_size"]
            if (tuple(want) if f == "block_types" else want) != got:
                raise ValueError(
                    f"the checkpoint does not match preset {preset!r}: its {f} is {got}, "
                    f"the preset's is {want}; pass explicit flags instead of --preset"
                )
        fields = {
            k: values[k] for k in ("attention_window_size", "logits_soft_cap", "embeddings_scale_by_sqrt_dim")
        }
    else:
        needed = [
            flag
            for flag, value, used in (
                ("--attention-window-size", window, "attention" in structure["block_types"]),
                ("--logits-soft-cap", cap, True),
            )
            if value is None and used
        ]
        if needed:
            raise ValueError(
                "a DeepMind checkpoint does not record the attention window, the logit "
                f"soft-cap or the embedding scaling: pass --preset (one of "
                f"{', '.join(sorted(PRESETS))}) or {' and '.join(needed)} "
                "(and --no-embedding-scale for the paper's Griffin/Hawk)"
            )
    fields.update(explicit_fields(window, cap, embedding_scale))
    return RecurrentGemmaConfig(**structure, **fields)


def explicit_fields(window, cap, embedding_scale) -> dict:
    """The config fields the user gave (None means not given)."""
    values = dict(
        attention_window_size=window, logits_soft_cap=cap, embeddings_scale_by_sqrt_dim=embedding_scale
    )
    return {k: v for k, v in values.items() if v is not None}
