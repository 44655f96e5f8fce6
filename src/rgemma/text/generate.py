"""`generate`, the transformers-shaped wrapper of the generation core (core.py): prompt plus
new tokens as a (B, T+N) tensor. Rows finish independently (EOS or budget); a finished row's
columns hold the pad id, and the core feeds it as padding, which the model ignores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rgemma.models.state import State
from rgemma.text.core import PREFILL_CHUNK, Decoder, Row, Slots, prefill
from rgemma.text.sampling import SamplingParams


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
    eos_ids = frozenset(eos)
    rows = [
        Row(params, new, eos_ids, generator, history=_seen(input_ids, attention_mask, i, params), tag=i)
        for i in range(input_ids.shape[0])
    ]
    decoder = Decoder(model, Slots(state), pack=False)  # a caller's `cache` keeps its row order
    decoder.adopt(rows, logits)
    out = [input_ids]
    while decoder.live:
        column = torch.full((len(rows),), pad, dtype=torch.long)
        for row, step in decoder.step():
            column[row.tag] = step.token_id
        out.append(column[:, None].to(input_ids.device))
        if streamer is not None:
            streamer.put(column)
    if streamer is not None:
        streamer.end()
    return torch.cat(out, dim=1)


def _seen(input_ids: torch.Tensor, mask: torch.Tensor | None, row: int, params: SamplingParams) -> list[int]:
    """Row `row`'s prompt ids without padding, for the repetition penalty (only read then)."""
    if params.repetition_penalty == 1:
        return []
    ids = input_ids[row] if mask is None else input_ids[row][mask[row].bool()]
    return ids.tolist()


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
