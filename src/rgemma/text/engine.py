"""Text in, text out: the generation engine shared by the CLI, the chat and the server.

`stream()` yields one `TextStep` per generated token of one prompt, `complete()` runs a batch of
prompts to the end. Both are the generation core (core.py: prefill, then a Decoder whose rows
carry a TextStream each, the detokenizer with stop strings held back that the server uses too).
`ChatSession` keeps the state between turns so a chat never re-reads its history.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from rgemma.models.state import State
from rgemma.text.core import PREFILL_CHUNK, Decoder, Row, Slots, prefill, row_generator, waves
from rgemma.text.logprobs import TokenLogprobs, check_top_n
from rgemma.text.output import TextStep, TextStream
from rgemma.text.sampling import SamplingParams
from rgemma.text.speculative import Speculation, SpeculativeDecoder
from rgemma.text.tokenizer import Tokenizer


@dataclass
class GenerationConfig:
    """What to generate: budget, sampler, stop conditions."""

    max_new_tokens: int = 256
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: Sequence[str] = ()
    eos_ids: Sequence[int] | None = None  # None: the tokenizer's stop ids (EOS, <end_of_turn>)
    seed: int | None = None
    prefill_chunk: int = PREFILL_CHUNK
    top_logprobs: int | None = None  # n: every TextStep gets `scores` with n alternatives
    speculation: Speculation | None = None  # one prompt at a time (rgemma.text.speculative)

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative integer, got {self.max_new_tokens!r}")
        if self.top_logprobs is not None:
            check_top_n(self.top_logprobs)


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
    scores: list[TokenLogprobs] = field(default_factory=list)  # with config.top_logprobs


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
            if step.scores is not None:
                c.scores.append(step.scores)
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
    if logits is None or state is None or any(prompts):
        for i, p in enumerate(prompts):
            if not p:
                raise ValueError(f"empty prompt (row {i}): nothing to continue from")
        ids, mask = left_pad(prompts, tokenizer.pad_id or 0, model.device)
        logits, state = prefill(model, ids, mask, state, config.prefill_chunk)
    if config.max_new_tokens == 0:
        return
    primes = [p or q for p, q in zip(prompts, primes or [[]] * len(prompts))]
    decoder = _decoder(model, state, config, primes)
    decoder.adopt(_rows(tokenizer, prompts, primes, config, model.device), logits)
    while decoder.live:
        for wave in waves(decoder.step()):
            steps: list[TextStep | None] = [None] * len(prompts)
            for row, step in wave:
                steps[row.tag] = step
            yield steps


def _decoder(model, state: State, config: GenerationConfig, contexts: list[list[int]]):
    """The core's Decoder (the rows stay where the caller's state has them), or with
    `config.speculation` a SpeculativeDecoder, which reads the context its drafts come from."""
    if config.speculation is None:
        return Decoder(model, Slots(state), pack=False)
    if len(contexts) != 1:
        raise ValueError(f"speculative decoding runs one prompt at a time, got {len(contexts)}")
    return SpeculativeDecoder(model, Slots(state), config.speculation, contexts[0])


def _rows(tokenizer: Tokenizer, prompts, primes, config: GenerationConfig, device) -> list[Row]:
    """One Row per prompt; with a seed, row i samples with its own generator seeded seed + i."""
    eos = frozenset(tokenizer.stop_ids if config.eos_ids is None else config.eos_ids)
    sampled = config.seed is not None and not config.sampling.greedy
    return [
        Row(
            config.sampling,
            config.max_new_tokens,
            eos,
            row_generator(config.seed + i, device) if sampled else None,
            TextStream(tokenizer, config.stop, prime),
            history=list(prompt),
            tag=i,
            top_logprobs=config.top_logprobs,
        )
        for i, (prompt, prime) in enumerate(zip(prompts, primes))
    ]


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
