"""`rgemma convert`: foreign checkpoints to Hugging Face directories, one declarative table each.

Sources (convert_io.py reads each tensor by tensor; convert_deepmind.py holds the tables):
  hf              an HF directory: re-shard, change dtype, quantize.
  deepmind-torch  DeepMind's PyTorch `.pt` state dict (DEEPMIND_TORCH_RULES).
  deepmind-flax   DeepMind's Flax/Orbax checkpoint (needs the `flax` extra), or a `.npz` of its
                  parameter tree flattened with "." (`blocks.0.recurrent_block.linear_x.kernel`;
                  DEEPMIND_FLAX_RULES: Dense `kernel` [in, out] becomes `weight` [out, in]).
Every source key is used exactly once; a key left over, missing, or of an unexpected shape stops
the conversion with a message naming it, before anything is written: the plan maps every key
and runs the shape fixes on meta tensors, then compares with a meta-device model of the config.
Width, heads, lru width, MLP width, vocabulary, conv width and the layer pattern come from the
shapes; the attention window, the logit soft-cap and the embedding scaling from `preset` or
explicit arguments.

The output goes into a temporary directory beside DST, renamed into place when complete. Each
tensor is written to its safetensors file as soon as it is converted: peak memory is about one
tensor, never a whole shard or a second copy of the checkpoint.

int8 weight-only layout (`quantize="int8"`)
-------------------------------------------
Every nn.Linear weight except the tied LM head (linear_x/linear_y/linear_out, q/k/v/o_proj,
gate/up/down_proj) `X.weight` is stored as two tensors:
    X.weight        int8   [out, in]   q = round(w / scale), within [-127, 127]
    X.weight_scale  dtype  [out]       scale = max_j |w[i, j]| / 127 in the output dtype
so w ~= q * scale[:, None], within scale/2 per element. Symmetric, per output channel, by
rgemma.accel.quantize.quantize_weight (the quantizer `--quantize int8` uses at load) applied to
the weight in the output dtype: the bytes equal those of converting without --quantize and
quantizing at load. Biases, the embedding, norms, conv_1d and rg_lru parameters stay in the
checkpoint dtype (config.json `torch_dtype`). config.json gains
    "quantization": {"method": "int8-weight-only", "group_size": null, "modules": [X, ...]}
listing the quantized modules by name, e.g. "model.layers.0.temporal_block.linear_x".
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from rgemma.accel.quantize import quantize_weight
from rgemma.convert.deepmind import (
    DEEPMIND_FLAX_RULES,
    DEEPMIND_TORCH_RULES,
    Fix,
    Rule,
    deepmind_config,
    deepmind_to_hf,
    explicit_fields,
    infer_structure,
    match_rule,
    source_name,
)
from rgemma.convert.sources import TensorInfo, detect_format, one_line, open_source
from rgemma.convert.tokenizer import install_tokenizer, pad_on_the_left
from rgemma.io.atomic import atomic_directory
from rgemma.io.checkpoint_files import (
    copy_tokenizer,
    parse_dtype,
    parse_size,
    resolve_model_dir,
    tokenizer_files,
    write_config,
)
from rgemma.io.shards import MAX_SHARD_SIZE, ShardEntry, ShardWriter
from rgemma.models.config import RecurrentGemmaConfig
from rgemma.pretrained.checkpoint import checkpoint_config

__all__ = [
    "DEEPMIND_FLAX_RULES",
    "DEEPMIND_TORCH_RULES",
    "FORMATS",
    "convert",
    "deepmind_to_hf",
]

FORMATS = ("hf", "deepmind-torch", "deepmind-flax")
QUANTIZATIONS = ("int8",)
RULES = {"deepmind-torch": DEEPMIND_TORCH_RULES, "deepmind-flax": DEEPMIND_FLAX_RULES}


# --------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Step:
    """One source tensor and the HF tensors it becomes (shapes known before reading data)."""

    key: str
    info: TensorInfo
    targets: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    fix: Fix


def plan_steps(infos: dict[str, TensorInfo], rules: list[Rule] | None, label: str) -> list[Step]:
    """Map every source key; the fix runs on a meta tensor, so shapes cost no reading."""
    steps, produced = [], {}
    for key, info in infos.items():
        try:
            targets, fix = match_rule(rules, key) if rules else ((_hf_name(key),), _identity)
        except ValueError as err:
            raise ValueError(f"{label}: {err}") from None
        try:
            shapes = tuple(tuple(t.shape) for t in fix(torch.empty(info.shape, device="meta")))
        except (ValueError, RuntimeError, IndexError) as err:
            raise ValueError(f"{label}: tensor {key!r} has shape {info.shape}: {one_line(err)}") from None
        for target in targets:
            if target in produced:
                raise ValueError(f"{label}: tensors {produced[target]!r} and {key!r} both become {target}")
            produced[target] = key
        steps.append(Step(key, info, targets, shapes, fix))
    return steps


def _hf_name(key: str) -> str:
    return key if key.startswith(("model.", "lm_head.")) else "model." + key


def _identity(t: torch.Tensor) -> list[torch.Tensor]:
    return [t]


def expected_shapes(config: RecurrentGemmaConfig) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """The model's tensors (tied head left out) and its nn.Linear modules, from a meta model."""
    from rgemma.pretrained.classes import RecurrentGemmaForCausalLM

    with torch.device("meta"):
        model = RecurrentGemmaForCausalLM(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight")
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    return shapes, linears


def _check_plan(steps: list[Step], expected: dict, name: Callable[[str], str], label: str) -> None:
    produced = set()
    for step in steps:
        for target, shape in zip(step.targets, step.shapes):
            if target not in expected:
                raise ValueError(
                    f"{label}: unexpected tensor {step.key!r} ({target} is not a "
                    "parameter of the model its other tensors describe)"
                )
            if shape != expected[target]:
                raise ValueError(
                    f"{label}: tensor {step.key!r} of shape {step.info.shape} gives "
                    f"{target} of shape {shape}, expected {expected[target]}"
                )
            produced.add(target)
    missing = [k for k in expected if k not in produced]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ValueError(f"{label}: missing tensor {name(missing[0])!r}{more}")


def _plan(fmt: str, source, src: Path, preset, window, cap, embedding_scale):
    """(config, steps, linear modules), validated against the model before any data is read."""
    infos = source.tensors()
    if fmt == "hf":
        if preset is not None:
            raise ValueError(
                "--preset is for DeepMind checkpoints; an HF directory has its config.json "
                "(override single values with --attention-window-size etc.)"
            )
        config = RecurrentGemmaConfig.from_json_file(src / "config.json")
        if "quantization" in config.extra:
            raise ValueError(f"{src} is already quantized (config.json has 'quantization')")
        config = dataclasses.replace(config, **explicit_fields(window, cap, embedding_scale))
        if config.tie_word_embeddings:  # a redundant copy of the tied embedding
            infos = {k: v for k, v in infos.items() if _hf_name(k) != "lm_head.weight"}
        steps, name = plan_steps(infos, None, str(src)), (lambda k: k)
    else:
        rules = RULES[fmt]
        steps = plan_steps(infos, rules, str(src))
        shapes = {t: s for step in steps for t, s in zip(step.targets, step.shapes)}
        name = lambda k: source_name(rules, k)  # noqa: E731
        try:
            structure = infer_structure(shapes, name)
        except ValueError as err:
            raise ValueError(f"{src}: {err}") from None
        config = deepmind_config(structure, preset, window, cap, embedding_scale)
    expected, linears = expected_shapes(config)
    _check_plan(steps, expected, name, str(src))
    return config, steps, linears


def _out_entries(steps: list[Step], dtype: torch.dtype, quantized: set[str]) -> list[ShardEntry]:
    entries = []
    for step in steps:
        for target, shape in zip(step.targets, step.shapes):
            if target in quantized:
                entries += [
                    ShardEntry(target, torch.int8, shape),
                    ShardEntry(target + "_scale", dtype, shape[:1]),
                ]
            else:
                entries.append(ShardEntry(target, dtype, shape))
    return entries


def _encode(name: str, t: torch.Tensor, dtype: torch.dtype, quantized: set[str]):
    if name in quantized:  # what the unquantized export would hold, quantized as at load
        q, scale = quantize_weight(t.to(dtype), dtype)
        return [(name, q), (name + "_scale", scale)]
    return [(name, t.to(dtype))]


# --------------------------------------------------------------------------- convert
def convert(
    src: str | Path,
    dst: str | Path,
    *,
    source_format: str | None = None,
    preset: str | None = None,
    attention_window_size: int | None = None,
    logits_soft_cap: float | None = None,
    embedding_scale: bool | None = None,
    tokenizer: str | Path | None = None,
    dtype: torch.dtype | str | None = None,
    max_shard_size: int | str = MAX_SHARD_SIZE,
    quantize: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Convert `src` into an HF directory at `dst` and return `dst`.

    `source_format` is detected when None. DeepMind checkpoints need `preset`, or
    `attention_window_size` and `logits_soft_cap` (`embedding_scale=False` for the paper's
    models). `dtype=None` keeps the source's (its embedding's) dtype. `dst` must not exist
    unless `force`. Raises ValueError / FileNotFoundError / FileExistsError / ImportError with
    one-line messages; on any failure nothing is left at `dst`."""
    src, dst = _source_path(src, source_format), Path(dst).expanduser()
    fmt = source_format or detect_format(src)
    out_dtype, max_bytes = parse_dtype(dtype), parse_size(max_shard_size)
    _check_request(src, dst, fmt, out_dtype, max_bytes, quantize, tokenizer, force)
    source = open_source(fmt, src)
    try:
        config, steps, linears = _plan(
            fmt, source, src, preset, attention_window_size, logits_soft_cap, embedding_scale
        )
        out_dtype = out_dtype or _embedding_dtype(steps)
        quantized = {m + ".weight" for m in linears} if quantize else set()
        with atomic_directory(dst, keep_existing=False) as tmp:
            _write_weights(
                source,
                steps,
                _out_entries(steps, out_dtype, quantized),
                tmp,
                max_bytes,
                out_dtype,
                quantized,
                progress,
            )
            if tokenizer is not None:
                install_tokenizer(tokenizer, tmp)
                config = _with_tokenizer_ids(config, tmp)
            elif fmt == "hf":
                copy_tokenizer(src, tmp)  # an HF source keeps its tokenizer
                if tokenizer_files(tmp):
                    pad_on_the_left(tmp)
            write_config(tmp, checkpoint_config(config, out_dtype, [m for m in linears if quantize]))
            if tokenizer is None and fmt == "hf" and (src / "generation_config.json").is_file():
                shutil.copyfile(src / "generation_config.json", tmp / "generation_config.json")
    finally:
        source.close()
    return dst


def _check_request(
    src: Path,
    dst: Path,
    fmt: str,
    dtype: torch.dtype | None,
    max_bytes: int,
    quantize: str | None,
    tokenizer,
    force: bool,
) -> None:
    """Everything that can be refused before opening the source."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown source format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not src.exists():
        raise FileNotFoundError(f"source does not exist: {src}")
    if quantize not in (None, *QUANTIZATIONS):
        raise ValueError(f"unknown quantization {quantize!r}; choose one of {', '.join(QUANTIZATIONS)}")
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point type, got {dtype}")
    if max_bytes <= 0:
        raise ValueError(f"max shard size must be positive, got {max_bytes}")
    if dst.exists() and not force:
        raise FileExistsError(f"{dst} already exists; pass --force to replace it")
    if tokenizer is not None and not Path(tokenizer).expanduser().exists():
        raise FileNotFoundError(f"tokenizer not found: {tokenizer}")


def _source_path(src: str | Path, source_format: str | None) -> Path:
    path = Path(src).expanduser()
    if not path.exists() and source_format in (None, "hf") and re.fullmatch(r"[\w.-]+/[\w.-]+", str(src)):
        return resolve_model_dir(src)  # a repo id in the local HF cache
    return path


def _embedding_dtype(steps: list[Step]) -> torch.dtype:
    for step in steps:
        if "model.embed_tokens.weight" in step.targets:
            return step.info.dtype
    return steps[0].info.dtype


def _write_weights(source, steps, entries, out, max_bytes, dtype, quantized, progress) -> None:
    from tqdm.auto import tqdm

    writer = ShardWriter(out, entries, max_bytes)
    bar = tqdm(
        total=sum(e.nbytes for e in entries),
        unit="B",
        unit_scale=True,
        desc="converting",
        file=sys.stderr,
        disable=not progress,
    )
    try:
        for step in steps:
            tensor = source.read(step.key)
            for target, t in zip(step.targets, step.fix(tensor)):
                for name, out_t in _encode(target, t, dtype, quantized):
                    writer.write(name, out_t)
                    bar.update(out_t.numel() * out_t.element_size())
            source.done(step.key)
        writer.finish()
    finally:
        writer.close()
        bar.close()


def _with_tokenizer_ids(config: RecurrentGemmaConfig, out: Path) -> RecurrentGemmaConfig:
    """Special-token ids from the tokenizer (never hard-coded); it must fit the embedding."""
    from rgemma.text.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(out)
    if tok.vocab_size > config.vocab_size:
        raise ValueError(
            f"the tokenizer has {tok.vocab_size} tokens but the model's embedding has "
            f"only {config.vocab_size} rows"
        )
    ids = dict(bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    return dataclasses.replace(config, **{k: v for k, v in ids.items() if v is not None})
