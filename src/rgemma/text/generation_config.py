"""generate()'s settings, as transformers names them: rgemma's `GenerationConfig` (what
generation_config.json holds), and `resolve`, which merges the sources the way transformers 5
does: the model's generation_config, then a `generation_config` passed in, then keyword
arguments, each overriding the fields it sets (None means unset), then the defaults.

A transformers.GenerationConfig is read by its attributes (never imported). Settings that
rgemma does not implement are refused by name when they are set to anything but their neutral
value, so a request never silently means something else.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILE = "generation_config.json"

# The fields generate() implements, with the value each takes when no source sets it.
DEFAULTS: dict[str, Any] = {
    "max_new_tokens": None,  # with max_length also unset: 20 new tokens
    "max_length": None,
    "min_new_tokens": 0,
    "min_length": 0,
    "do_sample": False,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "stop_strings": None,
    "num_beams": 1,
    "num_return_sequences": 1,
    "length_penalty": 1.0,
    "early_stopping": False,
    "eos_token_id": None,  # None: the model config's
    "pad_token_id": None,
    "bos_token_id": None,
    "output_scores": False,
    "output_logits": False,
    "return_dict_in_generate": False,
    "use_cache": True,  # rgemma always decodes from its state; False gives the same tokens
}

# transformers settings rgemma refuses, each with the values that mean "off".
REFUSED: dict[str, tuple] = {
    "typical_p": (1.0,),
    "epsilon_cutoff": (0.0,),
    "eta_cutoff": (0.0,),
    "top_h": (),
    "encoder_repetition_penalty": (1.0,),
    "encoder_no_repeat_ngram_size": (0,),
    "num_beam_groups": (1,),
    "diversity_penalty": (0.0,),
    "penalty_alpha": (),
    "dola_layers": (),
    "guidance_scale": (1.0,),
    "forced_bos_token_id": (),
    "forced_eos_token_id": (),
    "suppress_tokens": ([],),
    "begin_suppress_tokens": ([],),
    "sequence_bias": ({},),
    "exponential_decay_length_penalty": (),
    "renormalize_logits": (False,),
    "remove_invalid_values": (False,),
    "token_healing": (False,),
    "constraints": ([],),
    "force_words_ids": ([],),
    "watermarking_config": (),
    "max_time": (),
    "low_memory": (False,),
    "output_attentions": (False,),
    "output_hidden_states": (False,),
    "assistant_early_exit": (),
    "logits_processor": ([],),
    "stopping_criteria": ([],),
    "prefix_allowed_tokens_fn": (),
    "negative_prompt_ids": (),
    "synced_gpus": (False,),
    "cache_implementation": (),
}


@dataclass
class GenerationConfig:
    """rgemma's generation_config.json, with transformers' field names (see DEFAULTS for what
    each unset field means). Keys rgemma does not model are kept in `extra` and written back."""

    max_new_tokens: int | None = None
    max_length: int | None = None
    min_new_tokens: int | None = None
    min_length: int | None = None
    do_sample: bool | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    bad_words_ids: list[list[int]] | None = None
    stop_strings: str | list[str] | None = None
    num_beams: int | None = None
    num_return_sequences: int | None = None
    length_penalty: float | None = None
    early_stopping: bool | str | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    output_scores: bool | None = None
    output_logits: bool | None = None
    return_dict_in_generate: bool | None = None
    use_cache: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationConfig:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(
            **{k: v for k, v in data.items() if k in names},
            extra={k: v for k, v in data.items() if k not in names},
        )

    @classmethod
    def from_model_config(cls, config) -> GenerationConfig:
        """The special token ids of a model config, nothing else set."""
        return cls(
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
        )

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> GenerationConfig:
        path = Path(directory) / FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{FILE} not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: invalid JSON ({err})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set (and the extra keys), as generation_config.json holds them."""
        out = dict(self.extra)
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"})
        return {k: v for k, v in out.items() if v is not None}

    to_diff_dict = to_dict  # transformers' name for "the fields that are set" (pipelines call it)

    def update(self, **kwargs: Any) -> dict[str, Any]:
        """Set fields (unknown keys go to `extra`), as transformers' update does."""
        names = {f.name for f in dataclasses.fields(self)} - {"extra"}
        for key, value in kwargs.items():
            if key in names:
                setattr(self, key, value)
            else:
                self.extra[key] = value
        return {}

    def save_pretrained(self, directory: str | Path) -> None:
        Path(directory, FILE).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")


def set_fields(config: Any) -> dict[str, Any]:
    """The fields a generation config (rgemma's or transformers') sets, by name (None: unset)."""
    if config is None:
        return {}
    if isinstance(config, GenerationConfig):
        return config.to_dict()
    if isinstance(config, dict):
        values = config
    elif hasattr(config, "to_dict"):  # transformers.GenerationConfig
        values = config.to_dict()
    else:
        values = vars(config)
    return {k: v for k, v in values.items() if v is not None and not k.startswith("_")}


def resolve(model_config: Any, passed: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Every field of DEFAULTS, from (lowest first) the defaults, the model's generation config,
    the one passed to generate(), and keyword arguments. Raises TypeError naming an argument
    rgemma does not know, and ValueError naming a setting it does not implement."""
    for name in kwargs:
        if name not in DEFAULTS and name not in REFUSED:
            raise TypeError(f"generate() got an unexpected argument {name!r}")
    out = dict(DEFAULTS)
    for source in (set_fields(model_config), set_fields(passed), kwargs):
        for name, value in source.items():
            if name in REFUSED and value is not None and not _neutral(value, REFUSED[name]):
                raise ValueError(f"generate(): {name}={value!r} is not supported by rgemma")
            if name in DEFAULTS and value is not None:
                out[name] = value
    return out


def _neutral(value: Any, neutral: tuple) -> bool:
    return any(value == n and isinstance(value, bool) == isinstance(n, bool) for n in neutral) or (
        isinstance(value, (list, dict, tuple)) and not value
    )
