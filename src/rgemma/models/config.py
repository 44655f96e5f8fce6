"""RecurrentGemmaConfig: the model's hyper-parameters, named presets, and config.json I/O.

Field names, defaults and meanings follow transformers' `RecurrentGemmaConfig`, so a published
config.json loads unchanged. Two spellings of the same facts exist in the wild and both are read:
`block_types` (9B) or `_block_types` (2B), and top-level `rope_theta`/`partial_rotary_factor`
(published files) or a `rope_parameters` dict (transformers 5).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rgemma.io.files import require_file

BLOCK_TYPES = ("recurrent", "attention")
ACTIVATIONS = ("gelu_pytorch_tanh", "gelu_tanh", "gelu")
# What a config.json must state. The rest has a published default (transformers', which the
# released checkpoints share): lru_width = hidden_size, conv1d_width 4, window 2048, the
# Griffin block pattern, rms_norm_eps, rope... num_key_value_heads defaults to the head count
# in transformers, but the released models use 1, so it is required too.
REQUIRED_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "vocab_size",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
)


@dataclass
class RecurrentGemmaConfig:
    """Hyper-parameters of a RecurrentGemma / Griffin / Hawk model.

    `intermediate_size` is twice the MLP width (transformers' convention: the 2B file says
    15360 for an MLP of 7680). `logits_soft_cap=0` means no cap. `lru_width=None` means
    `hidden_size`; `num_key_value_heads=None` means `num_attention_heads`.
    """

    num_hidden_layers: int = 26
    vocab_size: int = 256000
    hidden_size: int = 2560
    intermediate_size: int = 7680
    num_attention_heads: int = 10
    lru_width: int | None = None
    attention_window_size: int = 2048
    conv1d_width: int = 4
    logits_soft_cap: float = 30.0
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    pad_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 1
    bos_token_id: int | None = 2
    hidden_activation: str = "gelu_pytorch_tanh"
    partial_rotary_factor: float = 0.5
    rope_theta: float = 10000.0
    block_types: tuple[str, ...] = ("recurrent", "recurrent", "attention")
    attention_dropout: float = 0.0
    num_key_value_heads: int | None = None
    attention_bias: bool = False
    w_init_variance_scale: float = 0.01
    embeddings_scale_by_sqrt_dim: bool = True
    tie_word_embeddings: bool = True
    # Keys of config.json that we do not model (architectures, torch_dtype, ...), kept so
    # that save_pretrained writes them back.
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    model_type: ClassVar[str] = "recurrent_gemma"  # what transformers-side tools (peft) read
    is_encoder_decoder: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if isinstance(self.block_types, str):
            self.block_types = (self.block_types,)
        self.block_types = tuple(self.block_types)
        if self.lru_width is None:
            self.lru_width = self.hidden_size
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        self.validate()

    # ----------------------------------------------------------------- derived values
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def mlp_width(self) -> int:
        return self.intermediate_size // 2

    @property
    def final_w_init_variance_scale(self) -> float:
        return 2.0 / self.num_hidden_layers

    @property
    def layers_block_type(self) -> list[str]:
        """The temporal block of each layer: `block_types` cycled over the layers."""
        n = len(self.block_types)
        return [self.block_types[i % n] for i in range(self.num_hidden_layers)]

    @property
    def embedding_scale(self) -> float:
        """sqrt(hidden_size) rounded to bfloat16, as the weights were trained (50.5 for 2560)."""
        if not self.embeddings_scale_by_sqrt_dim:
            return 1.0
        return _round_to_bf16(math.sqrt(self.hidden_size))

    @property
    def eos_token_ids(self) -> list[int]:
        ids = self.eos_token_id
        if ids is None:
            return []
        return [ids] if isinstance(ids, int) else list(ids)

    # ----------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        for name in (
            "num_hidden_layers",
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_attention_heads",
            "lru_width",
            "attention_window_size",
            "conv1d_width",
            "num_key_value_heads",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"config field {name!r} must be a positive integer, got {value!r}")
        _check(
            self.intermediate_size % 2 == 0,
            "intermediate_size",
            f"must be even (it is twice the MLP width), got {self.intermediate_size}",
        )
        _check(
            self.hidden_size % self.num_attention_heads == 0,
            "num_attention_heads",
            f"{self.num_attention_heads} does not divide hidden_size {self.hidden_size}",
        )
        _check(
            self.lru_width % self.num_attention_heads == 0,
            "num_attention_heads",
            f"{self.num_attention_heads} does not divide lru_width {self.lru_width}",
        )
        _check(
            self.num_attention_heads % self.num_key_value_heads == 0,
            "num_key_value_heads",
            f"{self.num_key_value_heads} does not divide num_attention_heads {self.num_attention_heads}",
        )
        _check(
            self.head_dim % 4 == 0 or self.partial_rotary_factor == 0,
            "num_attention_heads",
            f"head_dim {self.head_dim} must be a multiple of 4 for half-head RoPE",
        )
        _check(len(self.block_types) > 0, "block_types", "must not be empty")
        for kind in self.block_types:
            _check(
                kind in BLOCK_TYPES,
                "block_types",
                f"unknown block type {kind!r}; expected one of {BLOCK_TYPES}",
            )
        _check(
            self.hidden_activation in ACTIVATIONS,
            "hidden_activation",
            f"unsupported {self.hidden_activation!r}; expected one of {ACTIVATIONS}",
        )
        for name in (
            "logits_soft_cap",
            "rope_theta",
            "rms_norm_eps",
            "partial_rotary_factor",
            "attention_dropout",
            "w_init_variance_scale",
        ):
            value = getattr(self, name)
            _check(
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value >= 0,
                name,
                f"must be a non-negative number, got {value!r}",
            )
        _check(self.rope_theta > 0, "rope_theta", "must be positive")
        _check(0 <= self.partial_rotary_factor <= 1, "partial_rotary_factor", "must be in [0, 1]")
        _check(self.attention_dropout < 1, "attention_dropout", "must be below 1")
        for name in ("pad_token_id", "bos_token_id"):
            value = getattr(self, name)
            _check(
                value is None or (isinstance(value, int) and 0 <= value < self.vocab_size),
                name,
                f"{value!r} is not a token id in [0, {self.vocab_size})",
            )
        for value in self.eos_token_ids:
            _check(
                isinstance(value, int) and 0 <= value < self.vocab_size,
                "eos_token_id",
                f"{value!r} is not a token id in [0, {self.vocab_size})",
            )

    # ----------------------------------------------------------------- presets
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> RecurrentGemmaConfig:
        """One of PRESETS (DeepMind's `common.Preset`), with optional field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    # ----------------------------------------------------------------- dict / json
    @classmethod
    def from_dict(cls, data: dict[str, Any], strict: bool = False) -> RecurrentGemmaConfig:
        """Build from a config.json dict, accepting both spellings of rope and block keys.
        `strict` (config.json files) requires REQUIRED_KEYS instead of defaulting them."""
        if not isinstance(data, dict):
            raise ValueError(f"config must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        model_type = data.pop("model_type", "recurrent_gemma")
        if model_type != "recurrent_gemma":
            raise ValueError(f"config field 'model_type' is {model_type!r}, expected 'recurrent_gemma'")
        if strict:
            _require_shape_keys(data)
        rope = data.pop("rope_parameters", None) or data.pop("rope_scaling", None) or {}
        if not isinstance(rope, dict):
            raise ValueError(f"config field 'rope_parameters' must be an object, got {rope!r}")
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"config field 'rope_parameters': unsupported rope_type {rope['rope_type']!r}")
        for key in ("rope_theta", "partial_rotary_factor"):
            if key in rope and key not in data:
                data[key] = rope[key]
        if "_block_types" in data:
            data.setdefault("block_types", data.pop("_block_types"))
        for derived in ("head_dim", "final_w_init_variance_scale"):
            data.pop(derived, None)  # derived from other fields; written for transformers
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        try:
            return cls(**kwargs, extra=extra)
        except TypeError as err:  # e.g. a list where a number belongs
            raise ValueError(f"invalid config: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        """A config.json dict that both rgemma and transformers read."""
        out = {k: v for k, v in self.extra.items() if k not in ("rope_parameters", "_block_types")}
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"})
        out["block_types"] = list(self.block_types)
        out["model_type"] = "recurrent_gemma"
        out.setdefault("architectures", ["RecurrentGemmaForCausalLM"])
        out["head_dim"] = self.head_dim
        out["final_w_init_variance_scale"] = self.final_w_init_variance_scale
        out["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": self.rope_theta,
            "partial_rotary_factor": self.partial_rotary_factor,
        }
        return out

    @classmethod
    def from_json_file(cls, path: str | Path) -> RecurrentGemmaConfig:
        path = require_file(path, "config.json")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: invalid JSON ({err})") from None
        try:
            return cls.from_dict(data, strict=True)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path | None) -> RecurrentGemmaConfig:
        """config.json of a directory, a repo id in the local HF cache, or (None) the bundled model."""
        from rgemma.io.checkpoint_files import resolve_model_dir

        return cls.from_json_file(resolve_model_dir(path_or_repo_id) / "config.json")

    def save_pretrained(self, save_directory: str | Path) -> None:
        """Write config.json into `save_directory` (created if missing)."""
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        (Path(save_directory) / "config.json").write_text(self.to_json_string())

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


def _require_shape_keys(data: dict[str, Any]) -> None:
    """A config.json must state the sizes of its tensors: defaulting them to the 2B values
    would only surface later as a confusing tensor-shape error."""
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(
            f"missing required key(s) {', '.join(map(repr, missing))}; "
            "they set the tensor shapes, so no default is assumed"
        )


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"config field {name!r}: {message}")


def _round_to_bf16(x: float) -> float:
    import torch  # local: keep config importable without touching torch at import time

    return float(torch.tensor(x, dtype=torch.float32).to(torch.bfloat16).float())


_GRIFFIN = ("recurrent", "recurrent", "attention")

# DeepMind's `recurrentgemma.common.Preset`, in transformers' field names.
PRESETS: dict[str, dict[str, Any]] = {
    "recurrentgemma-2b": dict(
        hidden_size=2560,
        num_hidden_layers=26,
        num_attention_heads=10,
        num_key_value_heads=1,
        lru_width=2560,
        intermediate_size=2 * 7680,
        attention_window_size=2048,
        embeddings_scale_by_sqrt_dim=True,
        logits_soft_cap=30.0,
        block_types=_GRIFFIN,
        vocab_size=256000,
    ),
    "recurrentgemma-9b": dict(
        hidden_size=4096,
        num_hidden_layers=38,
        num_attention_heads=16,
        num_key_value_heads=1,
        lru_width=4096,
        intermediate_size=2 * 12288,
        attention_window_size=2048,
        embeddings_scale_by_sqrt_dim=True,
        logits_soft_cap=30.0,
        block_types=_GRIFFIN,
        vocab_size=256000,
    ),
    "griffin-7b": dict(
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=1,
        lru_width=5632,
        intermediate_size=2 * 12288,
        attention_window_size=1024,
        embeddings_scale_by_sqrt_dim=False,
        logits_soft_cap=0.0,
        block_types=_GRIFFIN,
        vocab_size=256000,
    ),
    "hawk-7b": dict(
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=1,
        lru_width=5632,
        intermediate_size=2 * 12288,
        attention_window_size=1024,
        embeddings_scale_by_sqrt_dim=False,
        logits_soft_cap=0.0,
        block_types=("recurrent",),
        vocab_size=256000,
    ),
}
