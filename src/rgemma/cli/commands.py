"""The text commands as plain typed functions: generate, chat, perplexity.

The CLI only parses arguments and calls these. Generated text goes to `out` (stdout), logs and
statistics to `err` (stderr).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from rgemma.accel.memory import peak_memory_mb
from rgemma.cli.options import one_line
from rgemma.io.documents import read_documents
from rgemma.io.files import require_file
from rgemma.pretrained.loading import load
from rgemma.pretrained.snapshot import load_state, save_state
from rgemma.text.core import prefill
from rgemma.text.engine import ChatSession, GenerationConfig, stream
from rgemma.text.output import TextStep
from rgemma.text.scoring import document_perplexity
from rgemma.text.speculative import Speculation
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


def read_prompt(prompt: str | None, file: str | None, stdin: TextIO | None = None) -> str | None:
    """The prompt from the argument, a file (-f), or stdin ('-'); files and stdin must be UTF-8."""
    if prompt is not None and file is not None:
        raise ValueError("give the prompt as an argument or with -f FILE, not both")
    if file is not None:
        path = require_file(file, "prompt file")
        return _utf8(path.read_bytes(), str(path))
    if prompt == "-":
        stdin = stdin or sys.stdin
        buffer = getattr(stdin, "buffer", None)  # bytes, whatever the locale's error handler
        return stdin.read() if buffer is None else _utf8(buffer.read(), "stdin")
    return prompt


def _utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{where} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def generate(
    prompt: str | None,
    *,
    model: str | None = None,
    adapter: str | None = None,
    config: GenerationConfig | None = None,
    chat: bool = False,
    system: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
    save_state_path: str | None = None,
    load_state_path: str | None = None,
    echo: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
    loaded=None,
    compile: bool = False,
    quantize: str | None = None,
    draft_model: str | None = None,
    prompt_lookup: bool = False,
    draft_tokens: int | None = None,
) -> Stats:
    """Stream a completion of `prompt` to `out`; return statistics (also printed to `err`).

    With `load_state_path` the prompt continues a saved state (and may be empty); with
    `save_state_path` the state after the prompt is saved before generating. `echo` writes
    the prompt first, so the output reads as one text. `out`/`err` default to sys.stdout/stderr
    as they are at the call. `draft_model` (a path) or `prompt_lookup` decode speculatively,
    `draft_tokens` per check (rgemma.text.speculative)."""
    out, err = out or sys.stdout, err or sys.stderr
    config = config or GenerationConfig()
    lm, tok = loaded or load(model, dtype, device, err, compile=compile, quantize=quantize, adapter=adapter)
    config = with_speculation(
        config, tok, draft_model, prompt_lookup, draft_tokens, dtype, device, quantize, err
    )
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


def with_speculation(
    config: GenerationConfig,
    tok: Tokenizer,
    draft_model,
    prompt_lookup,
    draft_tokens,
    dtype,
    device,
    quantize,
    err,
) -> GenerationConfig:
    """`config` with the speculation the flags ask for (the draft model loaded and checked)."""
    if draft_model is None and not prompt_lookup:
        if draft_tokens is not None:
            raise ValueError("--draft-tokens needs --draft-model or --prompt-lookup")
        return config
    draft = None
    if draft_model is not None:
        draft, draft_tok = load(draft_model, dtype, device, err, quantize=quantize)
        check_same_tokenizer(tok, draft_tok)
    speculation = Speculation(draft_model=draft, prompt_lookup=prompt_lookup, draft_tokens=draft_tokens)
    return dataclasses.replace(config, speculation=speculation)


PROBE = "The quick brown fox, 1234 <b>jumps</b> über naïve café!\n\tdef f(x): return x**2"


def check_same_tokenizer(tok: Tokenizer, other: Tokenizer) -> None:
    """A draft model must split text into the same ids as the model (checked on a probe)."""
    if tok.vocab_size != other.vocab_size or tok.encode(PROBE) != other.encode(PROBE):
        raise ValueError(
            f"the draft model's tokenizer differs from the model's ({other.vocab_size} vs "
            f"{tok.vocab_size} tokens); a draft model must share the tokenizer"
        )


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
    adapter: str | None = None,
    config: GenerationConfig | None = None,
    system: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    loaded=None,
    compile: bool = False,
    quantize: str | None = None,
    draft_model: str | None = None,
    prompt_lookup: bool = False,
    draft_tokens: int | None = None,
) -> ChatSession:
    """An interactive multi-turn chat that keeps the state between turns. One message per
    line; when stdin is not a terminal it reads lines until end of input, never waiting.
    A failed /command or a line that is not text prints `error: ...` and the chat goes on."""
    stdin, out, err = stdin or sys.stdin, out or sys.stdout, err or sys.stderr
    config = config or GenerationConfig()
    lm, tok = loaded or load(model, dtype, device, err, compile=compile, quantize=quantize, adapter=adapter)
    config = with_speculation(
        config, tok, draft_model, prompt_lookup, draft_tokens, dtype, device, quantize, err
    )
    session = ChatSession(lm, tok, config, system)
    interactive = stdin.isatty()
    if interactive:
        print(HELP, file=err)
    while (line := _next_line(stdin, err, interactive)) is not None:
        try:
            if line.startswith("/"):
                if _chat_command(session, line, err):
                    break
                continue
            _check_utf8(line)
        except Exception as e:  # a failed command or a bad line: the conversation goes on
            print(f"error: {one_line(e)}", file=err)
            continue
        stats = Stats()
        _emit(session.send(line), out, stats)
        print(stats.line(), file=err)
    return session


def _next_line(stdin: TextIO, err: TextIO, interactive: bool) -> str | None:
    """The next non-blank line of input (None at its end)."""
    while True:
        if interactive:
            err.write("> ")
            err.flush()
        line = stdin.readline()
        if not line:
            return None
        if line.strip():
            return line.rstrip("\n")


def _check_utf8(line: str) -> None:
    """A line read with the locale's surrogateescape handler may hold bytes that are not text."""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("that line is not UTF-8 text; nothing was sent") from None


def _chat_command(session: ChatSession, line: str, err: TextIO) -> bool:
    """Run a /command; True means exit. A failure raises and changes nothing."""
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
        _load_chat(session, arg)
        print(f"(loaded {len(session.fed)} tokens, {len(session.messages)} messages)", file=err)
    else:
        print(f"unknown command {cmd}; {HELP}", file=err)
    return False


def _save_chat(session: ChatSession, path: str) -> None:
    if session.state is None:
        raise ValueError("nothing to save yet")
    if Path(path).is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a file name")
    save_state(path, session.state, session.model, tokens=session.fed, extra={"messages": session.messages})


def _load_chat(session: ChatSession, path: str) -> None:
    snap = load_state(path, session.model)
    if "messages" not in snap.extra:
        raise ValueError(f"{path} is not a chat snapshot (no messages)")
    messages = snap.extra["messages"]
    if not isinstance(messages, list) or not all(_is_message(m) for m in messages):
        raise ValueError(f"{path} is not a chat snapshot (its messages are not role/content pairs of text)")
    session.state, session.fed, session.messages = snap.state, snap.tokens or [], messages


def _is_message(m) -> bool:
    return isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)


# --------------------------------------------------------------------------- perplexity
def perplexity(
    data: str | Path,
    *,
    model: str | None = None,
    adapter: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
    max_docs: int | None = None,
    err: TextIO | None = None,
    loaded=None,
    progress: Callable | None = None,
    quantize: str | None = None,
) -> dict[str, float]:
    """Token-weighted perplexity of `model` over the documents in `data` (each with BOS and
    EOS, the way the bundled model is trained), scored by rgemma.text.scoring in batches. The
    documents are read before the model loads, so a bad data file fails fast."""
    try:
        docs = read_documents(data)[:max_docs]
    except UnicodeDecodeError as e:
        raise ValueError(f"{data}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not docs:
        raise ValueError(f"no documents in {data}")
    lm, tok = loaded or load(model, dtype, device, err or sys.stderr, quantize=quantize, adapter=adapter)
    return document_perplexity(lm, tok, docs)
