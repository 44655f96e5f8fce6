"""The classes users import, shaped like transformers': the architecture of rgemma.models plus
`from_pretrained`, `save_pretrained` and `generate`, which need the checkpoint and text layers
that sit above the model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rgemma.io.checkpoint_files import load_dtype, resolve_model_dir
from rgemma.io.shards import MAX_SHARD_SIZE
from rgemma.models.griffin import GriffinForCausalLM, GriffinModel
from rgemma.pretrained.adapters import adapter_base, is_adapter_dir, merge_adapter
from rgemma.pretrained.checkpoint import load_model, save_model
from rgemma.text.generate import generate
from rgemma.text.generation_config import FILE as GENERATION_FILE
from rgemma.text.generation_config import GenerationConfig, set_fields

# from_pretrained keyword arguments of transformers that change nothing here
IGNORED_LOAD_ARGS = ("trust_remote_code", "low_cpu_mem_usage", "local_files_only", "use_safetensors")


def _quantized(model, quantize: str | None):
    if quantize == "int8":
        from rgemma.accel.quantize import quantize_model

        quantize_model(model)
    return model


class PreTrainedMixin:
    """from_pretrained, save_pretrained, generate() and the attributes transformers' tools
    (peft, pipeline) look for: generation_config, can_generate, prepare_inputs_for_generation."""

    main_input_name = "input_ids"

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | Path | None,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        torch_dtype=None,
        progress: bool = False,
        device_map: str | torch.device | dict | None = None,
        quantize: str | None = None,
        **kwargs,
    ):
        """Load an HF-format directory, a repo id found in the local HF cache, or (None) the
        bundled model.

        `dtype` (alias `torch_dtype`) follows rgemma.io.checkpoint_files.load_dtype: unset keeps
        the checkpoint's dtype ("auto", transformers 5's default), except that the bundled
        model runs in float32. `device_map` places the whole model on one device: "cpu",
        "cuda", "cuda:1", a torch.device, {"": device}, or "auto" (CUDA when available).
        `quantize="int8"` quantizes each linear as it is read (rgemma.pretrained.checkpoint), so
        the float model is never held whole; an adapter is merged first, so it is then
        quantized after loading."""
        unknown = sorted(set(kwargs) - set(IGNORED_LOAD_ARGS))
        if unknown:
            raise TypeError(f"from_pretrained() got unsupported arguments: {unknown}")
        model_dir = resolve_model_dir(path_or_repo_id)
        if is_adapter_dir(model_dir):  # a LoRA adapter: its base model, with the adapter merged
            model = cls.from_pretrained(
                adapter_base(model_dir), dtype, device, torch_dtype, progress, device_map
            )
            merge_adapter(model, model_dir)
            return _quantized(model, quantize)
        model = load_model(
            cls,
            model_dir,
            dtype=load_dtype(model_dir, dtype if dtype is not None else torch_dtype),
            device=device if device is not None else map_device(device_map),
            progress=progress,
            quantize=quantize,
        )
        if (model_dir / GENERATION_FILE).is_file():
            model.generation_config = GenerationConfig.from_pretrained(model_dir)
        model.__dict__["name_or_path"] = str(path_or_repo_id or model_dir)  # peft records it as the base
        return model

    def save_pretrained(
        self,
        save_directory: str | Path,
        max_shard_size: int | str = MAX_SHARD_SIZE,
        safe_serialization: bool = True,
    ) -> None:
        """Write config.json, generation_config.json (this model's generation_config) and
        (sharded) safetensors, atomically."""
        if not safe_serialization:
            raise ValueError("rgemma writes safetensors only (safe_serialization=False is unsupported)")
        generation = set_fields(self.generation_config) or None
        save_model(self, save_directory, max_shard_size=max_shard_size, generation=generation)

    # ------------------------------------------------------------------ generation
    @property
    def generation_config(self):
        """generate()'s defaults (generation_config.json; else the config's token ids). A
        transformers.GenerationConfig may be assigned too."""
        if self.__dict__.get("_generation_config") is None:
            self.__dict__["_generation_config"] = GenerationConfig.from_model_config(self.config)
        return self.__dict__["_generation_config"]

    @generation_config.setter
    def generation_config(self, value) -> None:
        self.__dict__["_generation_config"] = value

    @classmethod
    def can_generate(cls) -> bool:
        return True

    def generate(self, input_ids=None, generation_config=None, **kwargs):
        """transformers-style generate(); see rgemma.text.generate.generate for the arguments."""
        return generate(self, input_ids, generation_config, **kwargs)

    def prepare_inputs_for_generation(
        self, input_ids, past_key_values=None, attention_mask=None, inputs_embeds=None, **kwargs
    ) -> dict:
        """The forward() arguments of one step of a transformers-style decode loop (peft wraps
        this; rgemma's own generate() does not use it): with a State, only the new token."""
        if past_key_values is not None:
            return {"input_ids": input_ids[:, -1:], "past_key_values": past_key_values, "use_cache": True}
        if inputs_embeds is not None:
            return {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask, "use_cache": True}
        return {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": True}


def map_device(device_map) -> torch.device | str | None:
    """The one device a transformers-style `device_map` names (rgemma does not split models)."""
    if device_map is None or isinstance(device_map, (torch.device, int)):
        return device_map
    if isinstance(device_map, dict):
        if set(device_map) != {""}:
            raise ValueError(
                f"device_map {device_map!r} splits the model; rgemma places it on one device: "
                'use device_map="cuda", "cpu" or {"": device}'
            )
        return map_device(device_map[""])
    if device_map == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device_map in ("balanced", "balanced_low_0", "sequential"):
        raise ValueError(f"device_map={device_map!r} splits the model; rgemma places it on one device")
    return torch.device(device_map)


class RecurrentGemmaModel(PreTrainedMixin, GriffinModel):
    """The backbone: embedding, residual blocks, final norm (rgemma.models.griffin)."""


class RecurrentGemmaForCausalLM(PreTrainedMixin, GriffinForCausalLM):
    """The causal LM: backbone, tied LM head, logit soft-cap (rgemma.models.griffin)."""

    backbone = RecurrentGemmaModel
