"""`rgemma convert`: the flags, and the call to rgemma.convert.pipeline.convert."""

from __future__ import annotations

import argparse
import sys

from rgemma.cli.options import report_error
from rgemma.convert.pipeline import FORMATS, QUANTIZATIONS, convert
from rgemma.io.shards import MAX_SHARD_SIZE
from rgemma.models.config import PRESETS

EXAMPLES = """\
what each source needs:
  hf              a directory with config.json and safetensors (or a repo id in the HF cache)
  deepmind-torch  a .pt/.pth/.bin state dict, plus --preset, or --attention-window-size and
                  --logits-soft-cap (the shapes give everything else)
  deepmind-flax   an Orbax directory (pip install 'rgemma[flax]'), or a .npz of the parameter
                  tree flattened with "." (blocks.0.recurrent_block.linear_x.kernel, ...);
                  the same flags as deepmind-torch

examples:
  # DeepMind's PyTorch release, with its SentencePiece tokenizer
  rgemma convert 2b.pt recurrentgemma-2b --preset recurrentgemma-2b --tokenizer tokenizer.model
  # the paper's Griffin, without a preset
  rgemma convert griffin.pt griffin --attention-window-size 1024 --logits-soft-cap 0 --no-embedding-scale
  # DeepMind's Flax/Orbax checkpoint
  rgemma convert 2b/ recurrentgemma-2b --from deepmind-flax --preset recurrentgemma-2b
  # re-shard an HF checkpoint as bfloat16 in 1 GB files; int8 weight-only linears
  rgemma convert google/recurrentgemma-2b 2b-bf16 --dtype bfloat16 --max-shard-size 1GB
  rgemma convert 2b-bf16 2b-int8 --quantize int8
"""


def add_convert_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of `rgemma convert`; `run_convert` takes the parsed namespace."""
    parser.description = (
        "Convert a checkpoint (HF, DeepMind PyTorch, DeepMind Flax) into an HF directory\n"
        "of safetensors, tensor by tensor. DST appears only when complete."
    )
    parser.epilog = EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "src", metavar="SRC", help="checkpoint to read: HF directory, .pt, Orbax directory or .npz"
    )
    parser.add_argument("dst", metavar="DST", help="HF directory to create (must not exist unless --force)")
    parser.add_argument(
        "--from", dest="source_format", choices=FORMATS, help="source format (default: detected from SRC)"
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="DeepMind preset that supplies the window, soft-cap and embedding scaling",
    )
    parser.add_argument(
        "--attention-window-size",
        type=int,
        metavar="W",
        help="local attention window (2048 for RecurrentGemma, 1024 in the paper)",
    )
    parser.add_argument(
        "--logits-soft-cap",
        type=float,
        metavar="CAP",
        help="tanh cap on the logits (30 for RecurrentGemma; 0 for none)",
    )
    parser.add_argument(
        "--no-embedding-scale",
        dest="embedding_scale",
        action="store_const",
        const=False,
        default=None,
        help="do not scale embeddings by sqrt(width) (the paper's Griffin/Hawk)",
    )
    parser.add_argument(
        "--tokenizer",
        metavar="PATH",
        help="SentencePiece tokenizer.model, or a directory of tokenizer files, to "
        "include (tokenizer.json is built from the .model)",
    )
    parser.add_argument(
        "--dtype",
        choices=("bfloat16", "float16", "float32"),
        help="dtype of the written weights (default: the source's)",
    )
    parser.add_argument(
        "--max-shard-size",
        default=MAX_SHARD_SIZE,
        metavar="SIZE",
        help=f"largest safetensors file, e.g. 2GB or 500MB (default: {MAX_SHARD_SIZE})",
    )
    parser.add_argument(
        "--quantize",
        choices=QUANTIZATIONS,
        help="int8: weight-only int8 linears with per-output-channel scales",
    )
    parser.add_argument("--force", action="store_true", help="replace DST if it exists")
    return parser


def run_convert(args: argparse.Namespace) -> int:
    """Run `rgemma convert` from parsed arguments; one line on stderr and 1 on failure."""
    try:
        out = convert(
            args.src,
            args.dst,
            source_format=args.source_format,
            preset=args.preset,
            attention_window_size=args.attention_window_size,
            logits_soft_cap=args.logits_soft_cap,
            embedding_scale=args.embedding_scale,
            tokenizer=args.tokenizer,
            dtype=args.dtype,
            max_shard_size=args.max_shard_size,
            quantize=args.quantize,
            force=args.force,
            progress=getattr(args, "progress", True),
        )
    except (ValueError, OSError, ImportError) as err:
        report_error("rgemma convert", err, getattr(args, "debug", False))
        return 1
    print(f"rgemma convert: wrote {out}", file=sys.stderr)
    return 0
