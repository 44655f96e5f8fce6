"""`rgemma bench` (also `python -m bench` from the repository root): the flags, and the call to
rgemma.bench.harness.run_bench."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rgemma.bench import harness
from rgemma.bench.harness import IMPLS, MEASURES, SHAPES, unknown_measures
from rgemma.bench.report import format_table
from rgemma.cli.options import UsageError, device_name


def _ints(text: str) -> tuple[int, ...]:
    return tuple(
        int(float(x.lower().replace("k", "")) * (1024 if "k" in x.lower() else 1))
        for x in text.split(",")
        if x
    )


def _names(text: str) -> tuple[str, ...]:
    return tuple(x for x in text.split(",") if x)


def _measures(text: str) -> tuple[str, ...]:
    names = _names(text)
    problem = unknown_measures(names)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return names


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shapes",
        type=_names,
        default=("small", "2b-3l"),
        help=f"comma-separated, from {sorted(SHAPES)} (default: small,2b-3l)",
    )
    p.add_argument("--dtypes", type=_names, default=None, help="keep only these (fp32,bf16)")
    p.add_argument(
        "--impls", type=_names, default=("rgemma", "transformers"), help=f"comma-separated, from {IMPLS}"
    )
    p.add_argument("--compile", action="store_true", help="also time rgemma-compile")
    p.add_argument(
        "--quantize", choices=["int8"], help="also time rgemma-int8 (and rgemma-int8-compile with --compile)"
    )
    p.add_argument(
        "--measures",
        type=_measures,
        default=MEASURES[:4],
        help=f"comma-separated, from {', '.join(MEASURES)} (default: all but products). "
        "products times a decode step's weight products alone, back to back "
        "(rgemma only): the step's floor without its other ops",
    )
    p.add_argument("--prefill", type=_ints, default=None, help="prompt lengths, e.g. 1k,4k,32k")
    p.add_argument("--batches", type=_ints, default=None, help="decode batch sizes, e.g. 1,8,32")
    p.add_argument("--positions", type=_ints, default=None, help="decode positions, e.g. 1k,32k")
    p.add_argument("--steps", type=int, default=16, help="decode steps timed per figure")
    p.add_argument("--reps", type=int, default=3, help="runs per figure (the best counts)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", type=device_name, default="cpu")
    p.add_argument(
        "--cache-dir",
        default=None,
        help="where random checkpoints are kept (default: ~/.cache/rgemma/bench, or $RGEMMA_CACHE/bench)",
    )
    p.add_argument(
        "--mem-limit-gb",
        type=float,
        default=None,
        help="a worker past this RSS fails (default: 80%% of available memory)",
    )
    p.add_argument("--timeout", type=float, default=3600, help="seconds per worker")
    p.add_argument(
        "--quick",
        action="store_true",
        help="the small shape, prefill 1k, decode batch 1, positions 1k/8k, 8 steps",
    )
    p.add_argument("--out", default=None, help="write the report as JSON here")
    p.add_argument(
        "--perplexity",
        metavar="MODEL_DIR",
        default=None,
        help="instead: perplexity of a trained checkpoint before/after int8 on --data",
    )
    p.add_argument("--data", default=None, help="held-out documents for --perplexity")


def run_bench(args) -> int:
    if args.perplexity:
        if not args.data:
            raise UsageError("--perplexity needs --data FILE")
        result = harness.perplexity_delta(args.perplexity, args.data)
        print(json.dumps(result, indent=1))
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        return 0
    impls = list(args.impls)
    impls += ["rgemma-compile"] if args.compile and "rgemma-compile" not in impls else []
    impls += ["rgemma-int8"] if args.quantize and "rgemma-int8" not in impls else []
    both = args.compile and args.quantize and "rgemma-int8-compile" not in impls
    impls += ["rgemma-int8-compile"] if both else []
    kw = dict(
        prefill=args.prefill,
        batches=args.batches,
        positions=args.positions,
        steps=args.steps,
        reps=args.reps,
        shapes=args.shapes,
    )
    if args.quick:
        kw.update(
            prefill=args.prefill or (1024,),
            batches=args.batches or (1,),
            positions=args.positions or (1024, 8192),
            steps=min(args.steps, 8),
            reps=2,
        )
        kw["shapes"] = args.shapes if args.shapes != ("small", "2b-3l") else ("small",)
    report = harness.run_bench(
        dtypes=args.dtypes,
        impls=tuple(impls),
        measures=args.measures,
        threads=args.threads,
        device=args.device,
        cache_dir=args.cache_dir,
        mem_limit_gb=args.mem_limit_gb,
        timeout=args.timeout,
        quick=args.quick,
        out=args.out,
        **kw,
    )
    print(format_table(report))
    return 1 if any("error" in r for r in report["results"] if r["impl"] != "transformers") else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m bench ...`: the same as `rgemma bench ...`."""
    parser = argparse.ArgumentParser(
        prog="rgemma bench",
        description=harness.__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_bench_arguments(parser)
    return run_bench(parser.parse_args(sys.argv[1:] if argv is None else argv))
