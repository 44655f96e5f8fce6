"""`generate`, the transformers-shaped wrapper of the generation core (core.py): prompt plus new
tokens as a (B, T+N) tensor, or a transformers-shaped output with `return_dict_in_generate`.

Settings merge as in transformers (rgemma.text.generation_config.resolve). Greedy and sampling
run the core's Decoder: rows finish independently (EOS, a stop string, the budget); a finished
row's columns hold the pad id, and the core feeds it as padding, which the model ignores. Beam
search (num_beams > 1) is rgemma.text.beams, on the State the core prefilled.
"""

from __future__ import annotations

from typing import Any

import torch

from rgemma.models.outputs import GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput
from rgemma.models.state import State
from rgemma.text.beams import BeamSettings, beam_search
from rgemma.text.core import PREFILL_CHUNK, Decoder, Row, Slots, prefill, waves
from rgemma.text.generation_config import resolve
from rgemma.text.output import TextStream
from rgemma.text.processors import Rules
from rgemma.text.sampling import SamplingParams
from rgemma.text.speculative import Speculation, SpeculativeDecoder


def generate(
    model,
    input_ids: torch.Tensor | None = None,
    generation_config=None,
    *,
    attention_mask: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    tokenizer=None,
    streamer=None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    cache: State | None = None,
    past_key_values: State | None = None,
    prefill_chunk_size: int = PREFILL_CHUNK,
    assistant_model=None,
    prompt_lookup_num_tokens: int | None = None,
    num_assistant_tokens: int | None = None,
    **kwargs,
):
    """transformers-style generation: returns prompt plus new tokens, (B * R, T + N), R being
    num_return_sequences; with return_dict_in_generate, an output with `sequences`, `scores`,
    `logits` (and for beams `sequences_scores`, `beam_indices`).

    Greedy unless `do_sample` (then temperature, top_k (50; 0 disables), top_p, min_p); beam
    search with `num_beams` > 1. `attention_mask` marks left padding. `stop_strings` need
    `tokenizer` (rgemma's or a transformers tokenizer). `streamer` follows transformers'
    protocol (put(prompt), put(token) per step, end()).

    Speculative decoding (rgemma.text.speculative), one sequence at a time: `assistant_model`
    drafts (`num_assistant_tokens` per round, else adaptive), or `prompt_lookup_num_tokens`
    tokens come from the prompt. The output is what decoding without it gives."""
    g = resolve(getattr(model, "generation_config", None), generation_config, kwargs)
    ids, mask, embeds = _inputs(model, input_ids, attention_mask, inputs_embeds)
    B, T = (ids if ids is not None else embeds).shape[:2]
    _check_modes(g, tokenizer, streamer)
    speculation = _speculation(assistant_model, prompt_lookup_num_tokens, num_assistant_tokens, g, B)
    new = _budget(T, g["max_new_tokens"], g["max_length"])
    prompts = [_real_ids(ids, mask, i) for i in range(B)]
    eos = _eos(model, g)
    pad = g["pad_token_id"] if g["pad_token_id"] is not None else (model.config.pad_token_id or 0)
    rules = Rules(
        max(g["min_new_tokens"], g["min_length"] - T),
        g["no_repeat_ngram_size"],
        tuple(tuple(w) for w in g["bad_words_ids"] or () if list(w) not in [[e] for e in eos]),
    )
    if streamer is not None and ids is not None:
        streamer.put(ids.cpu())
    logits, state = _prefill(
        model, ids, mask, embeds, cache if cache is not None else past_key_values, prefill_chunk_size
    )
    if g["num_beams"] > 1:
        return _beams(model, g, ids, logits, state, prompts, new, eos, pad, rules)
    if generator is None and seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(seed)
    rows = _rows(g, prompts, new, eos, rules, generator, tokenizer)
    if speculation is not None:
        decoder = SpeculativeDecoder(model, Slots(state), speculation, prompts[0])
        return _decode(model, g, ids, logits, state, rows, pad, streamer, decoder)
    return _decode(model, g, ids, logits, state, rows, pad, streamer)


def _inputs(model, input_ids, attention_mask, inputs_embeds):
    if input_ids is None and inputs_embeds is None:
        raise ValueError("generate() needs input_ids of shape (batch, seq_len), or inputs_embeds")
    if input_ids is not None and (not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2):
        raise ValueError("generate() needs input_ids of shape (batch, seq_len)")
    if input_ids is not None and input_ids.shape[1] == 0:
        raise ValueError("empty prompt: input_ids has no tokens")
    if inputs_embeds is not None and input_ids is not None and input_ids.shape != inputs_embeds.shape[:2]:
        raise ValueError("input_ids and inputs_embeds must cover the same (batch, seq_len)")
    move = lambda t: t.to(model.device) if t is not None else None  # noqa: E731
    return move(input_ids), move(attention_mask), move(inputs_embeds)


def _check_modes(g: dict[str, Any], tokenizer, streamer) -> None:
    """Refuse combinations transformers refuses or rgemma does not implement, by name."""
    nb, R = g["num_beams"], g["num_return_sequences"]
    if not isinstance(nb, int) or nb < 1 or not isinstance(R, int) or R < 1:
        raise ValueError(f"num_beams and num_return_sequences must be integers >= 1, got {nb} and {R}")
    if nb == 1 and R > 1 and not g["do_sample"]:
        raise ValueError("num_return_sequences > 1 needs do_sample=True or num_beams >= num_return_sequences")
    if nb > 1 and g["do_sample"]:
        raise ValueError("do_sample=True with num_beams > 1 (beam sampling) is not supported by rgemma")
    if nb > 1 and (g["stop_strings"] or streamer is not None):
        raise ValueError("stop_strings and streamer are not supported with num_beams > 1")
    if g["stop_strings"] and tokenizer is None:
        raise ValueError("stop_strings need the tokenizer: generate(..., stop_strings=..., tokenizer=tok)")


def _speculation(assistant, lookup, assistant_tokens, g: dict[str, Any], batch: int) -> Speculation | None:
    """The speculation asked for, after refusing what it cannot do (as transformers: batch 1)."""
    if assistant is None and lookup is None:
        return None
    if assistant is not None and lookup is not None:
        raise ValueError("pass assistant_model or prompt_lookup_num_tokens, not both")
    if batch * g["num_return_sequences"] != 1 or g["num_beams"] > 1:
        raise ValueError(
            "speculative decoding runs one sequence: batch 1, num_beams=1, num_return_sequences=1"
        )
    if g["return_dict_in_generate"] and (g["output_scores"] or g["output_logits"]):
        raise ValueError("output_scores and output_logits are not supported with speculative decoding")
    if lookup is not None:
        return Speculation(prompt_lookup=True, draft_tokens=lookup)
    return Speculation(draft_model=assistant, draft_tokens=assistant_tokens)


def _eos(model, g: dict[str, Any]) -> list[int]:
    eos = g["eos_token_id"]
    if eos is None:
        return model.config.eos_token_ids
    return [eos] if isinstance(eos, int) else [int(e) for e in eos]


def _real_ids(ids: torch.Tensor | None, mask: torch.Tensor | None, row: int) -> list[int]:
    """Row `row`'s prompt ids without padding (the penalty and the processors read them)."""
    if ids is None:
        return []
    return (ids[row] if mask is None else ids[row][mask[row].bool()]).tolist()


def _prefill(model, ids, mask, embeds, cache, chunk):
    if embeds is None:
        return prefill(model, ids, mask, cache, chunk)
    return prefill(model, None, mask, cache, chunk, inputs_embeds=embeds)


def _sampling(g: dict[str, Any]) -> SamplingParams:
    sample = bool(g["do_sample"])
    return SamplingParams(
        temperature=g["temperature"] if sample else 0.0,
        top_k=g["top_k"] if sample else 0,
        top_p=g["top_p"] if sample else 1.0,
        min_p=g["min_p"] if sample else 0.0,
        repetition_penalty=g["repetition_penalty"],
    )


def _rows(g, prompts, new, eos, rules, generator, tokenizer) -> list[Row]:
    """num_return_sequences rows per prompt, each row after its prompt's copies (as transformers)."""
    params, R = _sampling(g), g["num_return_sequences"]
    stops = [g["stop_strings"]] if isinstance(g["stop_strings"], str) else list(g["stop_strings"] or ())
    rows = []
    for i in range(len(prompts) * R):
        prompt = prompts[i // R]
        text = TextStream(_as_rgemma_tokenizer(tokenizer), stops, prompt) if stops else None
        history = list(prompt) if params.repetition_penalty != 1 or rules.needs_history else []
        rows.append(Row(params, new, frozenset(eos), generator, text, history=history, rules=rules, tag=i))
    return rows


def _decode(model, g, ids, logits, state, rows, pad, streamer, decoder=None):
    """Greedy or sampling through the core's Decoder (or a SpeculativeDecoder); one output
    column per token of each row."""
    R = g["num_return_sequences"]
    if R > 1:
        expand = torch.arange(logits.shape[0], device=logits.device).repeat_interleave(R)
        state, logits, ids = (
            state.select(expand),
            logits[expand],
            ids[expand.to(ids.device)] if ids is not None else None,
        )
    record = g["return_dict_in_generate"] and (g["output_scores"] or g["output_logits"])
    decoder = decoder or Decoder(model, Slots(state), pack=False, record=record)  # keeps a cache's rows
    decoder.adopt(rows, logits)
    columns, raw, scores = [], [], []
    while decoder.live:
        for wave in waves(decoder.step()):
            column = torch.full((len(rows),), pad, dtype=torch.long)
            for row, step in wave:
                column[row.tag] = step.token_id
            columns.append(column[:, None])
            if streamer is not None:
                streamer.put(column)
        if record:
            raw.append(_per_tag(decoder.recorded[0], decoder.recorded[1], len(rows)))
            scores.append(_per_tag(decoder.recorded[0], decoder.recorded[2], len(rows)))
    if streamer is not None:
        streamer.end()
    device = logits.device
    sequences = torch.cat(([ids] if ids is not None else []) + [c.to(device) for c in columns], dim=1)
    if not g["return_dict_in_generate"]:
        return sequences
    return GenerateDecoderOnlyOutput(
        sequences=sequences,
        scores=tuple(scores) if g["output_scores"] else None,
        logits=tuple(raw) if g["output_logits"] else None,
    )


def _per_tag(rows: list[Row], values: torch.Tensor, n: int) -> torch.Tensor:
    """A step's (live rows, V) values in output-row order; rows already finished get -inf."""
    out = values.new_full((n, values.shape[-1]), float("-inf"))
    out[[row.tag for row in rows]] = values
    return out


def _beams(model, g, ids, logits, state, prompts, new, eos, pad, rules):
    settings = BeamSettings(
        num_beams=g["num_beams"],
        max_new_tokens=new,
        eos_ids=eos,
        length_penalty=float(g["length_penalty"]),
        early_stopping=g["early_stopping"],
        num_return_sequences=g["num_return_sequences"],
        rules=rules,
        repetition_penalty=g["repetition_penalty"],
        pad_id=pad,
        record=bool(g["return_dict_in_generate"] and (g["output_scores"] or g["output_logits"])),
    )
    out = beam_search(model, logits, state, prompts, settings)
    R = settings.num_return_sequences
    prompt = ids.repeat_interleave(R, dim=0) if ids is not None else None
    sequences = torch.cat(([prompt] if prompt is not None else []) + [out.tokens.to(logits.device)], dim=1)
    if not g["return_dict_in_generate"]:
        return sequences
    return GenerateBeamDecoderOnlyOutput(
        sequences=sequences,
        sequences_scores=out.scores if g["output_scores"] else None,
        scores=tuple(out.step_scores) if g["output_scores"] else None,
        logits=tuple(out.step_logits) if g["output_logits"] else None,
        beam_indices=out.beam_indices,
    )


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


class _DecodingTokenizer:
    """What TextStream needs (decode, special ids, a streaming detokenizer) from a transformers
    tokenizer, so stop strings work with the tokenizer a transformers user passes."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.special = set(getattr(tokenizer, "all_special_ids", ()))

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def is_special(self, token_id: int) -> bool:
        return token_id in self.special

    def is_byte_token(self, token_id: int) -> bool:
        return False  # a partial character decodes to U+FFFD, which the detokenizer holds

    def detokenizer(self):
        from rgemma.text.tokenizer import StreamingDetokenizer

        return StreamingDetokenizer(self)


def _as_rgemma_tokenizer(tokenizer):
    return tokenizer if hasattr(tokenizer, "detokenizer") else _DecodingTokenizer(tokenizer)
