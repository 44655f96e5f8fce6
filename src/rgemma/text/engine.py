"""Text in, text out: the generation engine shared by the CLI, the chat and the server.

`stream()` yields one `TextStep` per generated token of one prompt, `complete()` runs a batch of
prompts to the end. Both sit on the token-level `prefill`/`decode` of generate.py and add
what text needs: a streaming detokenizer per row and stop strings with hold-back, so no part of
a stop string is ever emitted. `ChatSession` keeps the state between turns so a chat never
re-reads its history.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from rgemma.models.state import State
from rgemma.text.generate import PREFILL_CHUNK, decode, prefill
from rgemma.text.sampling import PAD_ID, SamplingParams
from rgemma.text.tokenizer import Tokenizer


@dataclass
class TextStep:
    """One generated token: its id, the text it makes printable, its logprob, and why the
    sequence ended (None while it goes on; "stop" for EOS or a stop string, else "length")."""

    token_id: int
    text: str
    logprob: float
    finish_reason: str | None = None


class TextStream:
    """Per-row text: detokenize incrementally and hold back any tail that could begin a stop
    string. `push` returns (printable text, hit a stop string)."""

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = (), prompt: Sequence[int] = ()):
        self.detok = tokenizer.detokenizer()
        if prompt:  # continue the prompt's text: "Once upon a time" + ", there was"
            self.detok.prime(prompt)
        self.stop = [s for s in stop if s]
        self.held = ""
        self.stopped = False

    def push(self, token_id: int) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        self.held += self.detok.push(token_id)
        return self._release(final=False)

    def finish(self) -> str:
        """The rest of the text at the end of the sequence (nothing after a stop string)."""
        if self.stopped:
            return ""
        self.held += self.detok.flush()
        return self._release(final=True)[0]

    def _release(self, final: bool) -> tuple[str, bool]:
        hits = [i for i in (self.held.find(s) for s in self.stop) if i >= 0]
        if hits:
            out, self.held, self.stopped = self.held[: min(hits)], "", True
            return out, True
        keep = 0 if final else _longest_stop_prefix_suffix(self.held, self.stop)
        out, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
        return out, False


def _longest_stop_prefix_suffix(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of some stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


@dataclass
class GenerationConfig:
    """What to generate: budget, sampler, stop conditions."""

    max_new_tokens: int = 256
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: Sequence[str] = ()
    eos_ids: Sequence[int] | None = None  # None: the tokenizer's stop ids (EOS, <end_of_turn>)
    seed: int | None = None
    prefill_chunk: int = PREFILL_CHUNK

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative integer, got {self.max_new_tokens!r}")


def stream(
    model,
    tokenizer: Tokenizer,
    prompt_ids: Sequence[int],
    config: GenerationConfig,
    state: State | None = None,
    logits: torch.Tensor | None = None,
    prime: Sequence[int] = (),
) -> Iterator[TextStep]:
    """Generate for one prompt, yielding a TextStep per token. `state` (advanced in place)
    continues an earlier prefix, in which case `prompt_ids` are the new tokens only; they may
    be empty when `logits` (the next-token logits of that prefix, (1, V)) are given, and then
    `prime` names the last ids read, so the text continues them with the right spacing."""
    for steps in _run(model, tokenizer, [list(prompt_ids)], config, state, logits, [list(prime)]):
        if steps[0] is not None:
            yield steps[0]


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    prompt_tokens: int


def complete(
    model, tokenizer: Tokenizer, prompts: Sequence[Sequence[int]], config: GenerationConfig
) -> list[Completion]:
    """Generate for a batch of prompts (left-padded together; rows finish independently)."""
    done = [Completion("", [], [], "length", len(p)) for p in prompts]
    for steps in _run(model, tokenizer, [list(p) for p in prompts], config, None):
        for row, step in enumerate(steps):
            if step is None:
                continue
            c = done[row]
            c.text += step.text
            c.token_ids.append(step.token_id)
            c.logprobs.append(step.logprob)
            c.finish_reason = step.finish_reason or c.finish_reason
    return done


def _run(
    model,
    tokenizer: Tokenizer,
    prompts: list[list[int]],
    config: GenerationConfig,
    state: State | None,
    logits: torch.Tensor | None = None,
    primes: list[list[int]] | None = None,
) -> Iterator[list[TextStep | None]]:
    """The batched loop: per step, a TextStep for each row still generating (else None)."""
    device = model.device
    if logits is not None and state is not None and not any(prompts):
        ids, mask = torch.empty(len(prompts), 0, dtype=torch.long, device=device), None
    else:
        for i, p in enumerate(prompts):
            if not p:
                raise ValueError(f"empty prompt (row {i}): nothing to continue from")
        ids, mask = left_pad(prompts, tokenizer.pad_id or 0, device)
        logits, state = prefill(model, ids, mask, state, config.prefill_chunk)
    if config.max_new_tokens == 0:
        return
    eos = tokenizer.stop_ids if config.eos_ids is None else list(config.eos_ids)
    generator = None
    if config.seed is not None:
        generator = torch.Generator(device=device).manual_seed(config.seed)
    primes = [p or q for p, q in zip(prompts, primes or [[]] * len(prompts))]
    streams = [TextStream(tokenizer, config.stop, p) for p in primes]
    prev = ids.masked_fill(mask == 0, PAD_ID) if mask is not None else ids
    stopper = _StopStrings(streams)
    for step in decode(
        model,
        logits,
        state,
        config.sampling,
        config.max_new_tokens,
        eos,
        tokenizer.pad_id or 0,
        generator,
        prev,
        stop_rows=stopper,
    ):
        yield [_text_step(stopper, streams[r], step, r) for r in range(len(prompts))]


class _StopStrings:
    """Feeds each sampled token to its row's TextStream; tells decode() which rows hit a stop
    string, and keeps the text each row produced at this step."""

    def __init__(self, streams: list[TextStream]):
        self.streams = streams
        self.pieces: list[str] = [""] * len(streams)

    def __call__(self, tokens: torch.Tensor, active: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
        hit = torch.zeros_like(active)
        for r, (tok, act, is_eos) in enumerate(zip(tokens.tolist(), active.tolist(), eos.tolist())):
            if not act or is_eos:
                self.pieces[r] = ""
                continue
            self.pieces[r], hit[r] = self.streams[r].push(tok)
        return hit


def _text_step(stopper: _StopStrings, stream_: TextStream, step, row: int) -> TextStep | None:
    if not bool(step.active[row]):
        return None
    reason = step.finish_reason[row]
    text = stopper.pieces[row]
    if reason is not None:
        text += stream_.finish()
    return TextStep(int(step.token_ids[row]), text, float(step.logprobs[row]), reason)


def left_pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(ids, mask) with rows right-aligned; mask is None when no row needs padding."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, T - len(r) :] = 1
    if bool(mask.all()):
        return ids.to(device), None
    return ids.to(device), mask.to(device)


# --------------------------------------------------------------------------- chat
class ChatSession:
    """A multi-turn chat that keeps the model state between turns.

    Each turn renders the whole transcript with the chat template and feeds only the tokens
    the state has not seen, so the result equals re-reading the transcript. When the model's
    own reply tokens differ from how the rendered transcript tokenizes them, the session goes
    back to a copy of the state taken after the last prompt and feeds from there; only if even
    the prompt diverges (a tokenizer merge across the turn boundary) does it re-read it all.
    """

    def __init__(self, model, tokenizer: Tokenizer, config: GenerationConfig, system: str | None = None):
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.system = system
        self.reset()

    def reset(self) -> None:
        self.messages: list[dict[str, str]] = []
        if self.system:
            self.messages.append({"role": "system", "content": self.system})
        self.state: State | None = None
        self.fed: list[int] = []  # tokens the state has consumed
        self._after_prompt: tuple[State, list[int]] | None = None
        self.rereads = 0

    def send(self, text: str) -> Iterator[TextStep]:
        """Add a user message and stream the model's reply."""
        if not text.strip():
            raise ValueError("empty message")
        self.messages.append({"role": "user", "content": text})
        ids = self.tokenizer.encode_chat(self.messages, add_generation_prompt=True)
        self._rewind_to_prefix_of(ids)
        logits, self.state = prefill(
            self.model,
            torch.tensor([ids[len(self.fed) :]], device=self.model.device),
            None,
            self.state,
            self.config.prefill_chunk,
        )
        self._after_prompt = (self.state.clone(), ids)
        reply, generated = "", []
        for step in stream(self.model, self.tokenizer, [], self.config, self.state, logits, prime=ids):
            reply += step.text
            generated.append(step.token_id)
            yield step
        self.fed = ids + generated[:-1]  # the last sampled token is never fed
        self.messages.append({"role": "assistant", "content": reply})

    def _rewind_to_prefix_of(self, ids: list[int]) -> None:
        """Make `self.fed` a prefix of `ids`, reusing as much state as possible."""
        if self.state is not None and ids[: len(self.fed)] == self.fed and len(ids) > len(self.fed):
            return
        if self._after_prompt is not None:
            state, prompt = self._after_prompt
            if ids[: len(prompt)] == prompt and len(ids) > len(prompt):
                self.state, self.fed = state.clone(), prompt
                return
        self.rereads += self.state is not None
        self.state = State.zeros(self.model.config, 1, self.model.dtype, self.model.device)
        self.fed = []
