"""Multi-turn chat through the server's scheduler, with the prefix state cache on and off:
many conversations at once, each of `--turns` turns over one long shared system prompt, the
transcript re-rendered from the reply text every turn as an OpenAI client does. Reports the
time to first token per turn (mean and max over conversations), the prompt length per turn,
aggregate generated tokens/s, and the cache's hits, tokens saved and peak bytes held.

It drives rgemma.serving.scheduler.BatchEngine on its thread (what `rgemma serve` runs, less
HTTP), greedy, `--reply` tokens per turn (EOS ignored).

    python bench/serve_multiturn.py --shape bundled --conversations 8
    python bench/serve_multiturn.py --shape 2b-3l --conversations 2 --reply 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see rgemma.cli.main

import torch  # noqa: E402

from rgemma.serving.scheduler import BatchEngine, Delta, RequestParams  # noqa: E402
from rgemma.text.sampling import SamplingParams  # noqa: E402

WORDS = (
    "the model reads a long prompt once and keeps its state so that every later turn of the "
    "conversation starts where the last one ended while other clients share the same system "
    "rules about tone format safety tools dates units names places numbers lists tables code"
).split()


def words(tok, tokens: int, rng: random.Random) -> str:
    """Random words, about `tokens` tokens long."""
    text = ""
    while len(tok.encode(text, add_bos=False)) < tokens:
        text += " ".join(rng.choice(WORDS) for _ in range(16)) + ". "
    return text


async def conversation(engine, tok, system: str, k: int, args, rng: random.Random) -> list[tuple]:
    """One client's turns: (prompt tokens, seconds to first token, generated tokens) each."""
    messages = [{"role": "system", "content": system}]
    params = RequestParams(max_tokens=args.reply, sampling=SamplingParams(temperature=0), ignore_eos=True)
    turns = []
    for turn in range(args.turns):
        messages.append({"role": "user", "content": f"client {k}, turn {turn}: {words(tok, args.user, rng)}"})
        ids = tok.encode_chat(messages, add_generation_prompt=True)
        start, first, reply = time.perf_counter(), None, ""
        async for event in engine.submit([ids], params).events():
            if isinstance(event, Delta):
                first = first or time.perf_counter()
                reply += event.text
        turns.append((len(ids), first - start, args.reply))
        messages.append({"role": "assistant", "content": reply})
    return turns


def run(model, tok, args, cache_mb: float) -> dict:
    engine = BatchEngine(
        model, tok, args.max_batch, 4 * args.conversations, args.prefill_chunk, state_cache_mb=cache_mb
    )
    system = words(tok, args.system, random.Random(0))
    engine.start()

    async def clients():
        async for _ in engine.submit([tok.encode("warm up")], RequestParams(max_tokens=2)).events():
            pass
        rngs = [random.Random(k + 1) for k in range(args.conversations)]
        jobs = [conversation(engine, tok, system, k, args, rngs[k]) for k in range(args.conversations)]
        return await asyncio.gather(*jobs)

    start = time.perf_counter()  # the warm-up request is in the wall time: a few ms
    try:
        convs = asyncio.run(clients())
    finally:
        engine.stop()
    wall = time.perf_counter() - start
    return summary(convs, wall, engine, cache_mb)


def summary(convs, wall: float, engine, cache_mb: float) -> dict:
    per_turn = list(zip(*convs))  # per turn: each conversation's (prompt, ttft, tokens)
    out = {
        "cache_mb": cache_mb,
        "prompt": [statistics.mean(t[0] for t in turn) for turn in per_turn],
        "ttft": [statistics.mean(t[1] for t in turn) for turn in per_turn],
        "ttft_max": [max(t[1] for t in turn) for turn in per_turn],
        "tokens_per_s": sum(t[2] for turn in per_turn for t in turn) / wall,
        "wall_s": wall,
    }
    if engine.cache is not None:
        s = engine.cache.stats
        out.update(hits=s.hits, misses=s.misses, saved=s.tokens_saved, evictions=s.evictions)
        out.update(peak_mb=s.peak_bytes / 2**20, budget_mb=engine.cache.budget / 2**20)
    return out


def report(r: dict) -> None:
    label = f"cache {r['cache_mb']:g} MB" if r["cache_mb"] else "no cache"
    print(f"{label}: {r['tokens_per_s']:.1f} generated tokens/s over {r['wall_s']:.1f} s")
    for i, (p, t, m) in enumerate(zip(r["prompt"], r["ttft"], r["ttft_max"])):
        print(f"  turn {i + 1}: prompt {p:6.0f} tokens, TTFT mean {t * 1000:8.1f} ms, max {m * 1000:8.1f} ms")
    print(f"  TTFT turn {len(r['ttft'])} / turn 1: {r['ttft'][-1] / r['ttft'][0]:.2f}")
    if "hits" in r:
        print(
            f"  cache: {r['hits']} hits, {r['misses']} misses, {r['saved']} tokens saved, "
            f"{r['evictions']} evictions, peak {r['peak_mb']:.1f} of {r['budget_mb']:g} MB"
        )


def load(shape: str, dtype: str, compile: bool):
    from rgemma.pretrained.loading import load

    model, tok = load(None)
    if shape != "bundled":
        from rgemma.bench.harness import random_model

        model = random_model(shape, dtype)
    if compile:
        from rgemma.accel import configure

        configure(model, compile=True)
    return model, tok


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="bundled", help="bundled, or a rgemma.bench.harness shape (2b-3l)")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--conversations", type=int, default=8)
    p.add_argument("--turns", type=int, default=8)
    p.add_argument("--system", type=int, default=1500, help="system prompt tokens (shared)")
    p.add_argument("--user", type=int, default=300, help="tokens per user message")
    p.add_argument("--reply", type=int, default=32, help="tokens per reply")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--prefill-chunk", type=int, default=256)
    p.add_argument("--cache-mb", default="1024,0", help="comma-separated budgets; 0 is off")
    p.add_argument("--compile", action="store_true", help="the compiled decode step (serve --compile)")
    args = p.parse_args()
    model, tok = load(args.shape, args.dtype, args.compile)
    print(
        f"{args.shape} ({args.dtype}, {torch.get_num_threads()} threads), {args.conversations} conversations"
    )
    for mb in (float(x) for x in args.cache_mb.split(",")):
        report(run(model, tok, args, mb))


if __name__ == "__main__":
    main()
