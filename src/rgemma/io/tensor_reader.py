"""Reading a safetensors file one tensor at a time with plain reads, no memory map.

safetensors' own reader maps the whole file: every page a tensor was read from stays in the
process's resident set until the file is closed, so a loader that converts each tensor (e.g.
int8 at load) peaks at its model plus the whole shard. Here each tensor is read into its own
buffer and nothing else stays resident. The format: an 8-byte little-endian header length N,
N bytes of JSON ({key: {dtype, shape, data_offsets: [begin, end)}, "__metadata__": ...}), then
the data, offsets counted from its start.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path

import torch

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_tensors(path: str | Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) for each tensor of the file, in file order, each read when reached. A
    truncated or malformed file raises ValueError naming it."""
    path = Path(path)
    with open(path, "rb") as f:
        entries, start = _header(f, path)
        for key, entry in sorted(entries.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            yield key, _read(f, path, key, entry, start)


def _header(f, path: Path) -> tuple[dict, int]:
    head = f.read(8)
    size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
    try:
        meta = json.loads(f.read(size)) if 0 < size < 100 << 20 else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: truncated or corrupt safetensors file (no header)")
    meta.pop("__metadata__", None)
    return meta, 8 + size


def _read(f, path: Path, key: str, entry: dict, start: int) -> torch.Tensor:
    dtype, shape = DTYPES.get(entry.get("dtype")), tuple(entry.get("shape", ()))
    begin, end = entry.get("data_offsets", (0, -1))
    if dtype is None or end - begin != math.prod(shape) * dtype.itemsize:
        raise ValueError(f"{path}: tensor {key!r} has a corrupt header entry {entry}")
    out = torch.empty(shape, dtype=dtype)
    f.seek(start + begin)
    view = memoryview(out.view(-1).view(torch.uint8).numpy()) if out.numel() else memoryview(b"")
    if f.readinto(view) != end - begin:
        raise ValueError(f"{path}: truncated or corrupt safetensors file, tensor {key!r}")
    return out
