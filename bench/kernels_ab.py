"""Decode-step A/B of rgemma's CPU kernels, variants alternating in one process.

    python bench/kernels_ab.py                          # 2B-shaped 3 layers, batches 1-32
    python bench/kernels_ab.py --shape 2b --batches 1 --rounds 4

On a shared machine, load drifts over minutes; alternating the variants round by round inside
one process puts every variant under the same drift, which separate bench runs do not. Variants:

- bf16-torch: bf16 weights, torch's kernels (rgemma.accel linears="matvec", amx_rows=0);
- bf16-amx: the same, with rgemma's AMX kernel for 1 to `--amx-rows` rows (when the CPU has AMX);
- int8: int8 weights with the current kernel choice (rgemma.accel.quantize, int8_kernel="auto").

The bf16 variants are one model, configured afresh before each of its rounds.

Prints the median ms per step and tok/s of each variant per batch size, one JSON line each.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from rgemma import State
from rgemma.accel import configure, quantize
from rgemma.accel.linears import AMX_ROWS
from rgemma.accel.process import set_threads
from rgemma.bench.harness import random_model as random_weights


def variants(shape: str, names, amx_rows: int):
    """(name, setup) pairs; setup configures a variant's model and returns it."""
    model = random_weights(shape, "bf16")
    int8 = quantize.quantize_model(copy.deepcopy(model)) if "int8" in names else None
    every = [
        ("bf16-torch", lambda: configure(model, linears="matvec", amx_rows=0)),
        ("bf16-amx", lambda: configure(model, linears="matvec", amx_rows=amx_rows)),
        ("int8", lambda: configure(int8, linears="matvec", int8_kernel="auto")),
    ]
    return [v for v in every if v[0] in names]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="2b-3l", help="a `rgemma bench` shape (default 2b-3l)")
    p.add_argument("--batches", default="1,2,4,8,16,32", help="comma-separated batch sizes")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per batch size")
    p.add_argument("--steps", type=int, default=3, help="timed decode steps per round")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--variants",
        default="bf16-torch,bf16-amx,int8",
        help="comma-separated subset of the variants above",
    )
    p.add_argument(
        "--amx-rows",
        type=int,
        default=AMX_ROWS,
        help=f"bf16-amx: the most rows the AMX kernel takes (default {AMX_ROWS})",
    )
    args = p.parse_args()
    set_threads(args.threads)
    runs = variants(args.shape, args.variants.split(","), args.amx_rows)
    config = runs[0][1]().config
    with torch.no_grad():
        for batch in (int(b) for b in args.batches.split(",")):
            ids = torch.randint(0, config.vocab_size, (batch,))
            active = torch.ones(batch, dtype=torch.bool)
            states = {name: State.zeros(config, batch, torch.bfloat16, "cpu") for name, _ in runs}
            times = {name: [] for name, _ in runs}
            for _ in range(args.rounds):
                for name, setup in runs:
                    lm = setup()
                    lm.decode_step(ids, active, states[name])  # warm-up
                    start = time.perf_counter()
                    for _ in range(args.steps):  # a greedy step, as `rgemma bench` times it
                        lm.decode_step(ids, active, states[name]).argmax(-1)
                    times[name].append((time.perf_counter() - start) / args.steps * 1e3)
            for name, ms in times.items():
                median = statistics.median(ms)
                print(
                    json.dumps(
                        {
                            "shape": args.shape,
                            "batch": batch,
                            "variant": name,
                            "ms_per_step": round(median, 1),
                            "tok_per_s": round(batch / median * 1e3, 1),
                            "runs_ms": [round(m, 1) for m in ms],
                        }
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
