"""State snapshots (prompt caching): save the state after a prompt, continue later.

A snapshot is one safetensors file: every tensor of the State, the token ids it has read
(`tokens`), and metadata with the token count, the model fingerprint and free-form JSON
(`extra`, e.g. a chat transcript). Loading into a different model is refused: the fingerprint
covers the shape-defining config and every weight, so two fine-tunes of one architecture
differ, and every tensor is checked before use (snapshot_checks). Writes are atomic
(rgemma.io.atomic.atomic_file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from rgemma.io.atomic import atomic_file
from rgemma.io.files import require_file
from rgemma.models.state import RecurrentState, State, state_fingerprint
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
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


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
    state = State.from_tensors(tensors, model.config).to(model.device, model.dtype)
    return Snapshot(state, tokens, logits, json.loads(meta.get("extra", "{}")))
