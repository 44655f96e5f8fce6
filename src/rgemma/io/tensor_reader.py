"""Reading a safetensors file one tensor at a time with plain reads, no memory map.

safetensors' own reader maps the whole file: every page a tensor was read from stays in the
process's resident set until the file is closed, so a loader that converts each tensor (e.g.
int8 at load) peaks at its model plus the whole shard. Here each tensor is read into its own
buffer and nothing else stays resident. The format: an 8-byte little-endian header length N,
N bytes of JSON ({key: {dtype, shape, data_offsets: [begin, end)}, "__metadata__": ...}), then
the data, offsets counted from its start.

`read_ahead` reads the next tensor in a background thread while the caller works on the last
one (quantizes it, say), so a load takes about the longer of reading and converting, not the
sum: file reads and torch's and rgemma's kernels all run without the GIL.
"""

from __future__ import annotations

import json
import math
import os
import queue
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch

T = TypeVar("T")
Allocate = Callable[[str, torch.dtype, tuple[int, ...]], torch.Tensor]  # (key, dtype, shape) -> empty
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


def read_tensors(
    path: str | Path, into: Allocate | None = None, drop_cache: bool = False
) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) for each tensor of the file, in file order, each read when reached into
    `into(key, dtype, shape)` (default new memory; Scratch.get recycles it). `drop_cache`
    drops each tensor's pages from the page cache once read (see drop_pages). A truncated or
    malformed file raises ValueError naming it."""
    path = Path(path)
    with open(path, "rb") as f:
        entries, start = _header(f, path)
        for key, entry in sorted(entries.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            yield key, _read(f, path, key, entry, start, into)
            if drop_cache:
                begin, end = entry["data_offsets"]
                drop_pages(f.fileno(), start + begin, end - begin)


def drop_pages(fd: int, offset: int, length: int) -> None:
    """Ask the OS to drop a file range's pages from its cache (where it can: posix_fadvise).
    A file read once is worth dropping behind the reader when it cannot stay cached anyway:
    filling the cache with it then means evicting other pages, which on a machine short of
    memory costs several times the read itself (4-7x for the 9B, README, Speed)."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


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


def _read(f, path: Path, key: str, entry: dict, start: int, into: Allocate | None) -> torch.Tensor:
    dtype, shape = DTYPES.get(entry.get("dtype")), tuple(entry.get("shape", ()))
    begin, end = entry.get("data_offsets", (0, -1))
    if dtype is None or end - begin != math.prod(shape) * dtype.itemsize:
        raise ValueError(f"{path}: tensor {key!r} has a corrupt header entry {entry}")
    out = into(key, dtype, shape) if into is not None else torch.empty(shape, dtype=dtype)
    f.seek(start + begin)
    view = memoryview(out.view(-1).view(torch.uint8).numpy()) if out.numel() else memoryview(b"")
    if f.readinto(view) != end - begin:
        raise ValueError(f"{path}: truncated or corrupt safetensors file, tensor {key!r}")
    return out


class Scratch:
    """Memory that reads recycle: a tensor from `get`, handed back with `give` once its user is
    done with it, lends its memory to a later `get` that fits (the smallest such), instead of
    new memory, whose first touch costs a page fault per 4 KiB: reading into new memory takes
    about 3x as long as into memory used before. Thread-safe; at most `keep` buffers wait."""

    def __init__(self, keep: int = 2):
        self.keep = keep
        self._free: list[torch.Tensor] = []  # uint8 buffers
        self._lent: dict[int, torch.Tensor] = {}  # data_ptr -> its buffer
        self._lock = threading.Lock()

    def get(self, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        """An uninitialized tensor, in recycled memory when some fits."""
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes == 0:
            return torch.empty(shape, dtype=dtype)
        with self._lock:
            fits = [i for i, b in enumerate(self._free) if b.numel() >= nbytes]
            best = min(fits, key=lambda i: self._free[i].numel(), default=None)
            buf = self._free.pop(best) if best is not None else torch.empty(nbytes, dtype=torch.uint8)
            self._lent[buf.data_ptr()] = buf
        return buf[:nbytes].view(dtype).view(shape)

    def give(self, tensor: torch.Tensor) -> None:
        """Hand back a tensor from `get` (others are ignored); it must not be used after."""
        with self._lock:
            buf = self._lent.pop(tensor.data_ptr(), None)
            if buf is None:
                return
            self._free.append(buf)
            if len(self._free) > self.keep:  # keep the largest
                self._free.pop(min(range(len(self._free)), key=lambda i: self._free[i].numel()))


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """`items`, each produced by a background thread while the caller holds the one before: at
    most three are alive at once (the caller's, one waiting, one being read). An error in
    `items` is raised here, in order; closing this iterator early stops the thread and closes
    `items`."""
    ready: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    thread = threading.Thread(target=_produce, args=(items, ready, stop), daemon=True, name="read-ahead")
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        thread.join()


_END = object()


def _produce(items: Iterator, ready: queue.Queue, stop: threading.Event) -> None:
    try:
        for item in items:
            if not _put(ready, (item, None), stop):
                return
        _put(ready, (_END, None), stop)
    except BaseException as error:  # handed to the consumer, which raises it
        _put(ready, (_END, error), stop)
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


def _put(ready: queue.Queue, entry: tuple, stop: threading.Event) -> bool:
    """Put `entry` once there is room; False if the consumer stopped first."""
    while not stop.is_set():
        try:
            ready.put(entry, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False
