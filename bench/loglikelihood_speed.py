"""Speed of lm-eval `loglikelihood` requests: requests/s in process (rgemma.text.scoring, as
`rgemma eval` runs them) and through the server's scheduler (echo + logprobs=1 + max_tokens=1,
as lm-eval's local-completions sends them, `per_call` prompts per HTTP request).

    python bench/loglikelihood_speed.py --shape bundled --requests 64
    python bench/loglikelihood_speed.py --shape 2b-3l --requests 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see rgemma.cli.main

import torch  # noqa: E402

from rgemma.serving.scheduler import BatchEngine, RequestParams  # noqa: E402
from rgemma.text.sampling import SamplingParams  # noqa: E402
from rgemma.text.scoring import score_ids  # noqa: E402


def requests(vocab: int, n: int, context: int, continuation: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (context + continuation,), generator=g).tolist() for _ in range(n)]


def in_process(model, seqs, context: int, batch_size: int) -> float:
    start = time.perf_counter()
    score_ids(model, seqs, [context] * len(seqs), batch_size=batch_size)
    return len(seqs) / (time.perf_counter() - start)


def served(model, tokenizer, seqs, per_call: int) -> float:
    engine = BatchEngine(model, tokenizer, max_batch=max(per_call, 8), max_queue=len(seqs))
    engine.start()
    params = RequestParams(1, SamplingParams(temperature=0), logprobs=1, prompt_logprobs=1)

    async def run() -> None:
        calls = [engine.submit(seqs[i : i + per_call], params) for i in range(0, len(seqs), per_call)]
        for call in calls:
            async for _ in call.events():
                pass

    start = time.perf_counter()
    try:
        asyncio.run(run())
    finally:
        engine.stop()
    return len(seqs) / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="bundled", help="bundled, or a rgemma.bench.harness shape (2b-3l)")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--continuation", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--per-call", type=int, default=4, help="prompts per server request (lm-eval batch_size)")
    args = p.parse_args()
    from rgemma.pretrained.loading import load

    model, tok = load(None)
    if args.shape != "bundled":
        from rgemma.bench.harness import random_model

        model = random_model(args.shape, args.dtype)
    seqs = requests(
        min(model.config.vocab_size, tok.vocab_size), args.requests, args.context, args.continuation
    )
    in_process(model, seqs[: args.batch_size], args.context, args.batch_size)  # warm up
    print(
        f"{args.shape} ({args.dtype}, {torch.get_num_threads()} threads), {args.requests} requests of "
        f"{args.context}+{args.continuation} tokens:"
    )
    rate = in_process(model, seqs, args.context, args.batch_size)
    print(f"  in process (score_ids, batch {args.batch_size}): {rate:.1f} req/s")
    rate = served(model, tok, seqs, args.per_call)
    print(f"  server scheduler (echo+logprobs, {args.per_call} per call): {rate:.1f} req/s")


if __name__ == "__main__":
    main()
