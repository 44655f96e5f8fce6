"""The scheduler over the generation core, stepped by hand (no HTTP): rows live in preallocated
slots that joins and departures never re-concatenate, steps run on cached bucket views, a
request's output does not depend on its neighbours, and a compiled step changes nothing."""

from __future__ import annotations

import asyncio

import pytest
import torch

from rgemma import RecurrentGemmaForCausalLM
from rgemma.accel import PLAIN, configure
from rgemma.models.state import State
from rgemma.serving.scheduler import BatchEngine, Delta, Done, RequestParams
from rgemma.text.engine import GenerationConfig, complete
from rgemma.text.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0)
WARM = SamplingParams(temperature=1.3, top_k=20)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(engine: BatchEngine, batches: list[list[tuple[list[int], RequestParams]]]) -> list[list[str]]:
    """Submit each batch of (prompt, params) one step after the previous one, step until idle;
    the texts of every request's choices, in submission order."""
    texts = []
    for events in run_events(engine, batches):
        assert isinstance(events[-1], Done) and events[-1].error is None
        texts.append(texts_of(events))
    return texts


def run_events(engine: BatchEngine, batches) -> list[list[Delta | Done]]:
    """As `run`, but every request's events, errors included."""
    loop = asyncio.new_event_loop()
    requests = []
    for batch in batches:
        requests += [engine.submit([ids], params, loop) for ids, params in batch]
        engine.step()
    while not engine.idle:
        engine.step()
    loop.run_until_complete(asyncio.sleep(0))
    events = [[r.queue.get_nowait() for _ in range(r.queue.qsize())] for r in requests]
    loop.close()
    return events


def texts_of(events: list[Delta | Done]) -> list[str]:
    choices = [""] * (1 + max((e.index for e in events if isinstance(e, Delta)), default=0))
    for e in events:
        if isinstance(e, Delta):
            choices[e.index] += e.text
    return choices


def others(tok) -> list[list[tuple[list[int], RequestParams]]]:
    """Traffic of mixed lengths, samplers and stops, arriving over three steps."""
    ids = [tok.encode(t) for t in ("a fox", "the lazy dog sleeps", "numbers 1 2 3", "x")]
    return [
        [(ids[0], RequestParams(max_tokens=3, ignore_eos=True))],
        [(ids[1], RequestParams(max_tokens=9, sampling=WARM, seed=4, n=2, ignore_eos=True))],
        [
            (ids[2], RequestParams(max_tokens=5, stop=("e",))),
            (ids[3], RequestParams(max_tokens=12, sampling=WARM, seed=9, ignore_eos=True)),
        ],
    ]


def test_rows_join_and_leave_without_copying_the_state(lm, monkeypatch):
    model, tok = lm
    engine = BatchEngine(model, tok, max_batch=6, prefill_chunk=8)
    slots = engine.decoder.slots.state.tensors()
    pointers = {name: t.data_ptr() for name, t in slots.items()}

    def refuse(*args, **kwargs):
        raise AssertionError("the batched state was re-concatenated")

    monkeypatch.setattr(State, "cat", refuse)
    monkeypatch.setattr(State, "select", refuse)
    loads = []
    load = engine.decoder.slots.load

    def counted(*args):
        loads.append(args[0])
        load(*args)

    monkeypatch.setattr(engine.decoder.slots, "load", counted)
    run(engine, others(tok) + others(tok))
    after = engine.decoder.slots.state.tensors()
    assert {name: t.data_ptr() for name, t in after.items()} == pointers
    assert all(after[name] is t for name, t in slots.items())
    assert 0 < len(loads) <= 2 * (5 + 5)  # one copy per join that goes on, at most one per departure
    assert not engine.decoder.live and engine.stats.state_bytes == 0


def test_decode_steps_run_on_cached_bucket_views(lm, monkeypatch):
    model, tok = lm
    engine = BatchEngine(model, tok, max_batch=6)
    slots = engine.decoder.slots
    assert slots.buckets == [1, 2, 4, 6]
    seen = []
    step = model.decode_step

    def spy(ids, active, state):
        seen.append((state.batch_size, state, int(active.sum())))
        return step(ids, active, state)

    monkeypatch.setattr(model, "decode_step", spy)
    run(engine, others(tok))
    sizes = {n for n, _, _ in seen}
    assert sizes <= set(slots.buckets) and len(sizes) > 1
    for n, state, live in seen:
        assert state is slots.view(n) and live <= n
        assert n == slots.bucket(live)  # packed: the smallest bucket that holds the live rows
    assert any(live < n for n, _, live in seen)  # padding rows inside a bucket


def test_a_request_alone_equals_it_among_others(lm):
    """float32 greedy and seeded sampling: the same text alone and in any traffic."""
    model, tok = lm
    greedy = (tok.encode("once upon a time"), RequestParams(max_tokens=10, ignore_eos=True))
    seeded = (tok.encode("hello"), RequestParams(max_tokens=10, sampling=WARM, seed=7, n=3, ignore_eos=True))
    alone = [run(BatchEngine(model, tok, max_batch=8), [[r]])[0] for r in (greedy, seeded)]
    mixed = others(tok)
    mixed[1].insert(0, greedy)
    mixed[2].append(seeded)
    texts = run(BatchEngine(model, tok, max_batch=8), mixed)
    assert texts[1] == alone[0] and texts[-1] == alone[1]
    assert len(set(alone[1])) == 3  # the three choices drew from three generators
    config = GenerationConfig(max_new_tokens=10, sampling=WARM, seed=8, eos_ids=[], prefill_chunk=256)
    assert alone[1][1] == complete(model, tok, [seeded[0]], config)[0].text  # choice j: seed + j


def test_compiled_server_step_gives_the_same_greedy_text(lm_dir, lm):
    model, tok = lm
    compiled = RecurrentGemmaForCausalLM.from_pretrained(lm_dir)
    graphs = []

    def backend(gm, inputs):
        graphs.append(gm)
        return torch._dynamo.lookup_backend("aot_eager")(gm, inputs)

    torch._dynamo.reset()
    configure(compiled, compile=True, compile_backend=backend)
    try:
        engine = BatchEngine(compiled, tok, max_batch=2, prefill_chunk=16)
        prompts = [tok.encode(t) for t in ("hi", "the quick brown fox", "one two")]
        batches = [[(p, RequestParams(max_tokens=4 + 2 * i, ignore_eos=True))] for i, p in enumerate(prompts)]
        texts = run(engine, batches)  # a third request waits for a slot: buckets of 2, then 1
    finally:
        configure(compiled, PLAIN)
    for i, p in enumerate(prompts):
        config = GenerationConfig(max_new_tokens=4 + 2 * i, sampling=GREEDY, eos_ids=[], prefill_chunk=16)
        assert texts[i] == [complete(model, tok, [p], config)[0].text]
    kinds = len(set(model.config.layers_block_type))
    assert 0 < len(graphs) <= kinds * len(engine.decoder.slots.buckets)  # the recompile bound


def test_cancelled_rows_leave_their_slots(lm):
    model, tok = lm
    engine = BatchEngine(model, tok, max_batch=4)
    loop = asyncio.new_event_loop()
    params = RequestParams(max_tokens=50, ignore_eos=True)
    a, b, c = (engine.submit([tok.encode(t)], params, loop) for t in ("a", "b", "c"))
    engine.step()
    engine.step()
    assert [r.tag[0] for r in engine.decoder.live] == [a, b, c]
    engine.cancel(a)
    engine.step()
    assert [r.tag[0] for r in engine.decoder.live] == [c, b]  # the last row moved into the hole
    assert [r.slot for r in engine.decoder.live] == [0, 1]
    engine.cancel(b)
    engine.cancel(c)
    engine.step()
    assert engine.idle and engine.stats.state_bytes == 0
    loop.run_until_complete(asyncio.sleep(0))
    assert all(isinstance(e, Delta) for e in [a.queue.get_nowait() for _ in range(a.queue.qsize())])
    loop.close()


def test_a_compiled_server_may_keep_a_graph_per_kind_and_bucket(lm):
    model, tok = lm
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    before = getattr(config, name)
    try:
        BatchEngine(model, tok, max_batch=256)  # 9 buckets, 2 block kinds
        assert getattr(config, name) >= 18
    finally:
        setattr(config, name, before)


# --------------------------------------------------------------------------- isolation
STAGES = ["admission", "prefill", "sampling", "detokenizing", "emitting"]


def _inject(stage: str, engine: BatchEngine, faulty: list[int], monkeypatch) -> None:
    """Make the request whose prompt is `faulty` raise at `stage`, mid-way where it can."""
    from rgemma.serving import scheduler
    from rgemma.text import core

    def mine(request) -> bool:
        return request.prompts[0] == faulty

    def boom():
        raise RuntimeError(f"injected {stage} fault")

    if stage == "admission":
        start = engine._start
        monkeypatch.setattr(engine, "_start", lambda r: boom() if mine(r) else start(r))
    elif stage == "prefill":  # its second chunk, with its state half-built
        real = scheduler.prefill
        monkeypatch.setattr(
            scheduler,
            "prefill",
            lambda m, ids, *a: boom() if ids[0].tolist() == faulty[8:16] else real(m, ids, *a),
        )
    elif stage == "sampling":  # after the whole group (the others too) has sampled
        real = core._sample_group

        def sample_group(logits, rows, u):
            out = real(logits, rows, u)
            return boom() if any(mine(r.tag[0]) for r in rows) else out

        monkeypatch.setattr(core, "_sample_group", sample_group)
    elif stage == "detokenizing":  # on its third token

        class Faulty(scheduler.TextStream):
            def push(self, token_id):
                self.pushed = getattr(self, "pushed", 0) + 1
                return boom() if self.pushed == 3 and self.detok_prompt == faulty else super().push(token_id)

        def stream(tok, stop, prompt):
            out = Faulty(tok, stop, prompt)
            out.detok_prompt = list(prompt)
            return out

        monkeypatch.setattr(scheduler, "TextStream", stream)
    else:  # its first text
        send = engine._send

        def faulty_send(request, event):
            if mine(request) and isinstance(event, Delta) and event.text:
                boom()
            send(request, event)

        monkeypatch.setattr(engine, "_send", faulty_send)


@pytest.mark.parametrize("stage", STAGES)
def test_a_failing_request_ends_alone_and_the_others_are_unchanged(lm, monkeypatch, stage):
    """One request raises at `stage`: it gets an internal_error Done, and every other request
    (greedy and seeded, one sharing its sampler and its sampling group) gives the text of a
    clean run."""
    model, tok = lm
    faulty = tok.encode("a broken request that fails somewhere inside the engine")
    assert len(faulty) > 8
    params = RequestParams(max_tokens=9, sampling=WARM, seed=4, n=2, ignore_eos=True)  # as others[1]
    clean = run(BatchEngine(model, tok, max_batch=8, prefill_chunk=8), others(tok))
    engine = BatchEngine(model, tok, max_batch=8, prefill_chunk=8)
    _inject(stage, engine, faulty, monkeypatch)
    batches = others(tok)
    batches[1].append((faulty, params))
    events = run_events(engine, batches)
    broken = events.pop(2)
    assert isinstance(broken[-1], Done) and broken[-1].code == "internal_error"
    assert f"injected {stage} fault" in broken[-1].error
    assert sum(isinstance(e, Done) for e in broken) == 1
    for request in events:
        assert isinstance(request[-1], Done) and request[-1].error is None
    assert [texts_of(e) for e in events] == clean
    assert engine.idle and not engine.decoder.live and engine.stats.state_bytes == 0
