"""Flag builders the commands share: the model and how its weights load, speed switches,
sampling, and flags built from a dataclass's fields (one place for each default)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import traceback
import types
import typing

import torch

from rgemma.text.generate import PREFILL_CHUNK

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes 64 bits


class UsageError(ValueError):
    """A mistake in the command line that argparse cannot see; `rgemma` exits with 2."""


def one_line(err: BaseException) -> str:
    """The first line of an error's message (the type's name when it has none); errors
    that are not the usual kinds keep their type's name, so the line still says what broke."""
    lines = [s.strip() for s in str(err).splitlines() if s.strip()]
    text = lines[0] if lines else type(err).__name__
    if isinstance(err, (ValueError, OSError, ImportError)) or not lines:
        return text
    return f"{type(err).__name__}: {text}"


def report_error(prog: str, err: BaseException, debug: bool) -> None:
    """`PROG: error: MESSAGE`, one line on stderr; with `debug` the traceback first."""
    if debug:
        traceback.print_exception(err)
    hint = "" if debug or isinstance(err, (ValueError, OSError)) else " (--debug shows the traceback)"
    print(f"{prog}: error: {one_line(err)}{hint}", file=sys.stderr)


def dataclass_arguments(p, cls, only: typing.Collection[str] | None = None) -> None:
    """One flag per field of dataclass `cls` that has a `help` in its metadata (those in
    `only`, when given): `--field-name`, or `metadata["flag"]`; the default, type, metavar and
    help come from the field, so the dataclass is the one place a default is written. bool
    fields are switches (a True default makes the flag turn it off); list fields take one
    or more values."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata or (only is not None and f.name not in only):
            continue
        kind = _base_type(hints[f.name])
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        kw = dict(dest=f.name, help=_help(f, kind))
        if kind is bool:
            kw.update(action="store_false" if f.default else "store_true", default=f.default)
        else:
            kw.update(default=f.default, metavar=f.metadata.get("metavar", "N" if kind is int else None))
            kw.update(nargs="+") if kind is list else kw.update(type=kind)
        p.add_argument(flag, **kw)


def dataclass_values(args: argparse.Namespace, cls) -> dict:
    """The parsed values of `cls`'s fields that `args` holds, by field name."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def _base_type(hint):
    """int for `int` or `int | None`; list for `list[str] | None`."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


def _help(f: dataclasses.Field, kind) -> str:
    text = f.metadata["help"]
    if kind is bool or f.default is None or f.metadata.get("default_in_help") is False:
        return text
    return f"{text} (default {f.default})".replace("%", "%%")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def seed_value(text: str) -> int:
    """A random seed: an integer in [0, 2**64 - 1]."""
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**64 - 1], got {value}")
    return value


def port_number(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 1..65535, got {value}")
    return value


def device_name(text: str) -> str:
    """A device this machine has: checked while parsing, before any weights load."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r} (cpu, cuda, cuda:1, mps, ...)") from None
    if device.type == "cpu":
        return text
    backend = getattr(torch, device.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise argparse.ArgumentTypeError(f"{text}: {device.type} is not available on this machine")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if device.index is not None and device.index >= count:
        raise argparse.ArgumentTypeError(f"{text}: this machine has {count} {device.type} device(s)")
    return text


def model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        metavar="PATH_OR_REPO_ID",
        default=None,
        help="an HF-format directory, or a repo id such as google/recurrentgemma-2b "
        "found in the local HF cache (default: the bundled model)",
    )
    p.add_argument(
        "--adapter",
        metavar="DIR",
        default=None,
        help="a LoRA adapter directory (rgemma train --lora, or peft's save_pretrained), merged "
        "into the weights at load; --model may also be an adapter directory alone, whose "
        "base_model_name_or_path is then loaded",
    )
    weight_options(p)


def weight_options(p: argparse.ArgumentParser) -> None:
    """--dtype, --device and --quantize: how the weights are loaded (also `rgemma serve`'s)."""
    p.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default=None,
        help="weight dtype; auto: as stored in the checkpoint (default: float32 for the bundled "
        "model, which is stored in bfloat16, else as stored)",
    )
    p.add_argument("--device", type=device_name, default=None, help="cpu (default), cuda, cuda:1, ...")
    p.add_argument(
        "--quantize",
        choices=["none", "int8"],
        default="none",
        help="int8: int8 weight-only linear layers, quantized at load (half the "
        "bytes of bf16; an int8 export from `rgemma convert --quantize int8` "
        "loads as int8 without this flag)",
    )


def speed_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the one-token decode step: faster decoding after the "
        "first tokens, which pay for the compilation (needs a C++ compiler on CPU)",
    )


def sampling_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "sampling (applied in this order: repetition penalty, temperature, top-k, top-p, min-p)"
    )
    g.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=200,
        help="stop after this many new tokens (default 200)",
    )
    g.add_argument(
        "--temperature", type=float, default=0.8, help="0 is greedy; higher is more random (default 0.8)"
    )
    g.add_argument("--top-k", type=int, default=0, help="keep the k likeliest tokens (0: off)")
    g.add_argument(
        "--top-p",
        type=float,
        default=0.95,
        help="keep the smallest set of tokens with this much probability (default 0.95)",
    )
    g.add_argument(
        "--min-p", type=float, default=0.0, help="drop tokens less likely than min-p x the top token (0: off)"
    )
    g.add_argument(
        "--repetition-penalty",
        type=float,
        default=1.0,
        help="penalise tokens already seen (1: off; 1.1 is mild)",
    )
    g.add_argument(
        "--seed", type=seed_value, default=None, help="random seed for reproducible sampling (0 .. 2**64-1)"
    )
    g.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="TEXT",
        help="stop when this text appears (repeatable); it is never printed",
    )
    g.add_argument(
        "--prefill-chunk",
        type=int,
        default=PREFILL_CHUNK,
        help=f"read the prompt in chunks of this many tokens (default {PREFILL_CHUNK})",
    )


def speculation_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "speculative decoding (the same text as without it, or the same distribution when sampling)"
    )
    g.add_argument(
        "--draft-model",
        metavar="DIR",
        default=None,
        help="a smaller rgemma model with the same tokenizer drafts tokens that the model checks",
    )
    g.add_argument(
        "--prompt-lookup",
        action="store_true",
        help="draft by copying what followed the last words' earlier occurrence in the text "
        "(no second model; pays off when the output repeats the input: editing, extraction)",
    )
    g.add_argument(
        "--draft-tokens",
        type=positive_int,
        default=None,
        metavar="K",
        help="draft K tokens per check (default: adapted, up to 8, to the acceptance rate and "
        "the measured speed of each K; 0 drafts at times, where checking costs more than it gives)",
    )


def generation_config(args):
    from rgemma.text.engine import GenerationConfig
    from rgemma.text.sampling import SamplingParams

    sampling = SamplingParams(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
    )
    return GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        sampling=sampling,
        stop=args.stop,
        seed=args.seed,
        prefill_chunk=args.prefill_chunk,
    )
