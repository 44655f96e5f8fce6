"""The server's prefix state cache (serving/state_cache.py): a prompt starts from its longest
cached prefix (the end of an earlier prompt, of an earlier reply, or a prefix two prompts
share), falls back when a transcript re-tokenizes a reply, stays in budget, never changes an
entry it reuses, bypasses scored prompts, and greedy text is the same with it on and off."""

from __future__ import annotations

import asyncio

import pytest
import torch

from rgemma import RecurrentGemmaForCausalLM
from rgemma.accel import PLAIN, configure
from rgemma.models.state import State
from rgemma.serving.scheduler import BatchEngine, Delta, Done, PromptScored, RequestParams
from rgemma.serving.state_cache import StateCache, metric_values, prefix_digests
from rgemma.text.engine import GenerationConfig, complete
from rgemma.text.sampling import SamplingParams

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXT = "the quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun "


def ids_of(tok, n: int, offset: int = 0) -> list[int]:
    """n tokens of varied text (no BOS), starting `offset` tokens into it."""
    ids = tok.encode(TEXT * (1 + (n + offset) // 8), add_bos=False)
    return ids[offset : offset + n]


def engine_for(lm, mb: float = 64, **kw) -> BatchEngine:
    model, tok = lm
    return BatchEngine(
        model, tok, max_batch=kw.pop("max_batch", 8), state_cache_mb=mb, prefill_chunk=32, **kw
    )


def serve(engine: BatchEngine, prompts: list[list[int]], params: RequestParams) -> list[list]:
    """Submit every prompt at once, step until idle; each request's events but the Done."""
    loop = asyncio.new_event_loop()
    requests = [engine.submit([p], params, loop) for p in prompts]
    while not engine.idle:
        engine.step()
    loop.run_until_complete(asyncio.sleep(0))
    out = []
    for r in requests:
        events = [r.queue.get_nowait() for _ in range(r.queue.qsize())]
        assert isinstance(events[-1], Done) and events[-1].error is None
        out.append(events[:-1])
    loop.close()
    return out


def texts(engine: BatchEngine, prompts: list[list[int]], max_tokens: int = 6) -> list[str]:
    events = serve(engine, prompts, RequestParams(max_tokens=max_tokens, ignore_eos=True))
    return ["".join(e.text for e in es if isinstance(e, Delta)) for es in events]


def generated(lm, prompt: list[int], max_tokens: int) -> list[int]:
    model, tok = lm
    config = GenerationConfig(max_new_tokens=max_tokens, sampling=SamplingParams(temperature=0), eos_ids=[])
    return complete(model, tok, [prompt], config)[0].token_ids


def snapshot(cache: StateCache) -> list[dict[str, torch.Tensor]]:
    return [
        {**{k: t.clone() for k, t in e.state.tensors().items()}, "logits": e.logits.clone()}
        for e in cache._entries.values()
    ]


# --------------------------------------------------------------------------- the cache alone
def test_prefix_digests_name_prefixes():
    ids = list(range(40))
    d = prefix_digests(ids, [16, 32, 40])
    assert d[16] == prefix_digests(ids[:16], [16])[16] != d[32]
    assert prefix_digests([1, 2, 3], [3])[3] != prefix_digests([1, 2, 4], [3])[3]


def test_eviction_keeps_the_budget_and_the_recently_used(config):
    row = State.zeros(config, 1, torch.float32)
    logits = torch.zeros(config.vocab_size)
    size = row.nbytes() + logits.numel() * 4
    cache = StateCache(int(2.5 * size))
    keys = [[k] * 16 for k in range(4)]
    for k in keys[:2]:
        assert cache.put(k, row.clone(), logits)
    assert cache.plan(keys[0] + [9]).entry.length == 16  # 0 is now the most recently used
    assert cache.put(keys[2], row.clone(), logits)  # evicts 1
    assert cache.plan(keys[1] + [9]).entry is None and cache.plan(keys[0] + [9]).entry is not None
    assert cache.stats.evictions == 1 and cache.stats.entries == 2
    assert cache.stats.bytes == 2 * size <= cache.budget and cache.stats.peak_bytes == 2 * size
    assert not StateCache(size - 1).put(keys[3], row, logits)  # an entry over the budget is not kept
    assert not cache.put([1] * 15, row, logits)  # shorter than min_tokens


# --------------------------------------------------------------------------- hits in the scheduler
def test_a_repeated_prompt_is_not_read_again(lm, monkeypatch):
    engine = engine_for(lm)
    prompt = ids_of(lm[1], 40)
    first = texts(engine, [prompt])
    calls = []
    forward = type(lm[0]).forward
    monkeypatch.setattr(type(lm[0]), "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    assert texts(engine, [prompt]) == first
    assert not calls  # the whole prompt came from the cache: decode steps only
    stats = engine.cache.stats
    assert (stats.hits, stats.misses, stats.tokens_saved) == (1, 1, 40)


def test_a_longer_prompt_reads_only_what_follows_the_cached_prefix(lm):
    engine, cold = engine_for(lm), engine_for(lm, mb=0)
    prompt, more = ids_of(lm[1], 40), ids_of(lm[1], 70)[40:]
    texts(engine, [prompt])
    assert texts(engine, [prompt + more]) == texts(cold, [prompt + more])
    assert engine.cache.stats.tokens_saved == 40 and cold.cache is None


def test_the_next_turn_starts_after_the_reply_or_falls_back_when_it_retokenizes(lm):
    """The transcript of a chat's next turn holds the reply: its tokens as sampled (the state
    kept when the row ended serves), or tokenized otherwise (the prompt's state serves)."""
    engine, cold = engine_for(lm), engine_for(lm, mb=0)
    prompt, tail = ids_of(lm[1], 40), ids_of(lm[1], 20, offset=3)
    texts(engine, [prompt], max_tokens=8)
    reply = generated(lm, prompt, 8)
    same = prompt + reply[:-1] + tail  # the last sampled token was never fed
    assert texts(engine, [same]) == texts(cold, [same])
    assert engine.cache.stats.tokens_saved == 40 + 7
    other = prompt + [reply[1], reply[0]] + reply[2:] + tail  # the reply re-tokenized otherwise
    saved = engine.cache.stats.tokens_saved
    assert texts(engine, [other]) == texts(cold, [other])
    assert engine.cache.stats.tokens_saved - saved == 40  # the longest prefix that matches


def test_a_shared_prefix_is_kept_once_two_prompts_share_it(lm):
    tok = lm[1]
    system = ids_of(tok, 50)
    users = [ids_of(tok, 12, offset=k) for k in (1, 2, 5, 6)]
    users = [[400 - k] + u for k, u in enumerate(users)]  # they differ from their first token
    prompts = [system + u for u in users]
    engine, cold = engine_for(lm), engine_for(lm, mb=0)
    out = [texts(engine, [p])[0] for p in prompts]
    assert out == texts(cold, prompts)
    stats = engine.cache.stats
    assert stats.misses == 2 and stats.hits == 2  # the first two read it all; the second kept 48
    assert stats.tokens_saved == 2 * 48  # the shared 50, to a block of 16
    assert 48 in engine.cache._lengths


def test_concurrent_requests_sharing_a_prefix(lm):
    """Submitted together: each is looked up when its prefill starts, so those behind the
    second find the shared prefix it kept; the text is the same as without the cache."""
    tok = lm[1]
    system = ids_of(tok, 64)
    prompts = [system + [300 + k] + ids_of(tok, 10, offset=k) for k in range(6)]
    engine, cold = engine_for(lm), engine_for(lm, mb=0)
    assert texts(engine, prompts) == texts(cold, prompts)
    stats = engine.cache.stats
    assert stats.misses == 2 and stats.hits == 4 and stats.tokens_saved == 4 * 64


def test_a_cached_state_is_never_changed_by_the_requests_that_reuse_it(lm):
    engine = engine_for(lm)
    prompt, tail = ids_of(lm[1], 40), ids_of(lm[1], 20, offset=3)
    texts(engine, [prompt], max_tokens=8)
    before = snapshot(engine.cache)
    entries = list(engine.cache._entries.values())
    texts(engine, [prompt, prompt + tail, prompt + tail[:5]], max_tokens=12)  # a full and partial hits
    assert engine.cache.stats.hits == 3
    for entry, old in zip(entries, before):
        assert all(torch.equal(t, old[k]) for k, t in entry.state.tensors().items())
        assert torch.equal(entry.logits, old["logits"])


def test_greedy_chat_is_the_same_with_the_cache_on_and_off(lm):
    """Eight turns over a shared system prompt, two conversations side by side, the transcript
    re-rendered from the text each turn as a client does."""
    tok = lm[1]
    system = {"role": "system", "content": TEXT * 4}
    runs = {}
    for mb in (0, 64):
        engine = engine_for(lm, mb=mb)
        chats = [[system], [system]]
        for turn in range(8):
            for k, chat in enumerate(chats):
                chat.append({"role": "user", "content": f"question {turn} of {k}: {TEXT[: 10 * turn]}"})
            prompts = [tok.encode_chat(chat, add_generation_prompt=True) for chat in chats]
            for chat, text in zip(chats, texts(engine, prompts, max_tokens=6)):
                chat.append({"role": "assistant", "content": text})
        runs[mb] = (chats, engine)
    assert runs[0][0] == runs[64][0]
    stats, read = runs[64][1].cache.stats, runs[64][1].stats.prompt_tokens
    assert (stats.misses, stats.hits) == (2, 14) and stats.tokens_saved > 0.75 * read


def test_scored_prompts_read_every_token(lm):
    """Echo scores need every prompt token: such prompts neither use nor fill the cache."""
    engine, cold = engine_for(lm), engine_for(lm, mb=0)
    prompt = ids_of(lm[1], 40)
    texts(engine, [prompt])
    params = RequestParams(max_tokens=2, logprobs=1, prompt_logprobs=1)
    hot, ref = (serve(e, [prompt + [7]], params)[0] for e in (engine, cold))
    assert [type(e) for e in hot] == [type(e) for e in ref] and isinstance(hot[0], PromptScored)
    assert hot[0].scores == ref[0].scores and len(hot[0].scores) == 41
    assert (engine.cache.stats.hits, engine.cache.stats.entries) == (0, 2)


def test_the_cache_with_a_compiled_server_step(lm_dir, lm):
    model, tok = lm
    compiled = RecurrentGemmaForCausalLM.from_pretrained(lm_dir)
    torch._dynamo.reset()
    configure(compiled, compile=True, compile_backend="aot_eager")
    prompt, tail = ids_of(tok, 40), ids_of(tok, 20, offset=3)
    try:
        engine = engine_for((compiled, tok), max_batch=2)
        out = [texts(engine, [prompt]), texts(engine, [prompt, prompt + tail])]
    finally:
        configure(compiled, PLAIN)
    cold = engine_for(lm, mb=0, max_batch=2)
    assert out == [texts(cold, [prompt]), texts(cold, [prompt, prompt + tail])]
    assert engine.cache.stats.hits == 2


def test_metric_values_name_the_counters(lm):
    engine = engine_for(lm)
    texts(engine, [ids_of(lm[1], 40)] * 2)
    values = {name: value for name, _, _, value in metric_values(engine.cache)}
    assert values["state_cache_hits_total"] == 1 and values["state_cache_tokens_saved_total"] == 40
    assert values["state_cache_bytes"] == engine.cache.stats.bytes > 0
    assert {"state_cache_misses_total", "state_cache_evictions_total"} <= set(values)
    assert all(v == 0 for _, _, _, v in metric_values(None))


def test_the_server_flag_and_metrics(lm):
    pytest.importorskip("fastapi")
    import argparse

    from fastapi.testclient import TestClient

    from rgemma.cli.serve import add_serve_arguments
    from rgemma.serving.api import Limits, create_app

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    assert parser.parse_args(["--state-cache-mb", "0"]).state_cache_mb == 0
    assert Limits().state_cache_mb == 1024
    with pytest.raises(ValueError, match="--state-cache-mb"):
        Limits(state_cache_mb=-1).validate()
    model, tok = lm
    messages = [{"role": "system", "content": TEXT}, {"role": "user", "content": "hi"}]
    with TestClient(create_app(model, tok, limits=Limits(max_tokens=4))) as client:
        for _ in range(2):
            assert client.post("/v1/chat/completions", json={"messages": messages}).status_code == 200
        metrics = client.get("/metrics").text
    assert "# TYPE rgemma_state_cache_hits_total counter" in metrics
    assert "rgemma_state_cache_hits_total 1\n" in metrics and "rgemma_state_cache_misses_total 1\n" in metrics
    assert "rgemma_state_cache_bytes 0\n" not in metrics
