"""The one generation core. Every decode loop in rgemma is a `Decoder` stepping `Row`s:
`model.generate`, the text engine (stream, complete, the chat), the CLI and the server.

    logits, state = prefill(model, prompt)      chunked: the state is fixed-size, nothing is cut
    decoder.join(row, logits, state)            or adopt(): a batch prefilled in its slots
    decoder.step() -> [(row, TextStep), ...]    one token for every live row

A `Row` is one sequence: its sampler settings and its own torch.Generator, its stop conditions
(EOS ids, stop strings through a TextStream, a token budget) and what it has produced so far.
Its recurrent state is one row of `Slots`, a State of fixed capacity allocated once: joining
copies one prefilled row into a free slot; leaving frees the slot (when packing, the last row
moves down into it: one row copied, never the whole state). A step decodes a view of the first
n slots, n rounded up to a bucket; slots of the bucket that hold no decoding row are fed as
padding, which leaves their state untouched.

Sampling runs once per step for the whole batch: rows with equal SamplingParams share one
`sample` call, each drawing its random number from its own generator, so a seed reproduces a
row's tokens however the batch is made up. Finish reasons: "stop" (an EOS id or a stop
string) and "length" (the token budget). A row with `top_logprobs` set also gets, per token,
the model's own logprobs with the top alternatives (`TextStep.scores`, text/logprobs.py).

A Decoder made with `isolate` (the server) contains a failure to its row: a row whose
sampling or detokenizing raises ends with finish reason "error" and the exception in
`row.error`, and every other row gets exactly the token it would have got without it. A
failure of the batched model step itself belongs to no one row and is raised.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from rgemma.models.state import State
from rgemma.text.logprobs import token_logprobs
from rgemma.text.output import TextStep, TextStream
from rgemma.text.processors import Rules, apply_rules, sampling_scores
from rgemma.text.sampling import PAD_ID, SamplingParams, distribution, sample, uniforms

PREFILL_CHUNK = 2048
STOP, LENGTH, ERROR = "stop", "length", "error"  # the finish reasons


@torch.no_grad()
def prefill(
    model,
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None = None,
    state: State | None = None,
    chunk_size: int = PREFILL_CHUNK,
    inputs_embeds: torch.Tensor | None = None,
) -> tuple[torch.Tensor, State]:
    """Run a (left-padded) prompt through the model in chunks; return the last logits (B, V)
    and the state after the prompt. `state` continues an earlier prefix (updated in place).
    `inputs_embeds` (B, T, D) replace input_ids (then None)."""
    if chunk_size <= 0:
        raise ValueError(f"prefill chunk size must be positive, got {chunk_size}")
    prompt = input_ids if inputs_embeds is None else inputs_embeds
    if prompt.ndim < 2 or prompt.shape[1] == 0:
        raise ValueError(f"empty prompt: input_ids has shape {tuple(prompt.shape)}")
    if (
        attention_mask is not None
        and tuple(attention_mask.shape) == tuple(prompt.shape[:2])
        and not attention_mask.bool().any(1).all()
    ):
        row = int((~attention_mask.bool().any(1)).nonzero()[0])
        raise ValueError(f"empty prompt: row {row} is all padding")
    T = prompt.shape[1]
    for s in range(0, T, chunk_size):
        mask = attention_mask[:, s : s + chunk_size] if attention_mask is not None else None
        chunk = (
            dict(input_ids=input_ids[:, s : s + chunk_size])
            if inputs_embeds is None
            else dict(inputs_embeds=inputs_embeds[:, s : s + chunk_size])
        )
        if s + chunk_size < T:  # only the last chunk needs logits: skip the LM head
            state = model.model(**chunk, attention_mask=mask, cache=state, use_cache=True).cache
            continue
        out = model(**chunk, attention_mask=mask, cache=state, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1], out.cache


def row_generator(seed: int | None, device) -> torch.Generator:
    """A row's own random source: seeded, or from fresh entropy when `seed` is None."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed % 2**64)
    return generator


# --------------------------------------------------------------------------- rows
@dataclass
class _Pending:
    """A row that has not sampled its first token: the logits after its prompt, and where its
    state is (row `index` of `source`; None: already in its slot)."""

    logits: torch.Tensor  # (V,)
    source: State | None
    index: int = 0


@dataclass(eq=False)
class Row:
    """One sequence: how it samples, when it stops, what it has produced. `tag` is the
    caller's (a batch index, a request's choice); `slot` and `pending` are the Decoder's."""

    sampling: SamplingParams
    max_new_tokens: int
    eos_ids: frozenset[int] = frozenset()
    generator: torch.Generator | None = None  # None: torch's global RNG (greedy draws nothing)
    text: TextStream | None = None  # None: tokens only, no text and no stop strings
    history: list[int] = field(default_factory=list)  # ids seen, read by the penalty and rules
    rules: Rules = Rules()  # logits processors: min new tokens, no-repeat n-grams, bad words
    tag: Any = None
    generated: int = 0
    last: int = -1  # the token to feed next
    finish_reason: str | None = None
    error: Exception | None = None  # why the row ended with ERROR (an isolating Decoder)
    slot: int = -1
    pending: _Pending | None = None
    top_logprobs: int | None = None  # None: no scores; n: each TextStep's `scores`, n alternatives
    tokens: list[int] | None = None  # a list: every sampled id is appended (the server's cache keys)

    def advance(self, token: int, logprob: float) -> TextStep:
        """Take a sampled token: its printable text (stop strings held back) and whether the
        row ends here (an EOS id, a stop string, the budget). An EOS token shows no text."""
        self.generated += 1
        self.last = token
        if self.tokens is not None:
            self.tokens.append(token)
        if self.keeps_history:
            self.history.append(token)
        is_eos = token in self.eos_ids
        text, hit = ("", False) if is_eos or self.text is None else self.text.push(token)
        reason = STOP if is_eos or hit else LENGTH if self.generated >= self.max_new_tokens else None
        if reason is not None and self.text is not None:
            text += self.text.finish()
        self.finish_reason = reason
        return TextStep(token, text, logprob, reason)

    @property
    def keeps_history(self) -> bool:
        return self.sampling.repetition_penalty != 1 or self.rules.needs_history


def sample_rows(
    logits: torch.Tensor, rows: Sequence[Row], isolate: bool = False
) -> tuple[list[int], list[float]]:
    """A token and its logprob for each row (its logits in logits[i], (B, V)), with its own
    params and generator: one batched `sample` call per distinct SamplingParams, never one
    per row, and a row's random draw comes from its generator alone. Each row's Rules (the
    logits processors) forbid tokens first.

    With `isolate`, a row whose sampling raises gets its `error` set (token -1) and the others
    are unaffected: each row draws its uniform once, before anything can fail, and a group
    that raises is sampled again row by row with the same uniforms."""
    logits = apply_row_rules(logits, rows)
    groups: dict[SamplingParams, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row.sampling, []).append(i)
    tokens = torch.full((len(rows),), -1, dtype=torch.long, device=logits.device)
    logprobs = torch.full((len(rows),), math.nan, dtype=torch.float32, device=logits.device)
    for index in groups.values():
        group = [rows[i] for i in index]
        u = _draw(group, logits.device, isolate)
        try:
            part = logits if len(groups) == 1 else logits[index]
            tokens[index], logprobs[index] = _sample_group(part, group, u)
        except Exception:
            if not isolate:
                raise
            for k, i in enumerate(index):
                tokens[i], logprobs[i] = _sample_alone(logits[i : i + 1], rows[i], u, k)
    return tokens.tolist(), logprobs.tolist()


def apply_row_rules(logits: torch.Tensor, rows: Sequence[Row]) -> torch.Tensor:
    """Each row's Rules on its logits (B, V); the tensor itself when no row has any."""
    if not any(row.rules.any for row in rows):
        return logits
    out = logits.clone()
    for i, row in enumerate(rows):
        if row.rules.any:
            out[i : i + 1] = apply_rules(
                logits[i : i + 1], row.rules, [row.history], [row.generated], sorted(row.eos_ids)
            )
    return out


def row_distribution(logits: torch.Tensor, row: Row) -> tuple[torch.Tensor, torch.Tensor]:
    """What `sample_rows` would draw this row's next token from, given its history now: the
    probabilities and the reported logprobs, each (V,), from its logits (V,)."""
    logits = apply_row_rules(logits[None], [row])
    prev = _history([row], logits.device) if row.sampling.repetition_penalty != 1 else None
    probs, logprobs = distribution(logits, row.sampling, prev)
    return probs[0], logprobs[0]


def score_rows(logits: torch.Tensor, rows: Sequence[Row]) -> torch.Tensor:
    """The processed scores of a step, (B, V), as transformers' `output_scores` reports them:
    the rows' rules, penalty, and (sampling) temperature and truncation applied."""
    logits = apply_row_rules(logits, rows).float()
    out = torch.empty_like(logits)
    for i, row in enumerate(rows):
        prev = _history([row], logits.device) if row.sampling.repetition_penalty != 1 else None
        out[i : i + 1] = sampling_scores(logits[i : i + 1], row.sampling, prev)
    return out


def _draw(rows: Sequence[Row], device, isolate: bool) -> torch.Tensor | None:
    """Each row's uniform for this step (None: greedy draws nothing). With `isolate` a row
    whose generator fails gets its `error` and a placeholder."""
    if rows[0].sampling.greedy:
        return None
    if not isolate:
        return uniforms([r.generator for r in rows], len(rows), device)
    u = torch.zeros(len(rows), dtype=torch.float64, device=device)
    for k, row in enumerate(rows):
        try:
            u[k] = uniforms([row.generator], 1, device)[0]
        except Exception as err:
            row.error = err
    return u


def _sample_group(
    logits: torch.Tensor, rows: Sequence[Row], u: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    params = rows[0].sampling
    prev = _history(rows, logits.device) if params.repetition_penalty != 1 else None
    return sample(logits, params, None, prev, u=u)


def _sample_alone(logits: torch.Tensor, row: Row, u: torch.Tensor | None, k: int) -> tuple[int, float]:
    if row.error is None:
        try:
            token, logprob = _sample_group(logits, [row], None if u is None else u[k : k + 1])
            return int(token), float(logprob)
        except Exception as err:
            row.error = err
    return -1, math.nan


def _history(rows: Sequence[Row], device) -> torch.Tensor:
    """The rows' seen ids as (B, N), padded with PAD_ID."""
    out = torch.full((len(rows), max(len(r.history) for r in rows)), PAD_ID, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row.history)] = torch.tensor(row.history, dtype=torch.long)
    return out.to(device)


# --------------------------------------------------------------------------- slots
def bucket_sizes(capacity: int) -> list[int]:
    """The batch sizes a step may run at: powers of two below `capacity`, and `capacity`."""
    return [1 << i for i in range(capacity.bit_length()) if 1 << i < capacity] + [capacity]


class Slots:
    """A State of fixed capacity whose rows are slots that sequences join and leave.

    The tensors are allocated once (or adopted from a prefilled batch) and never replaced:
    `load` copies one row in, `move` one row across, and a step runs on `view(n)`, the first n
    slots, which is the same cached State of views for each bucket size. So a compiled decode
    step (static shapes: torch.compile with dynamic=False) compiles at most
    len(bucket_sizes(capacity)) = ceil(log2(capacity)) + 1 times, whatever joins and leaves."""

    def __init__(self, state: State):
        self.state = state
        self.capacity = state.batch_size
        self.buckets = bucket_sizes(self.capacity)
        self._views: dict[int, State] = {self.capacity: state}

    @classmethod
    def allocate(cls, config, capacity: int, dtype: torch.dtype, device) -> Slots:
        return cls(State.zeros(config, capacity, dtype, device))

    def bucket(self, n: int) -> int:
        """The smallest bucket that holds n slots."""
        return next(b for b in self.buckets if b >= n)

    def view(self, n: int) -> State:
        """The first n slots (a bucket size) as a State of views on the slot tensors."""
        if n not in self._views:
            self._views[n] = self.state.map(lambda t: t[:n])
        return self._views[n]

    def load(self, slot: int, source: State, index: int = 0) -> None:
        """Copy row `index` of `source` into `slot`."""
        rows = source.tensors()
        for name, t in self.state.tensors().items():
            t[slot].copy_(rows[name][index])

    def move(self, src: int, dst: int) -> None:
        self.load(dst, self.state, src)

    def row_bytes(self) -> int:
        return self.state.nbytes() // self.capacity


# --------------------------------------------------------------------------- the decoder
class Decoder:
    """Rows decoding together on `Slots`, one token per `step`.

    With `pack` (the server), live rows always fill the first slots: a row that leaves is
    replaced by the last one, so the decoded view is as small as the live rows allow. Without
    it (a batch adopted in place, perhaps a caller's State) rows never move, and finished
    rows are fed as padding until the rows behind them are done.

    `on_finish(row, logits)`, when set, sees each decoded row that finishes, before it leaves:
    its slot still holds its state (the prompt and every sampled token but the last) and
    `logits` (V,) are those its last token was sampled from (the server's state cache)."""

    def __init__(self, model, slots: Slots, pack: bool = True, record: bool = False, isolate: bool = False):
        self.model, self.slots, self.pack, self.isolate = model, slots, pack, isolate
        self.on_finish = None
        self.rows: list[Row | None] = [None] * slots.capacity
        self.decoded = 0  # rows the last step fed through the model (first tokens excluded)
        self.record = record  # keep each step's raw logits and processed scores (output_scores)
        self.recorded: tuple[list[Row], torch.Tensor, torch.Tensor] | None = None

    @property
    def live(self) -> list[Row]:
        """Rows still generating, in slot order."""
        return [r for r in self.rows if r is not None]

    def adopt(self, rows: Sequence[Row], logits: torch.Tensor) -> None:
        """Rows whose prefilled state already fills the slots, row i in slot i; `logits`
        (B, V) are their next-token logits. Nothing is copied."""
        if len(rows) != self.slots.capacity or self.live:
            raise ValueError(f"adopt() needs {self.slots.capacity} rows for empty slots, got {len(rows)}")
        for i, (row, row_logits) in enumerate(zip(rows, logits)):
            self._place(row, i, _Pending(row_logits, None))

    def join(self, row: Row, logits: torch.Tensor, source: State, index: int = 0) -> None:
        """Add a row prefilled on its own: `logits` (V,) follow its prompt and its state is row
        `index` of `source`. The state is copied into the row's slot only if the row goes on
        after its first token (a one-token request never touches the slots)."""
        if None not in self.rows:
            raise ValueError(f"all {self.slots.capacity} slots are taken")
        self._place(row, self.rows.index(None), _Pending(logits, source, index))

    def _place(self, row: Row, slot: int, pending: _Pending) -> None:
        row.slot, row.pending, self.rows[slot] = slot, pending, row

    def leave(self, row: Row) -> None:
        """Take a row out (finished or cancelled); its slot is free at once."""
        if row.slot < 0 or self.rows[row.slot] is not row:
            return
        hole, row.slot = row.slot, -1
        self.rows[hole] = None
        if self.pack:
            self._fill(hole)

    def _fill(self, hole: int) -> None:
        """Move the last live row down into `hole`, so the live rows stay at the front."""
        top = max((i for i, r in enumerate(self.rows) if r is not None), default=-1)
        if top < hole:
            return
        row = self.rows[top]
        if row.pending is None or row.pending.source is None:  # its state is in the slot
            self.slots.move(top, hole)
        self.rows[hole], self.rows[top], row.slot = row, None, hole

    def clear(self) -> None:
        """Every row out at once (shutdown, a failed step); nothing is copied."""
        for row in self.live:
            row.slot = -1
        self.rows = [None] * self.slots.capacity

    @torch.no_grad()
    def step(self) -> list[tuple[Row, TextStep]]:
        """One token for every live row: rows that have fed tokens are decoded in one batched
        step, rows that just joined sample from their prefill logits. Returns (row, TextStep)
        per row; rows that finished have left when it returns."""
        decoding = [r for r in self.rows if r is not None and r.pending is None]
        joining = [r for r in self.rows if r is not None and r.pending is not None]
        if not decoding and not joining:
            return []
        parts = [self._decode(decoding)] if decoding else []
        if joining:
            parts.append(torch.stack([r.pending.logits for r in joining]))
        rows = decoding + joining
        logits = torch.cat(parts) if len(parts) > 1 else parts[0]
        if self.record:  # before sampling: the rows' histories are those the step sees
            self.recorded = (rows, logits, score_rows(logits, rows))
        tokens, logprobs = sample_rows(logits, rows, self.isolate)
        events = [(row, self._advance(row, t, lp)) for row, t, lp in zip(rows, tokens, logprobs)]
        _attach_scores(logits, [(r, e) for r, e in events if e.finish_reason != ERROR])
        for row in joining:
            self._settle(row)
        if self.on_finish is not None:
            for row, row_logits in zip(decoding, logits):
                if row.finish_reason not in (None, ERROR):  # a failed row's state is not kept
                    self.on_finish(row, row_logits)
        for row, event in events:
            if event.finish_reason is not None:
                self.leave(row)
        self.decoded = len(decoding)
        return events

    def _advance(self, row: Row, token: int, logprob: float) -> TextStep:
        """`row.advance`; when isolating, a row that failed (here or in sampling) ends with
        ERROR instead of raising."""
        if row.error is None:
            try:
                return row.advance(token, logprob)
            except Exception as err:
                if not self.isolate:
                    raise
                row.error = err
        row.finish_reason = ERROR
        return TextStep(token, "", logprob, ERROR)

    def _decode(self, rows: list[Row]) -> torch.Tensor:
        """Feed each row's last token through one decode step on the smallest bucket of slots
        that holds them; the other slots of the bucket are padding. Logits (len(rows), V)."""
        n = self.slots.bucket(rows[-1].slot + 1)
        ids, active = [0] * n, [False] * n
        for row in rows:
            ids[row.slot], active[row.slot] = row.last, True
        device = self.slots.state.device
        ids_t, active_t = torch.tensor(ids, device=device), torch.tensor(active, device=device)
        logits = self.model.decode_step(ids_t, active_t, self.slots.view(n))  # slots updated in place
        order = [row.slot for row in rows]
        return logits if order == list(range(n)) else logits[order]

    def _settle(self, row: Row) -> None:
        """After a row's first token: load its state into its slot if it goes on."""
        pending, row.pending = row.pending, None
        if row.finish_reason is None and pending.source is not None:
            self.slots.load(row.slot, pending.source, pending.index)


def waves(events: list[tuple[Row, TextStep]]) -> list[list[tuple[Row, TextStep]]]:
    """A step's events split into token columns: each row at most once per column, in order
    (a speculative step gives its row several tokens)."""
    out: list[list[tuple[Row, TextStep]]] = []
    depth: dict[int, int] = {}
    for row, step in events:
        d = depth[id(row)] = depth.get(id(row), -1) + 1
        if d == len(out):
            out.append([])
        out[d].append((row, step))
    return out


def _attach_scores(logits: torch.Tensor, events: list[tuple[Row, TextStep]]) -> None:
    """Fill `TextStep.scores` for the rows that asked (Row.top_logprobs), from the logits they
    sampled from (rgemma.text.logprobs: the model's distribution, before the sampler). Rows
    that did not ask cost nothing."""
    wanted = [i for i, (row, _) in enumerate(events) if row.top_logprobs is not None]
    if not wanted:
        return
    top_n = max(events[i][0].top_logprobs for i in wanted)
    index = torch.tensor(wanted, device=logits.device)
    chosen = torch.tensor([events[i][1].token_id for i in wanted], device=logits.device)
    for i, scores in zip(wanted, token_logprobs(logits[index], chosen, top_n)):
        row, step = events[i]
        step.scores = dataclasses.replace(scores, top=scores.top[: row.top_logprobs])
