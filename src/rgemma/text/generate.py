"""Token-level generation: chunked prefill, then an iterator of decode steps.

`prefill` reads a prompt of any length in chunks of bounded size (the state is fixed-size, so
nothing is ever cut). `decode` yields one `Step` per new token for every row; rows finish
independently (EOS or budget) and finished rows are fed as padding, which the model ignores.
`generate` is the transformers-shaped wrapper: prompt plus new tokens, as a (B, T+N) tensor.
The model knows nothing of text; the text layer builds on these steps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from rgemma.models.state import State
from rgemma.text.sampling import PAD_ID, SamplingParams, sample

PREFILL_CHUNK = 2048


@dataclass
class Step:
    """One decode step for a batch. Rows already finished before this step carry `pad`."""

    token_ids: torch.Tensor  # (B,) long
    logprobs: torch.Tensor  # (B,) float
    active: torch.Tensor  # (B,) bool: the row produced a real token at this step
    finish_reason: list[str | None]  # per row: "stop" (EOS), "length", or None (continuing)


@torch.no_grad()
def prefill(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    state: State | None = None,
    chunk_size: int = PREFILL_CHUNK,
) -> tuple[torch.Tensor, State]:
    """Run a (left-padded) prompt through the model in chunks; return the last logits (B, V)
    and the state after the prompt. `state` continues an earlier prefix (updated in place)."""
    if chunk_size <= 0:
        raise ValueError(f"prefill chunk size must be positive, got {chunk_size}")
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"empty prompt: input_ids has shape {tuple(input_ids.shape)}")
    if (
        attention_mask is not None
        and tuple(attention_mask.shape) == tuple(input_ids.shape)
        and not attention_mask.bool().any(1).all()
    ):
        row = int((~attention_mask.bool().any(1)).nonzero()[0])
        raise ValueError(f"empty prompt: row {row} is all padding")
    T = input_ids.shape[1]
    for s in range(0, T, chunk_size):
        mask = attention_mask[:, s : s + chunk_size] if attention_mask is not None else None
        if s + chunk_size < T:  # only the last chunk needs logits: skip the LM head
            state = model.model(
                input_ids[:, s : s + chunk_size], attention_mask=mask, cache=state, use_cache=True
            ).cache
            continue
        out = model(input_ids[:, s:], attention_mask=mask, cache=state, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1], out.cache


@torch.no_grad()
def decode(
    model,
    logits: torch.Tensor,
    state: State,
    params: SamplingParams,
    max_new_tokens: int,
    eos_ids: Sequence[int] = (),
    pad_id: int = 0,
    generator: torch.Generator | None = None,
    prev_ids: torch.Tensor | None = None,
    stop_rows=None,
) -> Iterator[Step]:
    """Sample from `logits`, feed the token back, repeat. `prev_ids` (B, N) feeds the
    repetition penalty (pads as -1). `stop_rows(tokens, active, is_eos)`, if given, returns
    the rows that must stop after this token (a stop string, say). The state is advanced in
    place; the last sampled token of a row is never fed."""
    B = logits.shape[0]
    device = logits.device
    eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long, device=device)
    active = torch.ones(B, dtype=torch.bool, device=device)
    penalise = params.repetition_penalty != 1  # only then is the history needed
    history = prev_ids if prev_ids is not None else torch.empty(B, 0, dtype=torch.long, device=device)
    for i in range(max_new_tokens):
        tokens, logprobs = sample(logits, params, generator, history if penalise else None)
        tokens = torch.where(active, tokens, pad_id)
        is_eos = torch.isin(tokens, eos) & active
        if stop_rows is not None:
            is_eos = is_eos | (stop_rows(tokens, active, is_eos) & active)
        last = i == max_new_tokens - 1
        reasons = [
            ("stop" if e else "length" if last else None) if a else None
            for a, e in zip(active.tolist(), is_eos.tolist())
        ]
        yield Step(tokens, logprobs, active.clone(), reasons)
        if penalise:  # growing it every step would copy O(N^2) ids for nothing
            history = torch.cat([history, torch.where(active, tokens, PAD_ID)[:, None]], dim=1)
        active = active & ~is_eos
        if last or not active.any():
            return
        logits = model.decode_step(tokens, active, state)  # trusted inputs: no validation


def generate(
    model,
    input_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int | None = None,
    max_length: int | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 50,
    top_p: float = 1.0,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    streamer=None,
    cache: State | None = None,
    prefill_chunk_size: int = PREFILL_CHUNK,
    **unsupported,
) -> torch.Tensor:
    """transformers-style generation: returns prompt plus new tokens, (B, T + N).

    Greedy unless `do_sample`; then temperature, top_k (50 as in transformers; 0 disables),
    top_p and min_p apply. Rows stop independently at an EOS id (default: the config's) and
    are then filled with `pad_token_id`. `attention_mask` marks left padding. `streamer`
    follows transformers' protocol (put(prompt), put(token) per step, end())."""
    if unsupported:
        raise TypeError(f"generate() got unsupported arguments: {sorted(unsupported)}")
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
        raise ValueError("generate() needs input_ids of shape (batch, seq_len)")
    if input_ids.shape[1] == 0:
        raise ValueError("empty prompt: input_ids has no tokens")
    new = _budget(input_ids.shape[1], max_new_tokens, max_length)
    params = SamplingParams(
        temperature=temperature if do_sample else 0.0,
        top_k=top_k if do_sample else 0,
        top_p=top_p if do_sample else 1.0,
        min_p=min_p if do_sample else 0.0,
        repetition_penalty=repetition_penalty,
    )
    config = model.config
    eos = (
        config.eos_token_ids
        if eos_token_id is None
        else ([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
    )
    pad = pad_token_id if pad_token_id is not None else (config.pad_token_id or 0)
    if generator is None and seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(seed)
    input_ids = input_ids.to(model.device)
    if attention_mask is not None:
        attention_mask = attention_mask.to(model.device)
    if streamer is not None:
        streamer.put(input_ids.cpu())
    logits, state = prefill(model, input_ids, attention_mask, cache, prefill_chunk_size)
    prev = input_ids if attention_mask is None else input_ids.masked_fill(attention_mask == 0, PAD_ID)
    out = [input_ids]
    for step in decode(model, logits, state, params, new, eos, pad, generator, prev):
        out.append(step.token_ids[:, None])
        if streamer is not None:
            streamer.put(step.token_ids.cpu())
    if streamer is not None:
        streamer.end()
    return torch.cat(out, dim=1)


def _budget(prompt_len: int, max_new_tokens: int | None, max_length: int | None) -> int:
    if max_new_tokens is not None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        return max_new_tokens
    if max_length is not None:
        if max_length <= prompt_len:
            raise ValueError(
                f"max_length {max_length} leaves no room after a prompt of "
                f"{prompt_len} tokens; use max_new_tokens"
            )
        return max_length - prompt_len
    return 20
