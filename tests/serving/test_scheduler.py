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
    loop = asyncio.new_event_loop()
    requests = []
    for batch in batches:
        requests += [engine.submit([ids], params, loop) for ids, params in batch]
        engine.step()
    while not engine.idle:
        engine.step()
    loop.run_until_complete(asyncio.sleep(0))
    texts = []
    for r in requests:
        events = [r.queue.get_nowait() for _ in range(r.queue.qsize())]
        assert isinstance(events[-1], Done) and events[-1].error is None
        choices = [""] * r.params.n
        for e in events[:-1]:
            choices[e.index] += e.text
        texts.append(choices)
    loop.close()
    return texts


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
