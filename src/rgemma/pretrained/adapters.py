"""LoRA adapters in peft's format (adapter_config.json + adapter_model.safetensors), as
`rgemma train --lora` and peft's save_pretrained write them, folded into a loaded model.

Merging at load time (W + scale * B @ A, in float32) needs no peft at run time and leaves a
plain model, so int8 quantization and the compiled decode step apply as to any checkpoint.
For training on top of an adapter, use peft itself (PeftModel.from_pretrained works on rgemma
models).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from rgemma.io.checkpoint_files import BUNDLED_DIR, resolve_model_dir

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # peft's key prefix


def is_adapter_dir(path: Path) -> bool:
    """A directory holding an adapter and no model of its own."""
    return (path / CONFIG_FILE).is_file() and not (path / "config.json").is_file()


def read_adapter_config(adapter_dir: Path) -> dict:
    path = adapter_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{CONFIG_FILE} not found in {adapter_dir}: not a LoRA adapter directory")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: invalid JSON ({err})") from None
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{path}: peft_type {config.get('peft_type')!r}; rgemma loads LORA adapters")
    for key, off in (
        ("use_dora", False),
        ("fan_in_fan_out", False),
        ("rank_pattern", {}),
        ("alpha_pattern", {}),
    ):
        if config.get(key) not in (None, off):
            raise ValueError(f"{path}: {key}={config[key]!r} is not supported by rgemma's adapter loading")
    if config.get("bias", "none") != "none":
        raise ValueError(f"{path}: bias={config['bias']!r} is not supported (only 'none')")
    return config


def adapter_base(adapter_dir: Path) -> Path:
    """The base model an adapter names (base_model_name_or_path), found locally: a directory
    (absolute, or relative to the adapter), a repo id in the HF cache, or the bundled model."""
    name = read_adapter_config(adapter_dir).get("base_model_name_or_path")
    if not name:
        raise ValueError(
            f"{adapter_dir / CONFIG_FILE} names no base_model_name_or_path; pass --model BASE --adapter DIR"
        )
    for candidate in (name, adapter_dir / name):
        try:
            return resolve_model_dir(candidate)
        except FileNotFoundError:
            pass
    if Path(name).name == BUNDLED_DIR.name:  # the bundled model, recorded from another install
        return BUNDLED_DIR
    raise FileNotFoundError(
        f"the adapter's base model {name!r} ({adapter_dir / CONFIG_FILE}) is not a local directory, "
        "a repo id in the HF cache, or the bundled model; pass --model BASE --adapter DIR"
    )


@torch.no_grad()
def merge_adapter(model: nn.Module, adapter_dir: str | Path) -> None:
    """Fold a LoRA adapter into `model`'s linears, in place: W += (alpha / r) * B @ A
    (alpha / sqrt(r) with use_rslora), as peft's merge_and_unload does."""
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    config = read_adapter_config(adapter_dir)
    r, alpha = config["r"], config.get("lora_alpha", config["r"])
    scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    if not (adapter_dir / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"no {WEIGHTS_FILE} in {adapter_dir}")
    weights = load_file(str(adapter_dir / WEIGHTS_FILE))
    for stem in sorted({k.rsplit(".lora_", 1)[0] for k in weights if ".lora_" in k}):
        layer = _target(model, stem.removeprefix(PEFT_PREFIX), adapter_dir)
        a, b = weights[f"{stem}.lora_A.weight"].float(), weights[f"{stem}.lora_B.weight"].float()
        if (b.shape[0], a.shape[1]) != tuple(layer.weight.shape):
            shape, want = (b.shape[0], a.shape[1]), tuple(layer.weight.shape)
            raise ValueError(f"{adapter_dir}: {stem} is {shape}, the model's {want}")
        merged = layer.weight.float() + scale * (b @ a).to(layer.weight.device)
        layer.weight.copy_(merged.to(layer.weight.dtype))


def _target(model: nn.Module, name: str, adapter_dir: Path) -> nn.Linear:
    try:
        layer = model.get_submodule(name)
    except AttributeError:
        raise ValueError(
            f"{adapter_dir}: the adapter targets {name!r}, which this model does not have"
        ) from None
    if not isinstance(layer, nn.Linear):
        raise ValueError(
            f"{adapter_dir}: {name!r} is a {type(layer).__name__}; rgemma merges LoRA into linears only"
        )
    return layer
