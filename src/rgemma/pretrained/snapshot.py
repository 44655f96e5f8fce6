"""State snapshots (prompt caching): save the state after a prompt, continue later.

A snapshot is one safetensors file: every tensor of the State, the token ids it has read
(`tokens`), and metadata with the token count, the model fingerprint and free-form JSON
(`extra`, e.g. a chat transcript). Loading into a different model is refused: the fingerprint
covers the shape-defining config and every weight, so two fine-tunes of one architecture
differ, and every tensor is checked before use (snapshot_checks). Writes are atomic (temp
file, then rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from rgemma.io.atomic import default_mode
from rgemma.io.files import require_file
from rgemma.models.state import AttentionState, RecurrentState, State, state_fingerprint
from rgemma.pretrained.snapshot_checks import model_fingerprint, validate_snapshot

FORMAT = "rgemma-state"
VERSION = "2"  # 2: the fingerprint covers every weight (1 sampled them)


@dataclass
class Snapshot:
    state: State
    tokens: list[int] | None = None  # the ids the state has read, if saved
    logits: torch.Tensor | None = None  # next-token logits after them, (B, V), if saved
    extra: dict[str, Any] = field(default_factory=dict)


def save_state(
    path: str | Path,
    state: State,
    model,
    tokens: list[int] | None = None,
    logits: torch.Tensor | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write `state` (one or more rows), the ids it has read and the next-token logits to
    `path`, atomically."""
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in state.tensors().items()}
    if tokens is not None:
        tensors["tokens"] = torch.tensor(tokens, dtype=torch.long).reshape(-1)
    if logits is not None:
        tensors["logits"] = logits.detach().to("cpu", torch.float32).contiguous()
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "fingerprint": model_fingerprint(model),
        "architecture": state_fingerprint(model.config),
        "token_count": json.dumps(state.count.tolist()),
        "kinds": json.dumps(
            ["recurrent" if isinstance(s, RecurrentState) else "attention" for s in state.layers]
        ),
        "extra": json.dumps(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.chmod(tmp, default_mode())  # mkstemp makes it private
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_state(path: str | Path, model) -> Snapshot:
    """The snapshot, with its state on the model's device and dtype.

    Raises ValueError when the file is not a snapshot, was made with another model, or
    holds a tensor the model cannot continue from (see validate_snapshot)."""
    path = require_file(path, "state file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors' own error type
        raise ValueError(f"{path}: not a readable state snapshot ({err})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not an rgemma state snapshot")
    if meta.get("version") != VERSION:
        raise ValueError(
            f"{path}: a version {meta.get('version')} snapshot; this rgemma reads version {VERSION} "
            "(the model fingerprint changed): save the state again"
        )
    if meta.get("fingerprint") != model_fingerprint(model):
        raise ValueError(
            f"{path}: this state was saved with a different model "
            f"({meta.get('architecture')}); it cannot continue this one"
        )
    validate_snapshot(path, tensors, meta, model)
    tokens = tensors.pop("tokens").tolist() if "tokens" in tensors else None
    logits = tensors.pop("logits").to(model.device) if "logits" in tensors else None
    state = _build(tensors, json.loads(meta["kinds"]), model)
    return Snapshot(state, tokens, logits, json.loads(meta.get("extra", "{}")))


def _build(tensors: dict[str, torch.Tensor], kinds: list[str], model) -> State:
    dev, dtype = model.device, model.dtype

    def get(name: str, keep_dtype: bool = False) -> torch.Tensor:
        t = tensors[name].to(dev)
        return t if keep_dtype or not t.is_floating_point() else t.to(dtype)

    layers = []
    for i, kind in enumerate(kinds):
        if kind == "recurrent":
            layers.append(
                RecurrentState(conv=get(f"layers.{i}.conv"), h=get(f"layers.{i}.h", keep_dtype=True))
            )
        else:
            layers.append(AttentionState(k=get(f"layers.{i}.k"), v=get(f"layers.{i}.v")))
    return State(
        layers, get("count"), get("doc_start"), get("next_pos"), fingerprint=state_fingerprint(model.config)
    )
