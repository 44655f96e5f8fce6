"""`rgemma train` (under torchrun: `torchrun --nproc-per-node N -m rgemma train ...`): the flags,
built from rgemma.training.trainer.TrainConfig, and the call to `train`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from rgemma.cli.options import UsageError, dataclass_arguments, dataclass_values
from rgemma.training.trainer import TrainConfig, train


def add_train_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of `rgemma train`: the model, data and output, a recipe, and one flag per
    TrainConfig option."""
    p.add_argument(
        "--model",
        metavar="PATH",
        help="HF-format model directory or cached repo id (default: the bundled model)",
    )
    p.add_argument(
        "--recipe",
        choices=["bundled", "draft"],
        default=None,
        help="a named recipe that fixes data, tokenizer, model and hyperparameters, and writes "
        "OUT/export (bundled: the model shipped with rgemma; draft: a 0.22M-parameter draft "
        "for it, for --draft-model)",
    )
    p.add_argument(
        "--data",
        metavar="FILE",
        nargs="+",
        help=".jsonl ({'text'} or {'messages'} records) or plain text (documents separated by blank lines)",
    )
    p.add_argument("--out", metavar="DIR", required=True, help="where checkpoints go")
    dataclass_arguments(p, TrainConfig)
    return p


def default_model_dir() -> str | None:
    """The bundled model, when this build of rgemma ships one."""
    from rgemma.io.checkpoint_files import bundled_model_dir

    try:
        return str(bundled_model_dir())
    except (FileNotFoundError, ValueError):
        return None


def run_train(args: argparse.Namespace) -> int:
    """`rgemma train`: train, print the summary as JSON on stdout (rank 0), return 0."""
    if args.recipe is None and not args.data:
        raise UsageError("--data FILE... is required (or --recipe)")
    if args.recipe is not None:
        from rgemma.bundled.recipes import prepare

        for key, value in prepare(args.recipe, args.out).items():
            setattr(args, key, value)
    model = args.model
    if model is None and args.init_config is None and args.resume is None:
        model = default_model_dir()
        if model is None:
            raise UsageError("no bundled model here; pass --model PATH")
    summary = train(model, args.data, args.out, **dataclass_values(args, TrainConfig))
    if int(os.environ.get("RANK", "0")) == 0:
        if args.recipe is not None and summary.get("checkpoint"):
            from rgemma.bundled.recipes import export

            summary["export"] = str(export(summary["checkpoint"], Path(args.out) / "export"))
        summary.pop("losses", None)  # every step's loss is in --metrics; keep stdout short
        print(json.dumps(summary))
    return 0
