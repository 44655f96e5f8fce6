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
run `rgemma COMMAND --help` for each command's options. An error is one line on stderr
(exit 2: usage, 1: anything else, 130: Ctrl-C); --debug (or RGEMMA_DEBUG=1) adds the traceback."""


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
    """Run `rgemma COMMAND ...`; returns the exit status. Errors are one line on stderr,
    `rgemma COMMAND: error: ...` (2 for usage, 1 otherwise); `--debug` or RGEMMA_DEBUG=1
    adds the traceback. Ctrl-C exits 130 and a reader that stops early (`| head`) exits 0,
    both quietly."""
    # OpenMP threads that spin while waiting collapse when another process shares the
    # cores; passive waiting costs little. Must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = os.environ.get("RGEMMA_DEBUG", "") not in ("", "0")
    while argv[:1] == ["--debug"]:
        debug, argv = True, argv[1:]
    name = argv[0] if argv and argv[0] in COMMANDS else None
    try:
        if name is None:
            return _top_level(argv)
        return _command(name, argv[1:], debug or "--debug" in argv)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 0


def _top_level(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_overview())
        return 0
    if argv[0] in ("-V", "--version"):
        from rgemma import __version__

        print(f"rgemma {__version__}")
        return 0
    print(f"rgemma: unknown command {argv[0]!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
    return 2


def _command(name: str, argv: list[str], debug: bool) -> int:
    """Parse and run one command; every error it raises becomes one line."""
    from rgemma.cli.options import UsageError, report_error

    prog = f"rgemma {name}"
    try:
        _check_environment(argv)
        args = _parser(name).parse_args(argv)
        return int(_resolve(COMMANDS[name][2])(args) or 0)
    except _ParseExit as stop:
        return stop.code
    except UsageError as err:
        report_error(prog, err, debug)
        return 2
    except (KeyboardInterrupt, BrokenPipeError):
        raise
    except Exception as err:
        report_error(prog, err, debug)
        return 1


def _check_environment(argv: list[str]) -> None:
    """What would otherwise fail late: a closed stdout, arguments that are not UTF-8."""
    from rgemma.cli.options import UsageError

    if sys.stdout is None:
        raise OSError("stdout is closed; redirect it (> /dev/null) instead")
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"an argument is not valid UTF-8: {arg!r}") from None


class _ParseExit(Exception):
    def __init__(self, code: int):
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line (`PROG: error: ...`) and nothing exits
    the interpreter."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise _ParseExit(2)

    def exit(self, status: int = 0, message: str | None = None):
        if message:
            print(message, end="", file=sys.stderr)
        raise _ParseExit(status)


def _parser(name: str) -> argparse.ArgumentParser:
    summary, add, _ = COMMANDS[name]
    parser = _Parser(
        prog=f"rgemma {name}", description=summary, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _resolve(add)(parser)
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error (also RGEMMA_DEBUG=1)"
    )
    return parser


def _silence_stdout() -> None:
    """The reader of stdout has gone: point fd 1 at /dev/null, so the interpreter's final
    flush of what is still buffered fails no more (Python's documented pattern)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
