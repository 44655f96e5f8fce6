"""What makes a state snapshot loadable into a model: the model's fingerprint, and a check of
every tensor in the file (presence, shape, dtype, finiteness, counters), so that a damaged or
foreign snapshot is refused in one line naming the tensor instead of continuing wrongly."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from rgemma.models.state import state_fingerprint
from rgemma.pretrained.checkpoint import all_finite

HASH_CHUNK = 32 * 2**20  # elements per hashed piece: 64 MB of bf16
SAMPLE = 1024  # elements per tensor in the cache key


# --------------------------------------------------------------------------- fingerprint
def model_fingerprint(model) -> str:
    """sha256 over the architecture and every byte of every weight, each float rounded to
    bf16 (one model in float32 and bfloat16 has one fingerprint; a fine-tune of the same base
    has another).

    Pieces of 64 MB are hashed on up to 8 threads (hashlib releases the GIL; sha256 runs at
    about 0.7 GB/s a core with SHA-NI). Measured on the 2B model's shapes in bf16 (2.68B
    weights, 5.4 GB; the tied head is hashed once): 8.9 s on two busy shared cores, so about
    1 s on 8 free ones. The digest is cached on the model and reused while every weight keeps
    its address, version counter (bumped by in-place writes such as load_state_dict) and a
    1024-element sample: later saves and loads cost about 90 ms on that model."""
    tensors = sorted(model.state_dict().items())
    key = _cache_key(tensors)
    cached = model.__dict__.get("_rgemma_fingerprint")
    if cached is None or cached[0] != key:
        cached = (key, _weights_digest(model.config, tensors))
        model.__dict__["_rgemma_fingerprint"] = cached
    return cached[1]


def _cache_key(tensors: list[tuple[str, torch.Tensor]]) -> tuple:
    """Changes when any weight is replaced (`.data =`, `model.to(...)`) or written in place."""
    where = tuple((n, t.data_ptr(), _version(t), t.dtype, tuple(t.shape), str(t.device)) for n, t in tensors)
    samples = [_sample(t) for _, t in tensors]
    sample = torch.cat(samples).cpu() if samples else torch.empty(0)
    return where, hashlib.sha256(sample.view(torch.uint8).numpy()).hexdigest()


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference tensors keep no version counter: the sample must do
        return -1


def _sample(t: torch.Tensor) -> torch.Tensor:
    flat = t.detach().reshape(-1)
    return flat[:: max(1, flat.numel() // SAMPLE)][:SAMPLE].to(torch.float32)


def _weights_digest(config, tensors: list[tuple[str, torch.Tensor]]) -> str:
    digest = hashlib.sha256(state_fingerprint(config).encode())
    unique = {_same_data(t): t for _, t in tensors}  # tied weights (lm_head) are hashed once
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        pieces = {ident: [pool.submit(_hash_piece, p) for p in _pieces(t)] for ident, t in unique.items()}
        for name, t in tensors:
            digest.update(name.encode())
            for piece in pieces[_same_data(t)]:
                digest.update(piece.result())
    return digest.hexdigest()[:32]


def _same_data(t: torch.Tensor) -> tuple:
    return t.data_ptr(), t.dtype, tuple(t.shape), t.stride()


def _pieces(t: torch.Tensor):
    flat = t.detach().reshape(-1)
    for start in range(0, flat.numel(), HASH_CHUNK):
        yield flat[start : start + HASH_CHUNK]


def _hash_piece(piece: torch.Tensor) -> bytes:
    if piece.is_floating_point():
        piece = piece.to(torch.bfloat16)
    return hashlib.sha256(piece.to("cpu").contiguous().view(torch.uint8).numpy()).digest()


# --------------------------------------------------------------------------- tensor checks
def validate_snapshot(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str], model) -> None:
    """Raise ValueError naming the first thing in a snapshot that `model` cannot continue from:
    a layer kind that differs from the model's, a missing or unexpected tensor, a wrong shape,
    conv/k/v not floating point (they are converted to the model dtype), h or logits not
    float32, counters or tokens not integers, NaN or Inf anywhere, negative counts, a document
    start past the count, token ids outside the vocabulary."""
    config = model.config
    _check_meta(path, meta, config)
    count = tensors.get("count")
    if count is None or count.ndim != 1:
        raise ValueError(f"{path}: tensor 'count' is missing or not 1-D")
    specs = _specs(config, count.shape[0])
    for name in tensors:
        if name not in specs:
            raise ValueError(f"{path}: unexpected tensor {name!r} (not part of a state of this model)")
    for name, (shape, kind, required) in specs.items():
        if name in tensors:
            _check_tensor(path, name, tensors[name], shape, kind)
        elif required:
            raise ValueError(f"{path}: missing tensor {name!r}")
    _check_counters(path, tensors, config.vocab_size)


def _check_meta(path: Path, meta: dict[str, str], config) -> None:
    try:
        kinds = json.loads(meta["kinds"])
        extra = json.loads(meta.get("extra", "{}"))
    except (KeyError, json.JSONDecodeError):
        raise ValueError(f"{path}: metadata 'kinds' or 'extra' is missing or not JSON") from None
    if not isinstance(extra, dict):
        raise ValueError(f"{path}: metadata 'extra' must be a JSON object")
    want = config.layers_block_type
    if not isinstance(kinds, list) or len(kinds) != len(want):
        raise ValueError(f"{path}: metadata 'kinds' must list the kind of each of the {len(want)} layers")
    for i, (got, expected) in enumerate(zip(kinds, want)):
        if got != expected:
            raise ValueError(f"{path}: layer {i} is {got!r} in the snapshot but {expected!r} in the model")


def _specs(config, batch: int) -> dict[str, tuple[tuple[int | None, ...], str, bool]]:
    """name -> (shape, dtype kind, required) for a snapshot of `batch` rows."""
    E, K = config.lru_width, config.conv1d_width
    kv = (batch, config.attention_window_size, config.num_key_value_heads, config.head_dim)
    specs = {n: ((batch,), "int", True) for n in ("count", "doc_start", "next_pos")}
    for i, kind in enumerate(config.layers_block_type):
        if kind == "recurrent":
            specs[f"layers.{i}.conv"] = ((batch, K - 1, E), "float", True)
            specs[f"layers.{i}.h"] = ((batch, E), "float32", True)
        else:
            specs[f"layers.{i}.k"] = specs[f"layers.{i}.v"] = (kv, "float", True)
    specs["tokens"] = ((None,), "int", False)
    specs["logits"] = ((batch, config.vocab_size), "float32", False)
    return specs


def _check_tensor(path: Path, name: str, t: torch.Tensor, shape: tuple, kind: str) -> None:
    what = f"{path}: tensor {name!r}"
    if t.ndim != len(shape) or any(w is not None and w != s for w, s in zip(shape, t.shape)):
        want = tuple("n" if w is None else w for w in shape)
        raise ValueError(f"{what} has shape {tuple(t.shape)}, expected {want}")
    if kind == "int" and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
        raise ValueError(f"{what} is {t.dtype}, expected an integer dtype")
    if kind == "float32" and t.dtype != torch.float32:
        raise ValueError(f"{what} is {t.dtype}, expected torch.float32")
    if kind == "float" and not t.is_floating_point():
        raise ValueError(f"{what} is {t.dtype}, expected a floating-point dtype")
    if not all_finite(t):
        raise ValueError(f"{what} has NaN or Inf values")


def _check_counters(path: Path, tensors: dict[str, torch.Tensor], vocab_size: int) -> None:
    count, doc_start = tensors["count"], tensors["doc_start"]
    for name in ("count", "doc_start", "next_pos"):
        if (tensors[name] < 0).any():
            raise ValueError(f"{path}: tensor {name!r} has negative values")
    if (doc_start > count).any():
        raise ValueError(f"{path}: tensor 'doc_start' is past 'count' (a document cannot start later)")
    tokens = tensors.get("tokens")
    if tokens is None:
        return
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"{path}: tensor 'tokens' holds ids outside the vocabulary [0, {vocab_size})")
    if count.numel() == 1 and tokens.numel() != int(count[0]):
        raise ValueError(
            f"{path}: tensor 'tokens' has {tokens.numel()} ids but the state read {int(count[0])}"
        )
