"""The text commands as plain typed functions: generate, chat, perplexity.

The CLI only parses arguments and calls these. Generated text goes to `out` (stdout), logs and
statistics to `err` (stderr).
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from rgemma.pretrained.checkpoint import parse_dtype, resolve_model_dir
from rgemma.pretrained.classes import RecurrentGemmaForCausalLM
from rgemma.pretrained.snapshot import load_state, save_state
from rgemma.text.engine import ChatSession, GenerationConfig, TextStep, stream
from rgemma.text.generate import prefill
from rgemma.text.tokenizer import Tokenizer


@dataclass
class Stats:
    prompt_tokens: int = 0
    prompt_seconds: float = 0.0
    generated_tokens: int = 0
    generate_seconds: float = 0.0

    def line(self) -> str:
        def rate(n, s):
            return f"{n / s:.1f} tok/s" if s > 0 and n else "-"

        return (
            f"prompt: {self.prompt_tokens} tokens, {rate(self.prompt_tokens, self.prompt_seconds)}"
            f" | generated: {self.generated_tokens} tokens, "
            f"{rate(self.generated_tokens, self.generate_seconds)}"
            f" | peak memory: {peak_memory_mb():.0f} MB"
        )


def peak_memory_mb() -> float:
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def load(
    model: str | None,
    dtype: str | None = None,
    device: str | None = None,
    err: TextIO = sys.stderr,
    *,
    compile: bool = False,
    quantize: str | None = None,
) -> tuple[RecurrentGemmaForCausalLM, Tokenizer]:
    """Model and tokenizer from a directory, a cached repo id, or (None) the bundled model,
    with the inference speed-ups of rgemma.speed.optimize applied."""
    from rgemma.accel.speed import optimize

    path = resolve_model_dir(model)
    start = time.perf_counter()
    print(f"loading {path}", file=err)
    wanted = parse_dtype(dtype)
    if model is None and wanted is None:
        wanted = torch.float32  # the bundled weights are stored in bf16 for size; fp32 is faster on CPU
    lm = RecurrentGemmaForCausalLM.from_pretrained(path, dtype=wanted, device=device)
    tokenizer = Tokenizer.from_dir(path)
    n_params = lm.num_parameters()  # before int8 turns weights into buffers
    optimize(lm, compile=compile, quantize=quantize)
    extras = "".join(
        [
            ", int8 weight-only linears" if quantize == "int8" else "",
            ", compiled decode step (the first tokens compile it)" if compile else "",
        ]
    )
    print(
        f"loaded {n_params / 1e6:.1f}M parameters ({lm.dtype}{extras}) in {time.perf_counter() - start:.1f}s",
        file=err,
    )
    return lm, tokenizer


def read_prompt(prompt: str | None, file: str | None, stdin: TextIO = sys.stdin) -> str | None:
    """The prompt from the argument, a file (-f), or stdin ('-')."""
    if prompt is not None and file is not None:
        raise ValueError("give the prompt as an argument or with -f FILE, not both")
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"prompt file not found: {path}")
        return path.read_text(encoding="utf-8")
    if prompt == "-":
        return stdin.read()
    return prompt


def generate(
    prompt: str | None,
    *,
    model: str | None = None,
    config: GenerationConfig | None = None,
    chat: bool = False,
    system: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
    save_state_path: str | None = None,
    load_state_path: str | None = None,
    echo: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    loaded=None,
    compile: bool = False,
    quantize: str | None = None,
) -> Stats:
    """Stream a completion of `prompt` to `out`; return statistics (also printed to `err`).

    With `load_state_path` the prompt continues a saved state (and may be empty); with
    `save_state_path` the state after the prompt is saved before generating. `echo` writes
    the prompt first, so the output reads as one text."""
    config = config or GenerationConfig()
    lm, tok = loaded or load(model, dtype, device, err, compile=compile, quantize=quantize)
    state, logits, seen = None, None, []
    if load_state_path:
        snap = load_state(load_state_path, lm)
        state, seen, logits = snap.state, snap.tokens or [], snap.logits
    ids = _prompt_ids(tok, prompt, chat, system, continuing=state is not None)
    if not ids and logits is None:
        raise ValueError("empty prompt: give some text (or --load-state a saved prompt)")
    stats = Stats(prompt_tokens=len(ids))
    start = time.perf_counter()
    if ids:
        logits, state = prefill(lm, torch.tensor([ids], device=lm.device), None, state, config.prefill_chunk)
    stats.prompt_seconds = time.perf_counter() - start
    if save_state_path:
        save_state(save_state_path, state, lm, tokens=seen + ids, logits=logits)
        print(f"saved state after {int(state.count[0])} tokens to {save_state_path}", file=err)
    if echo and prompt and not chat:
        out.write(prompt)
    _emit(stream(lm, tok, [], config, state, logits, prime=seen + ids), out, stats)
    print(stats.line(), file=err)
    return stats


def _prompt_ids(
    tok: Tokenizer, prompt: str | None, chat: bool, system: str | None, continuing: bool
) -> list[int]:
    if prompt is None or prompt == "":
        return []
    if chat:
        messages = [{"role": "system", "content": system}] if system else []
        return tok.encode_chat(messages + [{"role": "user", "content": prompt}])
    if system:
        raise ValueError("--system needs --chat")
    return tok.encode(prompt, add_bos=False if continuing else None)


def _emit(steps: Iterable[TextStep], out: TextIO, stats: Stats) -> str:
    """Write each step's text as it arrives; count tokens and time."""
    start = time.perf_counter()
    text = ""
    for step in steps:
        stats.generated_tokens += 1
        if step.text:
            out.write(step.text)
            out.flush()
            text += step.text
    stats.generate_seconds += time.perf_counter() - start
    out.write("\n")
    out.flush()
    return text


# --------------------------------------------------------------------------- chat
HELP = "commands: /reset (forget the conversation), /save FILE, /load FILE, /exit"


def chat(
    *,
    model: str | None = None,
    config: GenerationConfig | None = None,
    system: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    loaded=None,
    compile: bool = False,
    quantize: str | None = None,
) -> ChatSession:
    """An interactive multi-turn chat that keeps the state between turns. One message per
    line; when stdin is not a terminal it reads lines until end of input, never waiting."""
    config = config or GenerationConfig()
    lm, tok = loaded or load(model, dtype, device, err, compile=compile, quantize=quantize)
    session = ChatSession(lm, tok, config, system)
    interactive = stdin.isatty()
    if interactive:
        print(HELP, file=err)
    while True:
        if interactive:
            err.write("> ")
            err.flush()
        line = stdin.readline()
        if not line:
            break
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if line.startswith("/"):
            if _chat_command(session, line, err):
                break
            continue
        stats = Stats()
        _emit(session.send(line), out, stats)
        print(stats.line(), file=err)
    return session


def _chat_command(session: ChatSession, line: str, err: TextIO) -> bool:
    """Run a /command; True means exit."""
    cmd, _, arg = line.partition(" ")
    arg = arg.strip()
    if cmd in ("/exit", "/quit"):
        return True
    if cmd == "/reset":
        session.reset()
        print("(conversation reset)", file=err)
    elif cmd in ("/save", "/load") and not arg:
        print(f"usage: {cmd} FILE", file=err)
    elif cmd == "/save":
        _save_chat(session, arg)
        print(f"(saved {len(session.fed)} tokens to {arg})", file=err)
    elif cmd == "/load":
        try:
            _load_chat(session, arg)
            print(f"(loaded {len(session.fed)} tokens, {len(session.messages)} messages)", file=err)
        except (ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=err)
    else:
        print(f"unknown command {cmd}; {HELP}", file=err)
    return False


def _save_chat(session: ChatSession, path: str) -> None:
    if session.state is None:
        raise ValueError("nothing to save yet")
    save_state(path, session.state, session.model, tokens=session.fed, extra={"messages": session.messages})


def _load_chat(session: ChatSession, path: str) -> None:
    snap = load_state(path, session.model)
    if "messages" not in snap.extra:
        raise ValueError(f"{path} is not a chat snapshot (no messages)")
    session.state, session.fed, session.messages = snap.state, snap.tokens or [], snap.extra["messages"]


# --------------------------------------------------------------------------- perplexity
def read_documents(path: str | Path) -> list[str]:
    """JSONL with a `text` field per line, or plain text with documents split by blank lines."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        docs = []
        for n, line in enumerate(raw.splitlines(), 1):
            if line.strip():
                try:
                    docs.append(json.loads(line)["text"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ValueError(f"{path}:{n}: expected a JSON object with a 'text' field") from None
        return docs
    return [d.strip() for d in raw.split("\n\n") if d.strip()]


@torch.no_grad()
def perplexity(
    data: str | Path,
    *,
    model: str | None = None,
    dtype: str | None = None,
    max_docs: int | None = None,
    err: TextIO = sys.stderr,
    loaded=None,
    progress: Callable | None = None,
    quantize: str | None = None,
) -> dict[str, float]:
    """Token-weighted perplexity of `model` over the documents in `data` (each with BOS and
    EOS, the way the bundled model is trained)."""
    lm, tok = loaded or load(model, dtype, None, err, quantize=quantize)
    docs = read_documents(data)[:max_docs]
    if not docs:
        raise ValueError(f"no documents in {data}")
    total, count = 0.0, 0
    for doc in docs:
        ids = tok.encode(doc) + ([tok.eos_id] if tok.eos_id is not None else [])
        if len(ids) < 2:
            continue
        x = torch.tensor([ids], device=lm.device)
        logits = lm(x, use_cache=False).logits[0, :-1].float()
        total += torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
        count += len(ids) - 1
    result = {
        "documents": len(docs),
        "tokens": count,
        "loss": total / count,
        "perplexity": math.exp(total / count),
    }
    print(json.dumps(result), file=err)
    return result
