"""The text commands' flags: `rgemma generate`, `rgemma chat`, `rgemma perplexity` (the
commands themselves are rgemma.cli.commands)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rgemma.cli.options import (
    generation_config,
    model_options,
    sampling_options,
    speculation_options,
    speed_options,
)


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = """examples:
  rgemma generate "Once upon a time"
  echo "The sea was" | rgemma generate - --temperature 0
  rgemma generate -f long_document.txt --save-state doc.state --max-new-tokens 0
  rgemma generate "Summarise it:" --load-state doc.state
  rgemma generate "Write a haiku" --chat --system "Be brief." --model google/recurrentgemma-2b-it
  rgemma generate -f draft.txt --prompt-lookup --temperature 0
  rgemma generate "Once upon a time" --model big/ --draft-model small/

Text streams to stdout; loading progress and a closing line of statistics go to stderr."""
    p.add_argument("prompt", nargs="?", default=None, help="the prompt text; '-' reads stdin")
    p.add_argument("-f", "--file", default=None, help="read the prompt from a file")
    model_options(p)
    speed_options(p)
    sampling_options(p)
    speculation_options(p)
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
    config = generation_config(args)
    _check_state_paths(args.load_state, args.save_state)
    generate(
        prompt,
        model=args.model,
        adapter=args.adapter,
        config=config,
        chat=args.chat,
        system=args.system,
        dtype=args.dtype,
        device=args.device,
        save_state_path=args.save_state,
        load_state_path=args.load_state,
        echo=args.file is None and args.prompt != "-" and not args.chat and not args.no_echo,
        compile=args.compile,
        quantize=args.quantize,
        **speculation_arguments(args),
    )
    return 0


def speculation_arguments(args) -> dict:
    """The speculation flags, checked before any weights load."""
    if args.draft_tokens is not None and not (args.draft_model or args.prompt_lookup):
        raise ValueError("--draft-tokens needs --draft-model or --prompt-lookup")
    if args.draft_model and args.prompt_lookup:
        raise ValueError("give --draft-model or --prompt-lookup, not both")
    return dict(
        draft_model=args.draft_model, prompt_lookup=args.prompt_lookup, draft_tokens=args.draft_tokens
    )


def _check_state_paths(load_path: str | None, save_path: str | None) -> None:
    """What can be told about the state files before the weights load."""
    if load_path and Path(load_path).is_dir():
        raise IsADirectoryError(f"--load-state {load_path} is a directory, not a saved state")
    if load_path and not Path(load_path).is_file():
        raise FileNotFoundError(f"state file not found: {load_path}")
    if save_path and Path(save_path).is_dir():
        raise IsADirectoryError(f"--save-state {save_path} is a directory; give a file name")


# --------------------------------------------------------------------------- chat
def add_chat_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = """In the chat: /reset forgets the conversation, /save FILE and /load FILE keep it
for later, /exit leaves. When stdin is not a terminal, each line is one message.

examples:
  rgemma chat
  rgemma chat --model google/recurrentgemma-2b-it --dtype bfloat16 --system "You are terse."
  printf 'Hello\\nTell me a story\\n' | rgemma chat --temperature 0"""
    model_options(p)
    speed_options(p)
    sampling_options(p)
    speculation_options(p)
    p.add_argument("--system", default=None, help="a system message for the whole chat")


def run_chat(args) -> int:
    from rgemma.cli.commands import chat

    chat(
        model=args.model,
        adapter=args.adapter,
        config=generation_config(args),
        system=args.system,
        dtype=args.dtype,
        device=args.device,
        compile=args.compile,
        quantize=args.quantize,
        **speculation_arguments(args),
    )
    return 0


# --------------------------------------------------------------------------- perplexity
def add_perplexity_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = """examples:
  rgemma perplexity --data heldout.jsonl
  rgemma perplexity --model path/to/model --data book.txt --max-docs 100
  rgemma perplexity --data heldout.jsonl --json > result.json

The result goes to stdout (one JSON object with --json); loading progress to stderr."""
    model_options(p)
    p.add_argument(
        "--data",
        required=True,
        help="JSONL with a 'text' field, or plain text with documents separated by blank lines",
    )
    p.add_argument("--max-docs", type=int, default=None, help="use only the first N documents")
    p.add_argument(
        "--json", action="store_true", help="print the result as JSON: documents, tokens, loss, perplexity"
    )


def run_perplexity(args) -> int:
    from rgemma.cli.commands import perplexity

    result = perplexity(
        args.data,
        model=args.model,
        adapter=args.adapter,
        dtype=args.dtype,
        device=args.device,
        max_docs=args.max_docs,
        quantize=args.quantize,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"perplexity {result['perplexity']:.3f} over {result['tokens']} tokens "
        f"({result['documents']} documents)"
    )
    return 0
