"""Decode-sized linears at 2B shapes: torch's kernels against rgemma's native ones, per level.

    python bench/gemv_levels.py                           # every 2B shape, rows 1, 8, 32
    python bench/gemv_levels.py --shapes 2560x7680 --rows 1 --rounds 5

Prints the CPU features and kernel level, the machine's memory bandwidth (a sum and a copy
over a 1 GiB tensor: the roofline for one row), then one JSON line per (shape, rows, variant):
median and best ms per call, and GB/s of weight read. Each variant reads its own weight copies
in turn (together well past the last-level cache), so one row is timed from memory; variants
alternate round by round, so load drifting on a shared machine hits them alike. Variants:

- bf16: `F.linear`, `torch.mv` (one row), and `kernels.linear` at each level this CPU runs
  (`linear-avx2`, ...), the level forced through the `level=` argument;
- int8 (a scale per output channel): `torch._weight_int8pack_mm`, and `kernels.int8_linear`
  at each level (`int8-avx2`, ...), and `kernels.int8_gemv` (`int8-gemv`) where it loads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from rgemma import kernels

SHAPES = "2560x2560,7680x2560,2560x7680,256000x2560"  # (out, in): attention, MLP up/gate, down, LM head
COPY_BYTES = 1 << 29  # weight copies per variant: at least 512 MiB, far past any L3


def memory_bandwidth(rounds: int) -> dict[str, float]:
    """GB/s of a sum (reads 1 GiB) and a copy (reads and writes 1 GiB each), best of `rounds`."""
    a = torch.ones(1 << 28)  # 1 GiB of float32
    b = torch.empty_like(a)
    out = {}
    for name, run, nbytes in (("sum", a.sum, a.nbytes), ("copy", lambda: b.copy_(a), 2 * a.nbytes)):
        run()
        out[f"{name}_GBps"] = round(nbytes / min(_seconds(run) for _ in range(rounds)) / 1e9, 1)
    return out


def _seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def levels_run() -> list[str]:
    """The levels up to this CPU's whose kernels differ from the level below (so each runs once)."""
    x, w = torch.ones(1, 16, dtype=torch.bfloat16), torch.ones(1, 16, dtype=torch.bfloat16)
    found, seen = [], set()
    for level in kernels.LEVELS[1 : kernels.LEVELS.index(kernels.level()) + 1]:
        picks = (kernels.chosen(x, w, level), kernels.chosen(x, w.to(torch.int8), level))
        if picks[0] is not None and picks not in seen:
            found.append(level)
            seen.add(picks)
    return found


def variants(n_out: int, k_in: int, rows: int, levels: list[str]):
    """(name, weight copies, call(x, weight)) for every variant that applies to `rows`."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(n_out, k_in, generator=g).to(torch.bfloat16)
    q = torch.randint(-127, 128, (n_out, k_in), generator=g, dtype=torch.int8)
    scale = torch.rand(n_out, generator=g).to(torch.bfloat16) * 0.01
    copies = lambda t: [t] + [t.clone() for _ in range(max(COPY_BYTES // t.nbytes, 1))]
    bf16, int8 = copies(w), copies(q)
    out = [("F.linear", bf16, lambda x, w: F.linear(x, w))]
    if rows == 1:
        out.append(("torch.mv", bf16, lambda x, w: torch.mv(w, x[0])))
    out += [(f"linear-{lv}", bf16, lambda x, w, lv=lv: kernels.linear(x, w, level=lv)) for lv in levels]
    out.append(("int8pack", int8, lambda x, q: torch._weight_int8pack_mm(x, q, scale)))
    out += [
        (f"int8-{lv}", int8, lambda x, q, lv=lv: kernels.int8_linear(x, q, scale, level=lv)) for lv in levels
    ]
    if kernels.int8_gemv_available():
        out.append(("int8-gemv", int8, lambda x, q: kernels.int8_gemv(x, q, scale)))
    return out


def bench_shape(n_out: int, k_in: int, rows: int, levels: list[str], rounds: int, calls: int):
    x = torch.randn(rows, k_in).to(torch.bfloat16)
    runs = variants(n_out, k_in, rows, levels)
    times = {name: [] for name, _, _ in runs}
    for _ in range(rounds):
        for name, weights, call in runs:
            call(x, weights[0])  # warm-up
            n = max(calls, len(weights) if rows == 1 else 1)
            start = time.perf_counter()
            for i in range(n):
                call(x, weights[i % len(weights)])
            times[name].append((time.perf_counter() - start) / n)
    for name, weights, _ in runs:
        median, best = statistics.median(times[name]), min(times[name])
        yield {
            "shape": f"{n_out}x{k_in}",
            "rows": rows,
            "variant": name,
            "ms": round(median * 1e3, 3),
            "best_ms": round(best * 1e3, 3),
            "weight_GBps": round(weights[0].nbytes / median / 1e9, 1),
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default=SHAPES, help=f"comma-separated OUTxIN (default {SHAPES})")
    p.add_argument("--rows", default="1,8,32", help="comma-separated activation rows")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    p.add_argument("--calls", type=int, default=3, help="timed calls per round, at least")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    levels = levels_run()
    head = {"cpu_features": kernels.cpu_features(), "level": kernels.level(), "levels_run": levels}
    print(json.dumps({**head, "threads": args.threads, **memory_bandwidth(args.rounds)}), flush=True)
    with torch.no_grad():
        for shape in args.shapes.split(","):
            n_out, k_in = (int(n) for n in shape.split("x"))
            for rows in (int(r) for r in args.rows.split(",")):
                for line in bench_shape(n_out, k_in, rows, levels, args.rounds, args.calls):
                    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
