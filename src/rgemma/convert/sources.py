"""Reading foreign checkpoints tensor by tensor, and writing safetensors shard by shard.

Every source gives `tensors()` (name -> shape and dtype, read without touching the data) and
`read(name)`; `done(name)` says a tensor has been converted, so its memory can go. Sources:

- `HFSource`: a Hugging Face directory (config.json plus safetensors), one file open at a time.
- `TorchSource`: DeepMind's `.pt` state dict, loaded with `torch.load(mmap=True,
  weights_only=True)`; pages of a converted tensor are handed back to the kernel, so memory
  holds about one tensor, not the file.
- `NpzSource`: the flattened Flax parameter tree (`blocks.0.recurrent_block.linear_x.kernel`,
  ...) in a `.npz`, read one array at a time. bfloat16 arrays saved through `ml_dtypes`
  (stored as 2-byte void) are read as bfloat16. A leading `params.` is dropped.
- `OrbaxSource`: DeepMind's Flax/Orbax checkpoint directory, restored one top-level subtree
  (`embedder`, `blocks.N`, `final_norm`) at a time. Needs the `flax` extra.

Writing goes through rgemma.io.shards.ShardWriter, which streams each converted tensor to disk.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import mmap
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rgemma.accel.memory import libc
from rgemma.io.checkpoint_files import weight_files
from rgemma.io.shards import ST_DTYPES

ORBAX_MARKERS = ("_METADATA", "_CHECKPOINT_METADATA", "checkpoint", "manifest.ocdbt", "commit_success.txt")
FLAX_EXTRA = (
    "reading an Orbax checkpoint needs the optional packages orbax-checkpoint and jax: "
    "pip install 'rgemma[flax]' (or save the flattened parameter tree as a .npz)"
)
_FROM_ST = {v: k for k, v in ST_DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype


def one_line(err: BaseException) -> str:
    lines = [s.strip() for s in str(err).splitlines() if s.strip()]
    return lines[0] if lines else type(err).__name__


# --------------------------------------------------------------------------- format detection
def detect_format(src: Path) -> str:
    """ "hf", "deepmind-torch" or "deepmind-flax", from what lies at `src`."""
    if src.is_dir():
        if (src / "config.json").is_file():
            return "hf"
        if any((src / m).exists() for m in ORBAX_MARKERS) or any(src.glob("ocdbt.process_*")):
            return "deepmind-flax"
    elif src.is_file():
        if src.suffix.lower() in (".pt", ".pth", ".bin"):
            return "deepmind-torch"
        if src.suffix.lower() == ".npz":
            return "deepmind-flax"
    else:
        raise FileNotFoundError(f"source does not exist: {src}")
    raise ValueError(
        f"cannot tell the format of {src}: expected an HF directory with config.json, "
        "a DeepMind .pt/.pth/.bin file, an Orbax directory or a .npz; pass --from"
    )


def open_source(fmt: str, src: Path):
    if fmt == "hf":
        return HFSource(src)
    if fmt == "deepmind-torch":
        return TorchSource(src)
    if src.is_file():
        return NpzSource(src)
    return OrbaxSource(src)


# --------------------------------------------------------------------------- sources
class HFSource:
    """safetensors files of an HF directory; one file handle open at a time."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self.path, self._open = path, safe_open
        self.files = weight_files(path)
        self._infos: dict[str, TensorInfo] = {}
        self._file_of: dict[str, Path] = {}
        for f in self.files:
            try:
                with safe_open(f, framework="pt") as handle:
                    slices = {key: handle.get_slice(key) for key in handle.keys()}
                    found = {key: (tuple(sl.get_shape()), sl.get_dtype()) for key, sl in slices.items()}
            except Exception as err:  # safetensors raises its own error types
                raise ValueError(f"{f}: truncated or corrupt safetensors file ({one_line(err)})") from None
            for key, (shape, dtype) in found.items():
                if dtype not in _FROM_ST:
                    raise ValueError(f"{f}: tensor {key!r} has unsupported dtype {dtype}")
                self._infos[key], self._file_of[key] = TensorInfo(shape, _FROM_ST[dtype]), f
        self._handle, self._handle_file = None, None

    def tensors(self) -> dict[str, TensorInfo]:
        return self._infos

    def read(self, key: str) -> torch.Tensor:
        f = self._file_of[key]
        if self._handle_file != f:
            self.close()
            self._handle, self._handle_file = self._open(f, framework="pt"), f
        try:
            return self._handle.get_tensor(key)
        except Exception as err:
            raise ValueError(f"{f}: truncated or corrupt tensor {key!r} ({one_line(err)})") from None

    def done(self, key: str) -> None:
        pass

    def close(self) -> None:
        self._handle = self._handle_file = None


class TorchSource:
    """DeepMind's `.pt` state dict, memory-mapped (never unpickled beyond `weights_only`)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:
            raise _torch_load_error(path, err) from None
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                raise ValueError(
                    f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor; "
                    "expected a flat state dict"
                )
        self.state = state
        self._maps = _file_mappings(path)

    def tensors(self) -> dict[str, TensorInfo]:
        return {k: TensorInfo(tuple(v.shape), v.dtype) for k, v in self.state.items()}

    def read(self, key: str) -> torch.Tensor:
        return self.state[key]

    def done(self, key: str) -> None:
        _drop_pages(self.state[key], self._maps)

    def close(self) -> None:
        self.state = {}


def _torch_load_error(path: Path, err: Exception) -> ValueError:
    """One line for a failed torch.load. torch's own text advises weights_only=False, which
    would run whatever code the file holds: never repeat it."""
    text = str(err)
    if "Weights only load failed" in text:  # an UnpicklingError naming what it refused
        found = re.search(r"GLOBAL ([\w.]+)", text)
        calls = f", it calls {found.group(1)}" if found else ""
        return ValueError(
            f"{path}: refused: it holds code or objects other than tensors (an unsafe pickle{calls}); "
            "rgemma reads only plain tensor state dicts"
        )
    if "mmap can only be used" in text:  # an old or plain pickle, or not a checkpoint at all
        return ValueError(
            f"{path}: truncated or corrupt PyTorch checkpoint (not a zip-format torch.save file)"
        )
    return ValueError(f"{path}: truncated or corrupt PyTorch checkpoint ({one_line(err)})")


class NpzSource:
    """A flat `.npz` of the Flax parameter tree, one array decompressed at a time."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.npz = np.load(path, allow_pickle=False)
            members = {n: n + ".npy" for n in self.npz.files}
            self._infos = {}
            for name, member in members.items():
                with self.npz.zip.open(member) as f:
                    shape, dtype = _npy_header(f)
                self._infos[_strip_params(name)] = TensorInfo(shape, _torch_dtype(dtype, name, path))
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
            raise ValueError(f"{path}: truncated or corrupt .npz ({one_line(err)})") from None
        self._names = {_strip_params(n): n for n in self.npz.files}

    def tensors(self) -> dict[str, TensorInfo]:
        return self._infos

    def read(self, key: str) -> torch.Tensor:
        try:
            return numpy_to_torch(self.npz[self._names[key]])
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
            raise ValueError(f"{self.path}: truncated or corrupt array {key!r} ({one_line(err)})") from None

    def done(self, key: str) -> None:
        pass

    def close(self) -> None:
        self.npz.close()


class OrbaxSource:
    """DeepMind's Flax checkpoint, restored one top-level subtree at a time (numpy arrays)."""

    def __init__(self, path: Path):
        try:
            import orbax.checkpoint as ocp
        except ImportError:
            raise ImportError(FLAX_EXTRA) from None
        self.path, self._ocp = path, ocp
        self._ckpt = ocp.PyTreeCheckpointer()
        _drop_closed_loop_noise()
        self._outer, self._tree = _params_tree(self._read_metadata(), path)
        self._infos, self._group_of = {}, {}
        for group, sub in self._tree.items():
            for name, leaf in _flatten(sub, group).items():
                if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
                    raise ValueError(f"{path}: not a readable Orbax checkpoint ({name!r} is not an array)")
                self._infos[name] = TensorInfo(
                    tuple(leaf.shape), _torch_dtype(np.dtype(leaf.dtype), name, path)
                )
                self._group_of[name] = group
        self._group, self._arrays = None, {}

    def _read_metadata(self) -> dict:
        """The parameter tree's metadata (shapes and dtypes), or a one-line error."""
        try:
            with _quiet_orbax():
                meta = self._ckpt.metadata(self.path.absolute())
        except Exception as err:
            meta, reason = None, one_line(err)
        else:
            reason = "its metadata holds no parameter tree; is _METADATA missing or damaged?"
        item = getattr(meta, "item_metadata", meta)
        tree = getattr(item, "tree", item)
        if not isinstance(tree, dict) or not tree:
            raise ValueError(f"{self.path}: not a readable Orbax checkpoint ({reason})")
        return tree

    def tensors(self) -> dict[str, TensorInfo]:
        return self._infos

    def read(self, key: str) -> torch.Tensor:
        group = self._group_of[key]
        if group != self._group:
            self._arrays = {}  # let the previous subtree go before restoring the next
            self._arrays, self._group = self._restore(group), group
        return numpy_to_torch(self._arrays[key])

    def _restore(self, group: str) -> dict[str, np.ndarray]:
        ocp = self._ocp
        item = {group: self._tree[group]}
        for outer in reversed(self._outer):
            item = {outer: item}
        args = _tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
        try:
            with _quiet_orbax():
                out = self._restore_item(item, args)
        except Exception as err:
            raise ValueError(f"{self.path}: cannot restore {group!r} ({one_line(err)})") from None
        for outer in self._outer:
            out = out[outer]
        return _flatten(out[group], group)

    def _restore_item(self, item: dict, args: dict) -> dict:
        import inspect

        ocp, where = self._ocp, self.path.absolute()
        if "partial_restore" in inspect.signature(ocp.args.PyTreeRestore).parameters:
            restore = ocp.args.PyTreeRestore(item=item, restore_args=args, partial_restore=True)
            return self._ckpt.restore(where, args=restore)
        # older orbax: an empty `transforms` restores only the keys of `item`
        return self._ckpt.restore(where, item=item, restore_args=args, transforms={})

    def done(self, key: str) -> None:
        self._arrays.pop(key, None)

    def close(self) -> None:
        self._arrays = {}


def _params_tree(tree: dict, path: Path) -> tuple[tuple[str, ...], dict]:
    """(outer keys, groups): DeepMind's tree sits under `params` or at the top."""
    outer = ("params",) if set(tree) == {"params"} else ()
    groups = tree["params"] if outer else tree
    if not isinstance(groups, dict):
        raise ValueError(f"{path}: not a readable Orbax checkpoint ('params' is not a tree)")
    return outer, groups


@contextlib.contextmanager
def _quiet_orbax():
    """Orbax and jax log warnings (through absl) on the way to errors we report ourselves."""
    loggers = [logging.getLogger(name) for name in ("absl", "jax", "orbax")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _drop_closed_loop_noise() -> None:
    """After a failed read, tensorstore's threads still post results to Orbax's event loop.
    Each late result raises "Event loop is closed" into sys.unraisablehook, and each read
    error nobody awaited any more is logged by asyncio as "Future exception was never
    retrieved" when its future is collected: tracebacks on stderr after our one-line error.
    Drop exactly those (for the rest of the process); anything else still gets reported."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_loop", False):
        return

    def hook(unraisable) -> None:
        err = unraisable.exc_value
        if not (isinstance(err, RuntimeError) and str(err) == "Event loop is closed"):
            previous(unraisable)

    hook.drops_closed_loop = True
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_drop_orphaned_read_errors)


_STATUS_ERROR = re.compile(r"[A-Z][A-Z_]+: ")  # tensorstore's absl status text, e.g. "OUT_OF_RANGE: "


def _drop_orphaned_read_errors(record: logging.LogRecord) -> bool:
    """False for asyncio's report of a tensorstore read error whose future nobody awaited."""
    err = record.exc_info[1] if record.exc_info else None
    orphaned = record.getMessage().startswith("Future exception was never retrieved")
    return not (orphaned and isinstance(err, ValueError) and _STATUS_ERROR.match(str(err)))


def _flatten(tree, prefix: str) -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for k, v in tree.items():
        out.update(_flatten(v, f"{prefix}.{k}"))
    return out


def _tree_map(fn, tree):
    return {k: _tree_map(fn, v) for k, v in tree.items()} if isinstance(tree, dict) else fn(tree)


def _strip_params(name: str) -> str:
    return name.removeprefix("params.")


def _npy_header(f) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(f)
    read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(
        version
    )
    if read is None:
        raise ValueError(f"unsupported .npy version {version}")
    shape, _, dtype = read(f)
    return tuple(shape), dtype


def _torch_dtype(dtype: np.dtype, name: str, path: Path) -> torch.dtype:
    if (dtype.kind == "V" and dtype.itemsize == 2) or dtype.name == "bfloat16":
        return torch.bfloat16  # ml_dtypes' bfloat16; saved to .npy it becomes 2-byte void
    try:
        return torch.from_numpy(np.empty(0, dtype)).dtype
    except TypeError:
        raise ValueError(f"{path}: array {name!r} has unsupported dtype {dtype}") from None


def numpy_to_torch(arr: np.ndarray) -> torch.Tensor:
    arr = np.ascontiguousarray(arr)
    if (arr.dtype.kind == "V" and arr.dtype.itemsize == 2) or arr.dtype.name == "bfloat16":
        return torch.from_numpy(arr.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(arr)


# --------------------------------------------------------------------------- releasing mmap pages
def _file_mappings(path: Path) -> list[tuple[int, int]]:
    """Address ranges where this process maps `path` (Linux), so we only ever drop file pages."""
    try:
        target = str(path.resolve())
        ranges = []
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].strip() == target:
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    ranges.append((lo, hi))
        return ranges
    except OSError:
        return []


def _drop_pages(t: torch.Tensor, maps: list[tuple[int, int]]) -> None:
    """madvise(DONTNEED) the pages of a memory-mapped tensor we are done with.

    Touched pages of a file mapping stay in the process's resident set until unmapped, so a
    17 GB checkpoint would look 17 GB resident by the end. The mapping is private and never
    written, so dropped pages would simply be re-read from the file if touched again."""
    if not maps or t.numel() == 0:
        return
    page = mmap.PAGESIZE
    lo = t.data_ptr() // page * page
    hi = -(-(t.data_ptr() + t.numel() * t.element_size()) // page) * page
    c = libc()
    for start, end in maps:
        if c is not None and start <= lo and hi <= end:
            c.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), 4)  # MADV_DONTNEED
            return
