"""Checkpoint directories on disk, without a model: where they are (a path, the local HF
cache, the bundled model), which weight files they hold, and writing config.json (the
safetensors writer is rgemma.io.shards)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch

SINGLE = "model.safetensors"
TOKENIZER_FILES = (  # what makes up a tokenizer in an HF directory; rgemma.text.tokenizer reads them
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "added_tokens.json",
)
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
def load_dtype(model_dir: Path, dtype: torch.dtype | str | None) -> torch.dtype | None:
    """rgemma's one dtype rule (from_pretrained, the CLI and the server all call it): the dtype
    to load `model_dir` in, None meaning the checkpoint's own. An explicit dtype wins and
    "auto" is the checkpoint's; unset (None) is the checkpoint's as well, as in transformers 5
    (whose default is "auto"), except for the bundled model: stored in bfloat16 to stay small,
    it runs in float32 (exact, and faster on CPU)."""
    if dtype is None and is_bundled(model_dir):
        return torch.float32
    return parse_dtype(dtype)


def is_bundled(model_dir: Path) -> bool:
    return Path(model_dir).resolve() == BUNDLED_DIR.resolve()


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return None if dtype == "auto" else dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(set(DTYPES))}")
    return DTYPES[dtype]


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


def write_config(out: Path, config: dict, generation: dict | None = None) -> None:
    """config.json, and generation_config.json: `generation`, or the config's token ids."""
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    gen = generation or {k: config.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2, sort_keys=True) + "\n")


def tokenizer_files(directory: str | Path) -> list[Path]:
    """The tokenizer files (TOKENIZER_FILES) present in `directory`."""
    root = Path(directory)
    return [root / name for name in TOKENIZER_FILES if (root / name).is_file()]


def copy_tokenizer(source: str | Path, out: str | Path) -> list[Path]:
    """Copy the tokenizer files of directory `source` into `out`; returns the files copied."""
    found = tokenizer_files(source)
    for f in found:
        shutil.copy2(f, Path(out) / f.name)
    return found


def is_weight_file(path: Path) -> bool:
    return path.suffix in (".safetensors", ".bin", ".pt") or path.name == INDEX
