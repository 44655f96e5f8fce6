"""The one safetensors writer: model.safetensors, or numbered shards plus an index.

The safetensors format is written directly (8-byte header length, JSON header, raw bytes). The
header needs only names, dtypes and shapes, so when they are known in advance (a conversion
plan) each tensor goes to disk as soon as it exists and a shard never sits in memory:
`ShardWriter`. `write_shards` is the same writer fed from a dict of tensors already in memory.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from rgemma.io.checkpoint_files import INDEX, SINGLE

MAX_SHARD_SIZE = "2GB"  # the default largest file, as transformers' save_pretrained
ST_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.int32: "I32",
    torch.int64: "I64",
    torch.bool: "BOOL",
}


@dataclass(frozen=True)
class ShardEntry:
    """One tensor to write, known before its data: name, dtype and shape."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return self.dtype.itemsize * math.prod(self.shape)

    @classmethod
    def of(cls, name: str, tensor: torch.Tensor) -> ShardEntry:
        return cls(name, tensor.dtype, tuple(tensor.shape))


class ShardWriter:
    """Writes the planned entries, in order, into model.safetensors or numbered shards of at
    most `max_bytes` each plus an index. Call `write(name, tensor)` for every entry in the
    planned order, then `finish()`; `close()` (also on failure) closes an open file."""

    def __init__(self, out: Path, entries: list[ShardEntry], max_bytes: int):
        self.out = Path(out)
        self.shards = _split(entries, max_bytes)
        n = len(self.shards)
        self.names = (
            [SINGLE] if n == 1 else [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
        )
        self._order = [(i, e) for i, shard in enumerate(self.shards) for e in shard]
        self._next = 0
        self._file = None

    def write(self, name: str, tensor: torch.Tensor) -> None:
        shard, entry = self._order[self._next]
        if ShardEntry.of(name, tensor) != entry:
            raise RuntimeError(f"writer expected {entry}, got {name} {tuple(tensor.shape)} {tensor.dtype}")
        if self._file is None:
            self._file = open(self.out / self.names[shard], "wb")
            self._file.write(_header(self.shards[shard]))
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        self._file.write(memoryview(data))
        self._next += 1
        if self._next == len(self._order) or self._order[self._next][0] != shard:
            self.close()

    def finish(self) -> None:
        if self._next != len(self._order):
            raise RuntimeError(f"writer got {self._next} of {len(self._order)} tensors")
        if len(self.shards) == 1:
            return
        weight_map = {e.name: fname for fname, shard in zip(self.names, self.shards) for e in shard}
        total = sum(e.nbytes for shard in self.shards for e in shard)
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (self.out / INDEX).write_text(json.dumps(index, indent=2) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def write_shards(out: Path, tensors: Mapping[str, torch.Tensor], max_bytes: int) -> None:
    """Write `tensors` in order through one ShardWriter (see the module docstring)."""
    writer = ShardWriter(out, [ShardEntry.of(k, t) for k, t in tensors.items()], max_bytes)
    try:
        for name, t in tensors.items():
            writer.write(name, t)
        writer.finish()
    finally:
        writer.close()


def _split(entries: list[ShardEntry], max_bytes: int) -> list[list[ShardEntry]]:
    shards: list[list[ShardEntry]] = [[]]
    size = 0
    for e in entries:
        if shards[-1] and size + e.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += e.nbytes
    return shards


def _header(entries: list[ShardEntry]) -> bytes:
    """The safetensors header: u64 little-endian length, then JSON padded to 8 bytes."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for e in entries:
        header[e.name] = {
            "dtype": ST_DTYPES[e.dtype],
            "shape": list(e.shape),
            "data_offsets": [offset, offset + e.nbytes],
        }
        offset += e.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw
