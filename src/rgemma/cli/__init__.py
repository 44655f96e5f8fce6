"""`rgemma <command>`: parses arguments and calls the typed functions; nothing else.

Subcommands are lazy: only the chosen command's module is imported, so `rgemma --help` and
`rgemma generate` start fast.
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
        "rgemma.cli:add_generate_arguments",
        "rgemma.cli:run_generate",
    ),
    "chat": (
        "chat interactively, keeping the state between turns",
        "rgemma.cli:add_chat_arguments",
        "rgemma.cli:run_chat",
    ),
    "perplexity": (
        "measure perplexity on held-out text (JSONL or plain text)",
        "rgemma.cli:add_perplexity_arguments",
        "rgemma.cli:run_perplexity",
    ),
    "convert": (
        "convert DeepMind (torch, Flax) or HF checkpoints to an HF directory",
        "rgemma.convert.pipeline:add_convert_arguments",
        "rgemma.convert.pipeline:run_convert",
    ),
    "serve": (
        "serve an OpenAI-compatible HTTP API with continuous batching",
        "rgemma.cli.serve:add_serve_arguments",
        "rgemma.cli.serve:run_serve",
    ),
    "train": (
        "fine-tune (full or LoRA) or train from scratch; torchrun + FSDP2 to scale out",
        "rgemma.training.trainer:add_train_arguments",
        "rgemma.training.trainer:run_train",
    ),
    "bench": (
        "measure prefill/decode speed and memory against the machine's ceilings",
        "rgemma.bench.harness:add_bench_arguments",
        "rgemma.bench.harness:run_bench_cli",
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
    # OpenMP threads that spin while waiting collapse (100x slower) when another process
    # shares the cores; passive waiting costs little. Must be set before torch loads.
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


# --------------------------------------------------------------------------- shared options
def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        metavar="PATH_OR_REPO_ID",
        default=None,
        help="an HF-format directory, or a repo id such as google/recurrentgemma-2b "
        "found in the local HF cache (default: the bundled model)",
    )
    weight_options(p)


def weight_options(p: argparse.ArgumentParser) -> None:
    """--dtype, --device and --quantize: how the weights are loaded (also `rgemma serve`'s)."""
    p.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default="auto",
        help="weight dtype (default: as stored in the checkpoint)",
    )
    p.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1, ...")
    p.add_argument(
        "--quantize",
        choices=["none", "int8"],
        default="none",
        help="int8: int8 weight-only linear layers, quantized at load (half the "
        "bytes of bf16; an int8 export from `rgemma convert --quantize int8` "
        "loads as int8 without this flag)",
    )


def _speed_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the one-token decode step: faster decoding after the "
        "first tokens, which pay for the compilation (needs a C++ compiler on CPU)",
    )


def _sampling_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "sampling (applied in this order: repetition penalty, temperature, top-k, top-p, min-p)"
    )
    g.add_argument(
        "--max-new-tokens",
        type=_positive_int,
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
    g.add_argument("--seed", type=int, default=None, help="random seed for reproducible sampling")
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
        default=2048,
        help="read the prompt in chunks of this many tokens (default 2048)",
    )


def _generation_config(args):
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


# --------------------------------------------------------------------------- generate
def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = """examples:
  rgemma generate "Once upon a time"
  echo "The sea was" | rgemma generate - --temperature 0
  rgemma generate -f long_document.txt --save-state doc.state --max-new-tokens 0
  rgemma generate "Summarise it:" --load-state doc.state
  rgemma generate "Write a haiku" --chat --system "Be brief." --model google/recurrentgemma-2b-it

Text streams to stdout; loading progress and a closing line of statistics go to stderr."""
    p.add_argument("prompt", nargs="?", default=None, help="the prompt text; '-' reads stdin")
    p.add_argument("-f", "--file", default=None, help="read the prompt from a file")
    _model_options(p)
    _speed_options(p)
    _sampling_options(p)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    p.add_argument("--system", default=None, help="a system message (with --chat)")
    p.add_argument(
        "--save-state",
        metavar="FILE",
        default=None,
        help="save the state after the prompt, to continue from it later",
    )
    p.add_argument(
        "--load-state",
        metavar="FILE",
        default=None,
        help="continue from a saved state; the prompt is appended to it",
    )
    p.add_argument(
        "--no-echo",
        action="store_true",
        help="print only the new text (a PROMPT argument is otherwise printed first)",
    )


def run_generate(args) -> int:
    from rgemma.cli.commands import generate, read_prompt

    prompt = read_prompt(args.prompt, args.file)
    if prompt is not None and not prompt.strip() and not args.load_state:
        raise ValueError("empty prompt")
    if prompt is None and not args.load_state:
        raise ValueError("no prompt: give PROMPT, -f FILE, or - for stdin")
    generate(
        prompt,
        model=args.model,
        config=_generation_config(args),
        chat=args.chat,
        system=args.system,
        dtype=args.dtype,
        device=args.device,
        save_state_path=args.save_state,
        load_state_path=args.load_state,
        echo=args.file is None and args.prompt != "-" and not args.chat and not args.no_echo,
        compile=args.compile,
        quantize=args.quantize,
    )
    return 0


# --------------------------------------------------------------------------- chat
def add_chat_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = """In the chat: /reset forgets the conversation, /save FILE and /load FILE keep it
for later, /exit leaves. When stdin is not a terminal, each line is one message.

examples:
  rgemma chat
  rgemma chat --model google/recurrentgemma-2b-it --dtype bfloat16 --system "You are terse."
  printf 'Hello\\nTell me a story\\n' | rgemma chat --temperature 0"""
    _model_options(p)
    _speed_options(p)
    _sampling_options(p)
    p.add_argument("--system", default=None, help="a system message for the whole chat")


def run_chat(args) -> int:
    from rgemma.cli.commands import chat

    chat(
        model=args.model,
        config=_generation_config(args),
        system=args.system,
        dtype=args.dtype,
        device=args.device,
        compile=args.compile,
        quantize=args.quantize,
    )
    return 0


# --------------------------------------------------------------------------- perplexity
def add_perplexity_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = """examples:
  rgemma perplexity --data heldout.jsonl
  rgemma perplexity --model path/to/model --data book.txt --max-docs 100"""
    _model_options(p)
    p.add_argument(
        "--data",
        required=True,
        help="JSONL with a 'text' field, or plain text with documents separated by blank lines",
    )
    p.add_argument("--max-docs", type=int, default=None, help="use only the first N documents")


def run_perplexity(args) -> int:
    from rgemma.cli.commands import perplexity

    result = perplexity(
        args.data, model=args.model, dtype=args.dtype, max_docs=args.max_docs, quantize=args.quantize
    )
    print(
        f"perplexity {result['perplexity']:.3f} over {result['tokens']} tokens "
        f"({result['documents']} documents)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
