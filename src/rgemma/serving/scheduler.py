"""Continuous batching for the server: a scheduler over the generation core (text/core.py).
One thread owns the model and steps every live sequence together.

Requests join between steps and leave the moment they finish. Each iteration:

    drop cancelled -> admit waiting requests (first come, first served, while their rows fit
    in max_batch) -> prefill at most `prefill_chunk` prompt tokens in all -> one core step for
    every row -> deliver the new text

Every row is one choice of one request, a `Row` of the core's `Decoder`, whose state lives in
preallocated slots (a State of max_batch rows made once). A prompt is prefilled on its own
one-row state, in chunks of `prefill_chunk` tokens (one chunk per iteration for a long prompt,
so the others keep decoding); its `n` choices join the decoder, and each one that goes on after
its first token has that row copied into a free slot. A finished or cancelled row frees its
slot, and the last row moves into it, so the live rows stay packed at the front. A step decodes
the first n slots, n rounded up to a power of two (or max_batch), so a compiled decode step
(`serve(compile=True)`) compiles once per block kind (recurrent, attention) and bucket: at
most kinds * (ceil(log2(max_batch)) + 1) graphs, whatever the traffic.

A prompt starts after its longest prefix held by the state cache (serving/state_cache.py,
`--state-cache-mb`): the end of an earlier prompt or reply (a chat's next turn), or a prefix
two prompts share (a system prompt). The cache keeps each prompt's state when it has been read
and each row's when it ends; prompts whose tokens are scored bypass it.

The model is exact per row and padding is invisible, so under greedy decoding a request's text
is the same as `engine.complete` alone with the same `prefill_chunk`, whatever else runs beside
it. From a cached prefix it is the same up to float rounding: chunks still end where a cold
start ends them, but a reply in the cached state was read by decode steps, not by a prefill.
Each row samples with its own `torch.Generator`, so a seed reproduces a choice however the
batch is made up.

A failure is contained to its request: an exception while admitting, prefilling, sampling,
detokenizing or delivering one request ends that request alone, with a `Done` carrying an
"internal_error", and every other row goes on exactly as if it had never been there. Only a
failure of the batched decode step (the model, which no single request owns) ends every
request in flight; the loop goes on. Should the loop itself die, `alive` turns False (the
server's /health answers 503) and the requests in flight are ended with an error.

Request handlers live on an asyncio loop. They call `submit` and `cancel` (thread-safe) and
read `Delta`s (with `PromptScored` first when the prompt is scored: the same chunked prefill,
with the LM head over each chunk, text/scoring.py) and a closing `Done` from the request's
asyncio.Queue, which the engine thread
fills through `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import torch

from rgemma.models.state import State
from rgemma.serving.limits import Limits
from rgemma.serving.state_cache import StateCache, row_of
from rgemma.text.core import ERROR, Decoder, Row, Slots, prefill, row_generator
from rgemma.text.logprobs import TokenLogprobs
from rgemma.text.output import TextStep, TextStream
from rgemma.text.sampling import SamplingParams
from rgemma.text.scoring import ChunkScorer
from rgemma.text.tokenizer import Tokenizer

GREEDY = SamplingParams(temperature=0.0)
THROUGHPUT_WINDOW_S = 10.0


@dataclass(frozen=True)
class RequestParams:
    """What one request asks for; every prompt of it gets `n` choices."""

    max_tokens: int = 16
    sampling: SamplingParams = GREEDY
    stop: tuple[str, ...] = ()
    seed: int | None = None  # choice j samples with seed + j
    n: int = 1
    ignore_eos: bool = False
    logprobs: int | None = None  # N: every generated token's scores, with N alternatives
    prompt_logprobs: int | None = None  # N: score the prompt's tokens too (a `PromptScored` event)

    def __post_init__(self) -> None:
        if self.max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {self.max_tokens}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")


@dataclass
class Delta:
    """New text for choice `index`; `finish_reason` ("stop" or "length") on its last one."""

    index: int
    text: str
    finish_reason: str | None = None
    scores: TokenLogprobs | None = None  # the token's, when the request asked for logprobs


@dataclass
class PromptScored:
    """The scores of prompt `index`'s tokens (RequestParams.prompt_logprobs), before any Delta
    of its choices; the first token has none. With max_tokens 0 no token follows."""

    index: int
    ids: list[int]
    scores: list[TokenLogprobs | None]


@dataclass
class Done:
    """The last event of a request: token counts, or why it was cut short."""

    prompt_tokens: int
    completion_tokens: int
    error: str | None = None
    code: str | None = None  # "shutdown" or "internal_error" with an error


class QueueFull(Exception):
    """Too many requests are waiting to start."""


class ShuttingDown(Exception):
    """The engine no longer accepts requests."""


class Request:
    """A submitted request: its prompts, parameters and the queue its events arrive on."""

    def __init__(self, prompts: list[list[int]], params: RequestParams, loop: asyncio.AbstractEventLoop):
        self.prompts, self.params, self.loop = prompts, params, loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.rows = len(prompts) * params.n
        self.prompt_tokens = sum(len(p) for p in prompts)
        self.completion_tokens = 0
        self.open_rows = self.rows
        self.cancelled = False
        self.finished = False

    async def events(self) -> AsyncIterator[Delta | Done]:
        """Every event until (and including) the closing `Done`."""
        while True:
            event = await self.queue.get()
            yield event
            if isinstance(event, Done):
                return


@dataclass
class _Prompt:
    """A prompt being prefilled, chunk by chunk, on its own one-row state."""

    request: Request
    index: int  # which prompt of the request
    ids: list[int]
    fed: int = 0
    state: State | None = None
    scorer: ChunkScorer | None = None  # when the prompt's tokens are scored
    logits: torch.Tensor | None = None  # (V,) after the `fed` tokens
    planned: bool = False  # looked up in the state cache
    boundary: int = 0  # keep the state here on the way (a prefix shared with other prompts)


@dataclass
class EngineStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    decode_tokens: int = 0  # tokens sampled by decode steps (not the first of each row)
    decode_seconds: float = 0.0
    state_bytes: int = 0
    recent: deque = field(default_factory=deque)  # (time, tokens) over the last window

    def tokens_per_second(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        recent = [(t, n) for t, n in list(self.recent) if now - t <= THROUGHPUT_WINDOW_S]
        return sum(n for _, n in recent) / THROUGHPUT_WINDOW_S


class BatchEngine:
    """The continuous-batching loop. `start()` runs it on a thread; tests may call `step()`."""

    def __init__(
        self,
        model,
        tokenizer: Tokenizer,
        max_batch: int = Limits.max_batch,
        max_queue: int = Limits.max_queue,
        prefill_chunk: int = Limits.prefill_chunk,
        state_cache_mb: float = Limits.state_cache_mb,
    ):
        if max_batch < 1 or max_queue < 0 or prefill_chunk < 1:
            raise ValueError("max_batch and prefill_chunk must be >= 1, max_queue >= 0")
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.max_queue, self.prefill_chunk = max_batch, max_queue, prefill_chunk
        self.eos = frozenset(tokenizer.stop_ids)
        self.stats = EngineStats()
        slots = Slots.allocate(model.config, max_batch, model.dtype, model.device)
        self.decoder = Decoder(model, slots, isolate=True)  # rows are tagged (request, choice index)
        self.cache = StateCache.from_mb(state_cache_mb)  # None: off (serving/state_cache.py)
        if self.cache is not None:
            self.decoder.on_finish = self._remember_reply
        _fit_recompile_limit(model, len(slots.buckets))
        self._prefilling: list[_Prompt] = []
        self._waiting: deque[Request] = deque()
        self._wake = threading.Condition()
        self._outbox: dict[Request, list] = {}
        self._thread: threading.Thread | None = None
        self._stop = False
        self._accepting = True
        self._deadline: float | None = None

    # ------------------------------------------------------------------ any thread
    def submit(
        self,
        prompts: Sequence[Sequence[int]],
        params: RequestParams,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Request:
        """Queue a request; raise QueueFull, ShuttingDown, or ValueError for one that can
        never run. `loop` (default: the running loop) receives its events."""
        prompts = [list(p) for p in prompts]
        if not prompts or not all(prompts):
            raise ValueError("every prompt needs at least one token")
        request = Request(prompts, params, loop or asyncio.get_running_loop())
        if request.rows > self.max_batch:
            raise ValueError(
                f"{request.rows} sequences (prompts x n) do not fit in a batch of {self.max_batch}"
            )
        with self._wake:
            if not self._accepting:
                raise ShuttingDown("the server is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting")
            self._waiting.append(request)
            self._wake.notify()
        return request

    def cancel(self, request: Request) -> None:
        """Stop a request (its client went away); its rows are freed before the next step."""
        if not request.finished:
            request.cancelled = True
            with self._wake:
                self._wake.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="rgemma-engine", daemon=True)
        self._thread.start()

    def drain(self, grace: float) -> None:
        """Stop taking requests; give those in flight `grace` seconds, then end them."""
        with self._wake:
            self._accepting = False
            self._deadline = time.monotonic() + grace
            self._wake.notify()

    def stop(self, timeout: float | None = 10.0) -> None:
        """End the loop; requests still in flight get a `Done` with a shutdown error."""
        with self._wake:
            self._accepting, self._stop = False, True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        else:
            self._abort_all("the server is shutting down", "shutdown")

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def active_rows(self) -> int:
        """Rows decoding plus rows of prompts being prefilled."""
        return len(self.decoder.live) + sum(p.request.params.n for p in list(self._prefilling))

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        return not (self._waiting or self._prefilling or self.decoder.live)

    # ------------------------------------------------------------------ the engine thread
    def _loop(self) -> None:
        message, code = "the server is shutting down", "shutdown"
        try:
            while self._wait_for_work():
                self.step()
                time.sleep(0)  # hand the GIL to the HTTP thread between steps
        except BaseException as err:  # the thread ends, so `alive` (and /health) tell
            traceback.print_exc(file=sys.stderr)
            message, code = f"internal error: the engine stopped ({type(err).__name__})", "internal_error"
        finally:
            with self._wake:
                self._accepting = False
            self._abort_all(message, code)

    def _wait_for_work(self) -> bool:
        """Block until there is a step to take; False when the loop must end. Past a drain
        deadline, whatever is still in flight is ended first."""
        with self._wake:
            while not self._stop:
                if self._deadline is not None and time.monotonic() >= self._deadline:
                    self._deadline = None
                    self._abort_all("the server is shutting down", "shutdown")
                if not self.idle:
                    return True
                timeout = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
                self._wake.wait(timeout)
            return False

    def step(self) -> None:
        """One iteration: drop cancelled, admit, prefill a chunk budget, decode one token.
        A failure of one request ends that request (see `_fail`); one of the batched decode
        step (a bug, out of memory) ends the requests in flight, never the loop."""
        try:
            with torch.no_grad():
                self._drop_cancelled()
                self._admit()
                self._prefill()
                self._decode()
            self.stats.state_bytes = self._state_bytes()
        except Exception as err:
            traceback.print_exc(file=sys.stderr)
            self._abort_all(f"internal error: {type(err).__name__}: {err}", "internal_error")
        self._flush()

    def _drop_cancelled(self) -> None:
        for row in self.decoder.live:
            if row.tag[0].cancelled:
                self.decoder.leave(row)
        self._prefilling = [p for p in self._prefilling if not p.request.cancelled]
        with self._wake:
            if any(r.cancelled for r in self._waiting):
                self._waiting = deque(r for r in self._waiting if not r.cancelled)

    def _admit(self) -> None:
        with self._wake:
            while self._waiting and self.active_rows + self._waiting[0].rows <= self.max_batch:
                request = self._waiting.popleft()
                self._contained(request, self._start, request)

    def _start(self, request: Request) -> None:
        self._prefilling += [_Prompt(request, i, ids) for i, ids in enumerate(request.prompts)]

    def _prefill(self) -> None:
        """Feed whole chunks, oldest prompt first, until this iteration's budget is spent.
        A prompt starts after its longest cached prefix; chunks end at multiples of
        `prefill_chunk`, as `engine.complete` would cut them (and at a shared prefix to keep)."""
        budget = self.prefill_chunk
        while self._prefilling:
            p = self._prefilling[0]
            if not p.planned:
                self._resume(p)
            size = self._chunk(p)
            if size > budget:
                return
            budget -= size
            self._contained(p.request, self._advance_prompt, p, size)

    def _advance_prompt(self, p: _Prompt, size: int) -> None:
        """One chunk of `p` (none when the cache covered it), and its join once it is read."""
        if size:
            self._feed_chunk(p, size)
        if p.fed == len(p.ids):
            self._prefilling.pop(0)
            self._join(p)

    def _chunk(self, p: _Prompt) -> int:
        """The size of `p`'s next chunk: up to the next multiple of prefill_chunk, the shared
        prefix to keep, or the end of the prompt."""
        end = p.boundary if p.fed < p.boundary else len(p.ids)
        return min((p.fed // self.prefill_chunk + 1) * self.prefill_chunk, end) - p.fed

    def _feed_chunk(self, p: _Prompt, size: int) -> None:
        ids = torch.tensor([p.ids[p.fed : p.fed + size]], device=self.model.device)
        logits, p.state = self._read(p, ids)
        p.fed += size
        p.logits = logits[0]
        if p.fed == p.boundary:  # the prompt goes on in p.state: keep a copy
            self.cache.put(p.ids[: p.fed], p.state.clone(), p.logits)

    def _read(self, p: _Prompt, ids: torch.Tensor) -> tuple[torch.Tensor, State]:
        """Prefill one chunk; score its tokens too when the request asks (text/scoring.py)."""
        top_n = p.request.params.prompt_logprobs
        if top_n is None:
            return prefill(self.model, ids, None, p.state, ids.shape[1])
        if p.scorer is None:
            p.scorer = ChunkScorer(self.model, 1, top_n)
        return p.scorer.feed(ids), p.scorer.state

    # ------------------------------------------------------------------ the state cache
    def _resume(self, p: _Prompt) -> None:
        """Start `p` after its longest cached prefix: a copy of the cached row to prefill on,
        or, when the cache covers the whole prompt, the row itself (only read: the decoder
        copies it into a slot). Prompts whose tokens are scored read everything."""
        p.planned = True
        if self.cache is None or p.request.params.prompt_logprobs is not None:
            return
        plan = self.cache.plan(p.ids)
        p.boundary = plan.boundary
        if plan.entry is not None:
            p.fed, p.logits = plan.entry.length, plan.entry.logits
            p.state = plan.entry.state if p.fed == len(p.ids) else plan.entry.state.clone()

    def _remember_prompt(self, p: _Prompt) -> None:
        """Keep the prompt's state: the rows only read it from here on, so no copy."""
        if self.cache is not None and p.scorer is None:
            self.cache.put(p.ids, p.state, p.logits)

    def _remember_reply(self, row: Row, logits: torch.Tensor) -> None:
        """Decoder.on_finish: keep a finished row's state (prompt + reply but its last token)."""
        request, index = row.tag
        if request.cancelled or request.params.prompt_logprobs is not None:
            return
        ids = request.prompts[index // request.params.n] + row.tokens[:-1]
        self.cache.put(ids, row_of(self.decoder.slots.state, row.slot), logits.clone())

    # ------------------------------------------------------------------ joining the decoder
    def _join(self, p: _Prompt) -> None:
        """The prompt's `n` choices join the decoder; its state is copied into a slot for
        each choice that goes on after its first token (sampled at the next core step).
        With max_tokens 0 the choices end here, with the prompt's scores alone."""
        request, n = p.request, p.request.params.n
        self.stats.prompt_tokens += len(p.ids)
        self._remember_prompt(p)
        if p.scorer is not None:
            self._send(request, PromptScored(p.index, p.ids, p.scorer.scores[0]))
        if request.params.max_tokens == 0:
            for j in range(n):
                self._send(request, Delta(p.index * n + j, "", "length"))
                self._close(request, 0)
            return
        for j in range(n):
            self.decoder.join(self._new_row(request, p.index * n + j, p.ids, j), p.logits, p.state)

    def _new_row(self, request: Request, index: int, prompt: list[int], j: int) -> Row:
        params = request.params
        sampling = params.sampling
        generator = None
        if not sampling.greedy:  # choice j: seed + j; no seed: fresh entropy
            generator = row_generator(None if params.seed is None else params.seed + j, self.model.device)
        return Row(
            sampling,
            params.max_tokens,
            frozenset() if params.ignore_eos else self.eos,
            generator,
            TextStream(self.tokenizer, params.stop, prompt),
            history=list(prompt) if sampling.repetition_penalty != 1 else [],
            tag=(request, index),
            top_logprobs=params.logprobs,
            tokens=None if self.cache is None else [],
        )

    def _decode(self) -> None:
        """One core step: every live row gets a token (decoded, or its first from prefill)."""
        if not self.decoder.live:
            return
        start = time.perf_counter()
        events = self.decoder.step()
        if self.decoder.decoded:
            self.stats.decode_tokens += self.decoder.decoded
            self.stats.decode_seconds += time.perf_counter() - start
        self._count(len(events))
        for row, step in events:
            self._contained(row.tag[0], self._deliver, row, step)

    def _count(self, tokens: int) -> None:
        now = time.monotonic()
        self.stats.completion_tokens += tokens
        self.stats.recent.append((now, tokens))
        while self.stats.recent and now - self.stats.recent[0][0] > THROUGHPUT_WINDOW_S:
            self.stats.recent.popleft()

    def _deliver(self, row: Row, step: TextStep) -> None:
        request, index = row.tag
        if request.finished:  # failed earlier in this step: its other rows say nothing
            return
        if step.finish_reason == ERROR:
            return self._fail(request, row.error)
        if step.text or step.finish_reason or step.scores:
            self._send(request, Delta(index, step.text, step.finish_reason, step.scores))
        if step.finish_reason is not None:
            self._close(request, row.generated)

    def _close(self, request: Request, generated: int) -> None:
        """One row of `request` has ended, after `generated` tokens."""
        request.open_rows -= 1
        request.completion_tokens += generated
        if request.open_rows == 0:
            request.finished = True
            self._send(request, Done(request.prompt_tokens, request.completion_tokens))

    def _contained(self, request: Request, stage, *args) -> None:
        """Run one request's part of an iteration; if it raises, that request alone fails."""
        try:
            stage(*args)
        except Exception as err:
            self._fail(request, err)

    def _fail(self, request: Request, err: BaseException | None) -> None:
        """End one request with an internal error: its prompts and rows leave at once, and
        nothing else moves (a leaving row's slot is refilled as when a row finishes)."""
        if err is not None:
            traceback.print_exception(err, file=sys.stderr)
        self._prefilling = [p for p in self._prefilling if p.request is not request]
        for row in self.decoder.live:
            if row.tag[0] is request:
                self.decoder.leave(row)
        if not request.finished:
            request.finished = True
            message = f"internal error: {type(err).__name__}: {err}"
            self._send(
                request, Done(request.prompt_tokens, request.completion_tokens, message, "internal_error")
            )

    def _abort_all(self, message: str, code: str) -> None:
        """End every request in flight with an error (shutdown, or a failed step)."""
        with self._wake:
            waiting, self._waiting = list(self._waiting), deque()
        requests = dict.fromkeys(
            [*waiting, *(p.request for p in self._prefilling), *(r.tag[0] for r in self.decoder.live)]
        )
        self._prefilling = []
        self.decoder.clear()
        for request in requests:
            if not request.finished:
                request.finished = True
                self._send(request, Done(request.prompt_tokens, request.completion_tokens, message, code))
        self.stats.state_bytes = 0
        self._flush()

    def _state_bytes(self) -> int:
        """State held for live rows: their slots, and the states of prompts being prefilled
        (the slots' memory is allocated once, at max_batch rows)."""
        total = len(self.decoder.live) * self.decoder.slots.row_bytes()
        return total + sum(p.state.nbytes() for p in self._prefilling if p.state is not None)

    # ------------------------------------------------------------------ delivery
    def _send(self, request: Request, event: Delta | Done) -> None:
        if not request.cancelled:
            self._outbox.setdefault(request, []).append(event)

    def _flush(self) -> None:
        """One wake-up of each request's loop per iteration, however many tokens it got."""
        outbox, self._outbox = self._outbox, {}
        for request, events in outbox.items():
            try:
                request.loop.call_soon_threadsafe(_put_all, request.queue, events)
            except RuntimeError:  # its event loop is closed: nobody is listening
                pass


def _fit_recompile_limit(model, buckets: int) -> None:
    """Let torch.compile keep a graph per block kind and bucket, the bound of a compiled
    server step (dynamo's default limit of 8 would fall back to eager past it). Without
    torch._dynamo imported nothing is compiled, and importing it would only cost time."""
    if "torch._dynamo" not in sys.modules:
        return
    kinds = len(set(model.config.layers_block_type))
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), kinds * buckets))


def _put_all(queue: asyncio.Queue, events: list) -> None:
    for event in events:
        queue.put_nowait(event)


# --------------------------------------------------------------------------- bench
def bench_server_decode(
    model_dir=None,
    concurrency: Sequence[int] = (1, 8, 32),
    max_tokens: int = 64,
    prompt: str = "Once upon a time",
    dtype: str | None = None,
    device: str | None = None,
    prefill_chunk: int = 256,
    loaded=None,
) -> dict[int, float]:
    """Aggregate decode tokens/s of the serving loop with `c` concurrent greedy requests of
    `max_tokens` tokens each (EOS ignored), for each c in `concurrency`.

    It counts the tokens sampled by decode steps over the time spent in them, so prefill,
    HTTP and detokenization on the client side are left out. `loaded` is a (model, tokenizer)
    pair to use instead of loading `model_dir` (None: the bundled model)."""
    if loaded is None:
        from rgemma.pretrained.loading import load

        loaded = load(None if model_dir is None else str(model_dir), dtype, device)
    model, tokenizer = loaded
    ids = tokenizer.encode(prompt)
    params = RequestParams(max_tokens=max_tokens, ignore_eos=True)
    _bench_once(model, tokenizer, ids, RequestParams(max_tokens=4, ignore_eos=True), 2, prefill_chunk)
    return {c: _bench_once(model, tokenizer, ids, params, c, prefill_chunk) for c in concurrency}


def _bench_once(model, tokenizer, ids, params, c, prefill_chunk) -> float:
    engine = BatchEngine(model, tokenizer, max_batch=c, max_queue=c, prefill_chunk=prefill_chunk)
    engine.start()

    async def run() -> None:
        requests = [engine.submit([ids], params) for _ in range(c)]
        for r in requests:
            async for _ in r.events():
                pass

    try:
        asyncio.run(run())
    finally:
        engine.stop()
    return engine.stats.decode_tokens / max(engine.stats.decode_seconds, 1e-9)
