"""`rgemma <command>`: parses arguments and calls the typed functions; nothing else.

Subcommands are lazy: only the chosen command's module is imported, so `rgemma --help` and
`rgemma generate` start fast. Each command's flags live in its own module (text, serve, train,
convert, bench); the flags several commands share are built in rgemma.cli.options.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (one-line summary, "module:function that adds arguments", "module:function that runs")
COMMANDS = {
    "generate": (
        "generate text from a prompt (default: the bundled model)",
        "rgemma.cli.text:add_generate_arguments",
        "rgemma.cli.text:run_generate",
    ),
    "chat": (
        "chat interactively, keeping the state between turns",
        "rgemma.cli.text:add_chat_arguments",
        "rgemma.cli.text:run_chat",
    ),
    "perplexity": (
        "measure perplexity on held-out text (JSONL or plain text)",
        "rgemma.cli.text:add_perplexity_arguments",
        "rgemma.cli.text:run_perplexity",
    ),
    "eval": (
        "evaluate with lm-evaluation-harness tasks, in process (needs rgemma[eval])",
        "rgemma.cli.eval:add_eval_arguments",
        "rgemma.cli.eval:run_eval",
    ),
    "convert": (
        "convert DeepMind (torch, Flax) or HF checkpoints to an HF directory",
        "rgemma.cli.convert:add_convert_arguments",
        "rgemma.cli.convert:run_convert",
    ),
    "serve": (
        "serve an OpenAI-compatible HTTP API with continuous batching",
        "rgemma.cli.serve:add_serve_arguments",
        "rgemma.cli.serve:run_serve",
    ),
    "train": (
        "fine-tune (full or LoRA) or train from scratch; torchrun + FSDP2 to scale out",
        "rgemma.cli.train:add_train_arguments",
        "rgemma.cli.train:run_train",
    ),
    "bench": (
        "measure prefill/decode speed and memory against the machine's ceilings",
        "rgemma.cli.bench:add_bench_arguments",
        "rgemma.cli.bench:run_bench",
    ),
}

EPILOG = """examples:
  rgemma generate "Once upon a time"
  rgemma generate -f story.txt --max-new-tokens 100 --temperature 0
  rgemma generate "Hi!" --model google/recurrentgemma-2b-it --chat --dtype bfloat16
  rgemma chat --model path/to/recurrentgemma-2b-it
run `rgemma COMMAND --help` for each command's options."""


def _resolve(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _overview() -> str:
    lines = [
        "usage: rgemma COMMAND [options]",
        "",
        "RecurrentGemma: exact, fixed-state, fast.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<11} {summary}" for name, (summary, _, _) in COMMANDS.items()]
    return "\n".join(lines + ["", EPILOG])


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads that spin while waiting collapse when another process shares the
    # cores; passive waiting costs little. Must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_overview())
        return 0
    if argv[0] in ("-V", "--version"):
        from rgemma import __version__

        print(f"rgemma {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"rgemma: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    summary, add, run = COMMANDS[name]
    parser = argparse.ArgumentParser(
        prog=f"rgemma {name}", description=summary, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    try:
        _resolve(add)(parser)
    except ImportError as err:  # an optional extra is missing
        print(f"rgemma {name}: error: {err}", file=sys.stderr)
        return 1
    args = parser.parse_args(argv[1:])
    try:
        return int(_resolve(run)(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as err:
        print(f"rgemma {name}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
