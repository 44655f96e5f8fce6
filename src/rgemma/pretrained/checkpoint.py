"""Hugging Face checkpoint directories: find, load (without a second copy), save (atomically).

Weights load only from safetensors. Tensors are read one by one from memory-mapped files and
assigned into a model built on the meta device, so peak memory is one model plus one tensor.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from rgemma.models.config import RecurrentGemmaConfig

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "float": torch.float32,
}


# --------------------------------------------------------------------------- locating
BUNDLED_DIR = Path(__file__).parents[1] / "bundled" / "assets" / "rgemma-tiny"


def bundled_model_dir() -> Path:
    """The small trained model shipped inside the package (the default everywhere)."""
    if not (BUNDLED_DIR / "config.json").is_file():
        raise FileNotFoundError(
            f"the bundled model is missing from this install ({BUNDLED_DIR}); "
            "reinstall rgemma or pass --model"
        )
    return BUNDLED_DIR


def hf_cache_dirs() -> list[Path]:
    """Where the HF hub cache may live, in the order huggingface_hub looks."""
    dirs = []
    if os.environ.get("HF_HUB_CACHE"):
        dirs.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        dirs.append(Path(os.environ["HF_HOME"]) / "hub")
    dirs.append(Path.home() / ".cache" / "huggingface" / "hub")
    return dirs


def resolve_model_dir(path_or_repo_id: str | Path | None) -> Path:
    """A local directory as is, `org/name` from the local HF cache, None for the bundled
    model; else a clear error."""
    if path_or_repo_id is None:
        return bundled_model_dir()
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise FileNotFoundError(f"{path} is a file; expected a model directory with config.json")
    name = str(path_or_repo_id)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        looked = []
        for cache in hf_cache_dirs():
            repo = cache / ("models--" + name.replace("/", "--"))
            looked.append(str(repo))
            snapshot = _newest_snapshot(repo)
            if snapshot is not None:
                return snapshot
        raise FileNotFoundError(
            f"model {name!r} is not a local directory and is not in the HF "
            f"cache (looked in: {', '.join(looked)}); there is no download here: "
            "copy the checkpoint locally and pass its path"
        )
    raise FileNotFoundError(f"model path does not exist: {path}")


def _newest_snapshot(repo: Path) -> Path | None:
    ref = repo / "refs" / "main"
    if ref.is_file():
        snap = repo / "snapshots" / ref.read_text().strip()
        if (snap / "config.json").is_file():
            return snap
    snaps = [s for s in (repo / "snapshots").glob("*") if (s / "config.json").is_file()]
    return max(snaps, key=lambda s: s.stat().st_mtime) if snaps else None


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a checkpoint: the index's shards, or model.safetensors."""
    index = model_dir / INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{index}: invalid index file ({err})") from None
        files = [model_dir / f for f in dict.fromkeys(weight_map.values())]
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"{index} names shard {f.name}, which is missing")
        return files
    if (model_dir / SINGLE).is_file():
        return [model_dir / SINGLE]
    found = sorted(p.name for p in model_dir.glob("*.safetensors"))
    if found:
        return [model_dir / f for f in found]
    if list(model_dir.glob("*.bin")) or list(model_dir.glob("*.pt")):
        raise ValueError(
            f"{model_dir} holds only pickle weights (.bin/.pt); rgemma loads "
            "safetensors. Convert them with `rgemma convert`."
        )
    raise FileNotFoundError(f"no weights in {model_dir}: expected {SINGLE} or {INDEX}")


# --------------------------------------------------------------------------- loading
def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return None if dtype == "auto" else dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(set(DTYPES))}")
    return DTYPES[dtype]


def load_model(cls, path_or_repo_id, dtype=None, device=None, progress: bool = False) -> nn.Module:
    """Build `cls` on the meta device, then assign each tensor from the safetensors files."""
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
    expected = dict(model.state_dict(keep_vars=True))
    if getattr(config, "tie_word_embeddings", True):
        expected.pop("lm_head.weight", None)
    seen = set()
    for file, key, tensor in _iter_tensors(files, progress):
        name = _match_key(key, prefix, expected)
        if name == "lm_head.weight" and name not in expected:
            continue  # tied to the embedding, or a base model without a head
        if name in seen:
            raise ValueError(f"{file.name}: tensor {key!r} appears twice in the checkpoint")
        seen.add(name)
        if name not in expected:
            raise ValueError(f"{file.name}: unexpected tensor {key!r} (not a parameter of this model)")
        want = tuple(expected[name].shape)
        if tuple(tensor.shape) != want:
            raise ValueError(f"{file.name}: tensor {key!r} has shape {tuple(tensor.shape)}, expected {want}")
        if tensor.is_floating_point():
            dtype = dtype or tensor.dtype  # None: keep the checkpoint's dtype (first tensor's)
            tensor = tensor.to(dtype=dtype)
        elif tensor.dtype != expected[name].dtype:  # int8 weights only where the config says so
            raise ValueError(
                f"{file.name}: tensor {key!r} is {tensor.dtype}, expected {expected[name].dtype}"
            )
        _assign(model, name, tensor.to(device=device or "cpu"))
    missing = [k for k in expected if k not in seen]
    if missing:
        raise ValueError(
            f"checkpoint {model_dir} is missing tensor {_with_prefix(missing[0], prefix)!r}"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        )
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model.eval()


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


def _iter_tensors(files: list[Path], progress: bool):
    """Yield (file, key, tensor) one tensor at a time; truncated files give a clear error."""
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
def parse_size(size: int | str) -> int:
    """'2GB' / '500MB' / bytes -> bytes."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B)?\s*", str(size), re.IGNORECASE)
    if not m:
        raise ValueError(f"cannot parse shard size {size!r}; use e.g. '2GB' or '500MB'")
    unit = (m.group(2) or "B").upper()
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}[unit]
    return int(float(m.group(1)) * scale)


def checkpoint_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors to write, under ForCausalLM key names, without the tied head."""
    prefix = "" if hasattr(model, "lm_head") else "model."
    out = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        out[prefix + name] = t.detach().to("cpu").contiguous()
    return out


def save_model(model: nn.Module, save_directory: str | Path, max_shard_size: int | str = "2GB") -> None:
    """Write config.json, generation_config.json and safetensors into a temp dir, then swap it
    into place, so a crash never leaves a half-written directory that looks complete."""
    tensors = checkpoint_tensors(model)
    config = model.config.to_dict()
    config["torch_dtype"] = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
    config["dtype"] = config["torch_dtype"]
    with atomic_directory(save_directory) as tmp:
        write_config(tmp, config)
        write_shards(tmp, tensors, parse_size(max_shard_size))


def write_config(out: Path, config: dict) -> None:
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    gen = {k: config.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")


def write_shards(out: Path, tensors: dict[str, torch.Tensor], max_bytes: int) -> None:
    """One model.safetensors, or numbered shards of at most max_bytes plus an index."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += n
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(out / SINGLE), metadata=meta)
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / fname), metadata=meta)
        weight_map.update({k: fname for k in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / INDEX).write_text(json.dumps(index, indent=2) + "\n")


class atomic_directory:
    """Context manager: yields a temp dir beside `target`; on success it replaces `target`.

    Files already in `target` that the writer did not produce (a tokenizer, say) are kept,
    except old weights, which would mix with the new ones."""

    def __init__(self, target: str | Path, keep_existing: bool = True):
        self.target = Path(target)
        self.keep_existing = keep_existing

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if self.target.exists() and not self.target.is_dir():
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise FileExistsError(f"{self.target} exists and is not a directory")
        if self.target.is_dir() and self.keep_existing:
            for old in self.target.iterdir():
                if not (self.tmp / old.name).exists() and not _is_weight_file(old):
                    copy = shutil.copytree if old.is_dir() else shutil.copy2
                    copy(old, self.tmp / old.name)
        _default_permissions(self.tmp)
        backup = None
        if self.target.exists():
            backup = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            os.replace(self.target, backup)
        os.replace(self.tmp, self.target)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)


def default_mode(directory: bool = False) -> int:
    """The mode a plain open()/mkdir() would give under the current umask (temp files and
    directories are created private, 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def _default_permissions(root: Path) -> None:
    os.chmod(root, default_mode(directory=True))
    for path in root.rglob("*"):
        os.chmod(path, default_mode(directory=path.is_dir()))


def _is_weight_file(path: Path) -> bool:
    return path.suffix in (".safetensors", ".bin", ".pt") or path.name == INDEX
