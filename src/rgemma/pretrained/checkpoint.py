"""Hugging Face checkpoint directories: find, load (without a second copy), save (atomically).

Weights load only from safetensors. Tensors are read one by one from memory-mapped files (with
int8 at load, by plain reads) and assigned into a model built on the meta device, so peak
memory is one model plus one tensor (plus a few with int8 at load).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from rgemma.accel.memory import meminfo_gb
from rgemma.io.atomic import atomic_directory
from rgemma.io.checkpoint_files import (
    parse_dtype,
    parse_size,
    resolve_model_dir,
    weight_files,
    write_config,
)
from rgemma.io.shards import MAX_SHARD_SIZE, write_shards
from rgemma.io.tensor_reader import Allocate, Scratch, read_ahead, read_tensors
from rgemma.models.config import RecurrentGemmaConfig
from rgemma.models.surface import floating_dtype


def load_model(
    cls, path_or_repo_id, dtype=None, device=None, progress: bool = False, quantize: str | None = None
) -> nn.Module:
    """Build `cls` on the meta device, then assign each tensor from the safetensors files.

    `quantize="int8"` quantizes every linear's weight as it is read (rgemma.accel.quantize:
    the same bytes as quantizing the loaded model), with plain reads instead of a memory map
    (rgemma.io.tensor_reader), so the float model is never held whole: the peak is the int8
    model plus a few float weights (the one being quantized, the next read ahead by a thread,
    both in recycled memory). The NaN/Inf check of those weights reads their scales. A
    checkpoint that is already quantized ignores `quantize`."""
    from rgemma.accel.quantize import quantize_weight

    model_dir = resolve_model_dir(path_or_repo_id)
    config = RecurrentGemmaConfig.from_json_file(model_dir / "config.json")
    files = weight_files(model_dir)
    with torch.device("meta"):
        model = cls(config)
    prefix = "model." if hasattr(model, "lm_head") else ""
    dtype = parse_dtype(dtype)
    if config.extra.get("quantization"):
        dtype = dtype or parse_dtype(config.extra.get("torch_dtype")) or torch.float32
        _prepare_quantized(model, config.extra["quantization"], prefix, dtype)
        quantize = None
    on_read = _quantize_on_read(model) if quantize == "int8" else set()
    expected = dict(model.state_dict(keep_vars=True))
    tied = getattr(config, "tie_word_embeddings", True)
    if tied:
        expected.pop("lm_head.weight", None)
        expected.pop("lm_head.weight_scale", None)  # quantized from the embedding at the end
    seen, scratch = set(), Scratch()

    def read_into(key: str, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        """Recycled memory for the float weights quantized as they are read (plain reads)."""
        name = _match_key(key, prefix, expected)
        if dtype.is_floating_point and name.removesuffix(".weight") in on_read:
            return scratch.get(dtype, shape)
        return torch.empty(shape, dtype=dtype)

    for file, key, tensor in _iter_tensors(files, progress, read_into if on_read else None):
        name = _match_key(key, prefix, expected)
        if name == "lm_head.weight" and name not in expected:
            scratch.give(tensor)
            continue  # tied to the embedding, or a base model without a head
        if name in seen:
            raise ValueError(f"{file.name}: tensor {key!r} appears twice in the checkpoint")
        seen.add(name)
        if name not in expected:
            raise ValueError(f"{file.name}: unexpected tensor {key!r} (not a parameter of this model)")
        want = tuple(expected[name].shape)
        if tuple(tensor.shape) != want:
            raise ValueError(f"{file.name}: tensor {key!r} has shape {tuple(tensor.shape)}, expected {want}")
        read, what = tensor, f"{file.name}: tensor {key!r}"
        if tensor.is_floating_point():
            dtype = dtype or tensor.dtype  # None: keep the checkpoint's dtype (first tensor's)
            tensor = tensor.to(dtype=dtype)
        elif tensor.dtype != expected[name].dtype:  # int8 weights only where the config says so
            raise ValueError(f"{what} is {tensor.dtype}, expected {expected[name].dtype}")
        if name.removesuffix(".weight") in on_read and tensor.is_floating_point():
            q, scale = quantize_weight(tensor)
            _finite(tensor, read, what, finite=all_finite(scale))  # NaN/Inf weights: NaN/Inf scales
            seen.add(_assign_int8(model, name, q, scale, device))
            scratch.give(read)  # the next weight is read into its memory
            continue
        if tensor.is_floating_point():
            tensor = _finite(tensor, read, what)
        _assign(model, name, tensor.to(device=device or "cpu"))
    missing = [k for k in expected if k not in seen]
    if missing:
        raise ValueError(
            f"checkpoint {model_dir} is missing tensor {_with_prefix(missing[0], prefix)!r}"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        )
    if tied and "lm_head" in on_read:  # the tied head gets its own int8 copy, as quantize_model's
        q, scale = quantize_weight(model.get_input_embeddings().weight)
        seen.add(_assign_int8(model, "lm_head.weight", q, scale, device))
    elif hasattr(model, "tie_weights"):
        model.tie_weights()
    return model.eval()


def _quantize_on_read(model: nn.Module) -> set[str]:
    """Swap every nn.Linear of the meta model for an empty Int8Linear; their names."""
    from rgemma.accel.quantize import prepare_int8

    names = {name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    prepare_int8(model, sorted(names))
    return names


def _assign_int8(model: nn.Module, name: str, q: torch.Tensor, scale: torch.Tensor, device) -> str:
    """Put a quantized weight (rgemma.accel.quantize.quantize_weight) into the Int8Linear that
    owns `name` ("X.weight"); returns the scale's key, which the checkpoint does not hold."""
    scale_name = name.removesuffix("weight") + "weight_scale"
    _assign(model, name, q.to(device=device or "cpu"))
    _assign(model, scale_name, scale.to(device=device or "cpu"))
    return scale_name


def _match_key(key: str, prefix: str, expected: dict) -> str:
    """Checkpoint keys are ForCausalLM keys ("model.layers..."); accept bare base-model keys too."""
    if key in expected:
        return key
    if prefix and prefix + key in expected:
        return prefix + key
    if not prefix and key.startswith("model.") and key[6:] in expected:
        return key[6:]
    return key


def _with_prefix(name: str, prefix: str) -> str:
    return name if name.startswith(prefix) else prefix + name


DROP_CACHE_SHARE = 0.5  # plain reads drop a checkpoint from the page cache as read when it is larger
# than this share of the available memory: it could not stay cached beside the model


def _iter_tensors(files: list[Path], progress: bool, read_into: Allocate | None = None):
    """Yield (file, key, tensor) one tensor at a time; truncated files give a clear error.
    With `read_into` (rgemma.io.tensor_reader.read_tensors' `into`), plain reads into it
    instead of a memory map, so a read tensor that is converted and let go leaves nothing
    resident, one tensor ahead in a thread, so that reading the next overlaps converting this
    one, and dropped from the page cache behind the reader when the checkpoint is large
    (DROP_CACHE_SHARE)."""
    from tqdm.auto import tqdm

    total = sum(f.stat().st_size for f in files)
    bar = tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        desc="loading weights",
        file=sys.stderr,
        disable=not progress and total < 512 * 2**20,
    )
    if read_into is not None:
        drop = total > DROP_CACHE_SHARE * meminfo_gb("MemAvailable") * 2**30
        tensors = ((f, *kt) for f in files for kt in read_tensors(f, read_into, drop))
        for f, key, tensor in read_ahead(tensors):
            bar.update(tensor.numel() * tensor.element_size())
            yield f, key, tensor
        bar.close()
        return
    for f in files:
        try:
            handle = safe_open(f, framework="pt")
            keys = list(handle.keys())
        except Exception as err:  # safetensors raises its own error type
            raise ValueError(f"{f}: truncated or corrupt safetensors file ({err})") from None
        for key in keys:
            try:
                tensor = handle.get_tensor(key)
            except Exception as err:
                raise ValueError(
                    f"{f}: truncated or corrupt safetensors file, tensor {key!r} ({err})"
                ) from None
            bar.update(tensor.numel() * tensor.element_size())
            yield f, key, tensor
    bar.close()


def all_finite(t: torch.Tensor) -> bool:
    """True when `t` holds no NaN or Inf. One aminmax pass (it propagates NaN): about 5 GB/s
    on one CPU core, some 20-40x faster than isfinite().all(), and no bool temporary."""
    if t.numel() == 0 or not t.is_floating_point():
        return True
    lo, hi = torch.aminmax(t)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def _finite(
    converted: torch.Tensor, original: torch.Tensor, what: str, finite: bool | None = None
) -> torch.Tensor:
    """`converted`, or a ValueError: NaN/Inf weights give empty or garbage text, never an error.
    `finite`: whether `converted` is, when already known."""
    if all_finite(converted) if finite is None else finite:
        return converted
    if all_finite(original):
        raise ValueError(
            f"{what} overflows {converted.dtype} (values beyond its range); load it in bfloat16 or float32"
        )
    raise ValueError(f"{what} has NaN or Inf values; the checkpoint is corrupt")


def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, param_name = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    if param_name in module._buffers:  # int8 weights and their scales
        module._buffers[param_name] = tensor
    else:
        module._parameters[param_name] = nn.Parameter(tensor, requires_grad=tensor.is_floating_point())


def _prepare_quantized(model: nn.Module, spec: dict, prefix: str, dtype: torch.dtype) -> None:
    """Swap the linears an int8 export lists (config.json "quantization") for Int8Linears."""
    from rgemma.accel.quantize import METHOD, prepare_int8

    if not isinstance(spec, dict) or spec.get("method") != METHOD:
        raise ValueError(f"unsupported quantization {spec!r}; rgemma reads method {METHOD!r}")
    names = [n if prefix else n.removeprefix("model.") for n in spec.get("modules", [])]
    prepare_int8(model, names, dtype)


# --------------------------------------------------------------------------- saving
def checkpoint_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors on the CPU, under ForCausalLM key names."""
    prefix = "" if hasattr(model, "lm_head") else "model."
    return {prefix + name: t.detach().to("cpu") for name, t in model.state_dict().items()}


def checkpoint_config(
    config: RecurrentGemmaConfig, dtype: torch.dtype, quantized_modules: list[str] = ()
) -> dict:
    """config.json for weights of `dtype`: `torch_dtype` (and transformers 5's `dtype`) set,
    and `quantization` listing the int8 modules, or absent when there are none."""
    from rgemma.accel.quantize import METHOD

    out = config.to_dict()
    out["torch_dtype"] = out["dtype"] = str(dtype).removeprefix("torch.")
    out.pop("quantization", None)
    if quantized_modules:
        out["quantization"] = {"method": METHOD, "group_size": None, "modules": list(quantized_modules)}
    return out


def write_checkpoint(
    out: Path,
    tensors: dict[str, torch.Tensor],
    config: RecurrentGemmaConfig,
    max_shard_size: int | str = MAX_SHARD_SIZE,
    generation: dict | None = None,
) -> None:
    """config.json, generation_config.json (`generation`, else the config's token ids) and
    (sharded) safetensors of `tensors` (ForCausalLM key names) into `out`: a tied LM head is
    left out, `torch_dtype` is the weights' dtype, and int8 layers (`X.weight_scale`) are
    listed as quantized."""
    from rgemma.accel.quantize import quantized_names

    if config.tie_word_embeddings:  # the head (even an int8 copy of it) is the embedding
        tensors = {k: v for k, v in tensors.items() if not k.startswith("lm_head.")}
    write_config(
        out, checkpoint_config(config, floating_dtype(tensors.values()), quantized_names(tensors)), generation
    )
    write_shards(out, tensors, parse_size(max_shard_size))


def save_model(
    model: nn.Module,
    save_directory: str | Path,
    max_shard_size: int | str = MAX_SHARD_SIZE,
    generation: dict | None = None,
) -> None:
    """write_checkpoint into a temp dir, then swap it into place, so a crash never leaves a
    half-written directory that looks complete."""
    with atomic_directory(save_directory) as tmp:
        write_checkpoint(tmp, checkpoint_tensors(model), model.config, max_shard_size, generation)
