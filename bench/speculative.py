"""Speculative decoding (rgemma.text.speculative): what a check of K drafts costs, what it
gains, and the output is unchanged.

    python bench/speculative.py verify --shape 2b-3l   # (K+1)-token check vs one step, bf16, int8
    python bench/speculative.py lookup                 # prompt lookup, bundled model, grounded text
    python bench/speculative.py draft [--target DIR] [--draft DIR]   # default: bundled for both

`verify` times, at batch 1, one decode step and one traced forward over K+1 tokens plus the
rewind it may need, for K = 1..8, and prints the speed-up each acceptance rate a buys:
E[tokens per check] / cost = (1 - a^(K+1)) / (1 - a) / (c(K) + K d), d the draft's step cost
relative to the model's (0 for prompt lookup). `lookup` and `draft` decode greedily with and
without speculation, check the outputs are identical, and report tokens/s and acceptance.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see rgemma.cli.main

import torch  # noqa: E402

from rgemma.text.core import Row, Slots, prefill  # noqa: E402
from rgemma.text.sampling import SamplingParams  # noqa: E402
from rgemma.text.speculative import VERIFY_SLOPE, Speculation, SpeculativeDecoder, speedup  # noqa: E402

RATES = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


# --------------------------------------------------------------------------- verify cost
def timed(fn, reps: int) -> float:
    """Median seconds of fn() over reps runs (after one warm-up)."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def verify_costs(model, k_max: int = 8, context: int = 64, reps: int = 5) -> dict[int, float]:
    """{K: seconds of a (K+1)-token check with its rewind}, and {0: one decode step}."""
    V = model.config.vocab_size
    ids = torch.randint(3, V, (1, context))
    _, state = prefill(model, ids)
    active = torch.ones(1, dtype=torch.bool)

    def step():
        s = state.clone()
        model.decode_step(ids[0, :1], active, s)

    def check(k):
        s = state.clone()
        out = model(ids[:, : k + 1], cache=s, use_cache=True, rewind=True)
        out.rewind.apply(s, 1)

    clone = timed(state.clone, reps)  # both clone the state first: not part of the cost
    costs = {0: timed(step, reps) - clone}
    for k in range(1, k_max + 1):
        costs[k] = timed(lambda k=k: check(k), reps) - clone
    return costs


def print_curve(costs: dict[int, float], draft_cost: float = 0.0) -> None:
    step = costs[0]
    print("K   check/step")
    for k in sorted(c for c in costs if c):
        print(f"{k:<3} {costs[k] / step:6.2f}")
    print(f"acceptance -> best K, projected speed-up (draft cost {draft_cost:.2f} of a step)")
    for rate in RATES:
        best = max(
            (k for k in costs if k),
            key=lambda k: speedup(rate, k, 0.0) / (costs[k] / step + k * draft_cost),
        )
        gain = speedup(rate, best, 0.0) / (costs[best] / step + best * draft_cost)
        print(f"  a={rate:.2f}: K={best}  x{gain:.2f}")


def run_verify(args) -> None:
    from rgemma.accel.speed import optimize
    from rgemma.bench.harness import random_model
    from rgemma.pretrained.loading import load

    for variant in args.variants:
        model = load(None, "bfloat16")[0] if args.shape == "bundled" else random_model(args.shape, "bf16")
        optimize(model, quantize="int8" if variant == "int8" else None)
        costs = verify_costs(model, args.k_max, reps=args.reps)
        print(f"\n{args.shape} {variant}: one step {costs[0] * 1e3:.1f} ms")
        print_curve(costs)
        del model


# --------------------------------------------------------------------------- end to end
@torch.no_grad()
def decode(model, prompt: list[int], new: int, speculation: Speculation | None, eos=()):
    """Greedy tokens, seconds, and the decoder (for acceptance) after the prompt."""
    logits, state = prefill(model, torch.tensor([prompt]))
    row = Row(SamplingParams(temperature=0), new, frozenset(eos))
    if speculation is None:
        from rgemma.text.core import Decoder

        decoder = Decoder(model, Slots(state), pack=False)
    else:
        decoder = SpeculativeDecoder(model, Slots(state), speculation, prompt)
    decoder.adopt([row], logits)
    tokens, start = [], time.perf_counter()
    while decoder.live:
        tokens += [step.token_id for _, step in decoder.step()]
    return tokens, time.perf_counter() - start, decoder


def compare(model, prompt: list[int], new: int, speculations: dict[str, Speculation], eos=()) -> None:
    plain, seconds, _ = decode(model, prompt, new, None, eos)
    print(f"  plain            {len(plain) / seconds:7.1f} tok/s  ({len(plain)} tokens)")
    for name, spec in speculations.items():
        tokens, secs, decoder = decode(model, prompt, new, spec, eos)
        same = "identical" if tokens == plain else "DIFFERENT"
        per_check = (decoder.accepted + decoder.rounds) / max(decoder.rounds, 1)
        slope = VERIFY_SLOPE + decoder.length.draft_cost  # a draft step costs its size ratio
        projected = max(speedup(decoder.rate, k, slope) for k in range(1, 9))
        print(
            f"  {name:<16} {len(tokens) / secs:7.1f} tok/s  x{seconds / secs:.2f}  accepted "
            f"{decoder.accepted}/{decoder.drafted}, rate {decoder.rate:.2f}, {per_check:.2f} tokens "
            f"per check of {decoder.rounds}, projected x{projected:.2f}  {same}"
        )


def grounded_prompt(tokenizer, task: str = "plot", n_stories: int = 4) -> list[int]:
    """An input-grounded prompt from the bundled corpus. `plot`: stories of one plot, then the
    first third of another (the continuation reuses the given text's phrasing, as a summary or
    an extraction reuses its input's). `revise`: the same, with the last story given whole
    first (the continuation rewrites a text it has read, as an edit does)."""
    import random

    from rgemma.bundled.stories import plot_names, story

    rng = random.Random(1)
    texts = [story(rng, plot_names()[0]) for _ in range(n_stories + 1)]
    start = texts[-1][: len(texts[-1]) // 3].rsplit(". ", 1)[0] + "."  # its first third
    given = texts if task == "revise" else texts[:-1]
    return tokenizer.encode("\n\n".join(given) + "\n\n" + start)


def run_lookup(args) -> None:
    from rgemma.pretrained.loading import load

    model, tok = load(args.model, "float32")
    prompt = grounded_prompt(tok, args.task)
    name = args.model or "bundled model"
    print(f"{name}, prompt lookup, {len(prompt)}-token {args.task} prompt, {args.new} new tokens")
    compare(
        model,
        prompt,
        args.new,
        {f"lookup K={k}": Speculation(prompt_lookup=True, draft_tokens=k) for k in (2, 4, 8)}
        | {"lookup adaptive": Speculation(prompt_lookup=True)},
        tok.stop_ids,
    )


def run_draft(args) -> None:
    from rgemma.pretrained.loading import load

    target, tok = load(args.target, "float32")
    draft, _ = load(args.draft, "float32")
    if args.target is None and args.draft is None:
        print("the bundled model drafting for itself: a sanity check (all drafts accepted)")
    ratio = sum(p.numel() for p in draft.parameters()) / sum(p.numel() for p in target.parameters())
    for name, prompt in [
        ("story opening", tok.encode("Once upon a time")),
        ("grounded", grounded_prompt(tok)),
    ]:
        print(f"{name}: {len(prompt)} prompt tokens, {args.new} new (draft/target parameters {ratio:.2f})")
        compare(
            target,
            prompt,
            args.new,
            {f"draft K={k}": Speculation(draft_model=draft, draft_tokens=k) for k in (2, 4)}
            | {"draft adaptive": Speculation(draft_model=draft)},
            tok.stop_ids,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    v = sub.add_parser("verify")
    v.add_argument("--shape", default="2b-3l")
    v.add_argument("--variants", nargs="+", default=["bf16", "int8"])
    v.add_argument("--k-max", type=int, default=8)
    v.add_argument("--reps", type=int, default=5)
    lk = sub.add_parser("lookup")
    lk.add_argument("--new", type=int, default=300)
    lk.add_argument("--task", choices=["plot", "revise"], default="plot")
    lk.add_argument("--model", default=None, help="default: the bundled model")
    d = sub.add_parser("draft")
    d.add_argument("--target", default=None, help="default: the bundled model")
    d.add_argument("--draft", default=None, help="default: the bundled model")
    d.add_argument("--new", type=int, default=200)
    args = p.parse_args()
    torch.manual_seed(0)
    {"verify": run_verify, "lookup": run_lookup, "draft": run_draft}[args.what](args)


if __name__ == "__main__":
    main()
