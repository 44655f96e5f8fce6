"""`rgemma eval`: lm-evaluation-harness on a model, in process (rgemma.evaluation.harness)."""

from __future__ import annotations

import argparse
import json
import sys

from rgemma.cli.options import model_options


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = """examples:
  rgemma eval --model google/recurrentgemma-2b --tasks hellaswag,arc_easy --batch-size 16
  rgemma eval --tasks wikitext --limit 20 --json > results.json
  rgemma eval --model DIR --tasks my_task --include-path ./my_tasks

Needs lm-eval: pip install 'rgemma[eval]'. The results table goes to stdout (the whole results
as JSON with --json, or to --output-path); loading and lm-eval's progress go to stderr."""
    model_options(p)
    p.add_argument("--tasks", required=True, help="comma-separated lm-eval task or group names")
    p.add_argument("--num-fewshot", "--num_fewshot", type=int, default=None, help="few-shot examples")
    p.add_argument("--limit", type=float, default=None, help="documents per task (a fraction if < 1)")
    p.add_argument("--batch-size", "--batch_size", default="16", help="sequences scored together")
    p.add_argument("--include-path", "--include_path", default=None, help="a folder of task YAMLs")
    p.add_argument(
        "--no-builtin-tasks",
        action="store_true",
        help="find tasks in --include-path only (skips indexing lm-eval's own task files)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gen-kwargs", "--gen_kwargs", default=None, help="e.g. temperature=0,max_gen_toks=64")
    p.add_argument("--apply-chat-template", "--apply_chat_template", action="store_true")
    p.add_argument("--log-samples", "--log_samples", action="store_true", help="keep each sample's output")
    p.add_argument("--output-path", "--output_path", default=None, help="write the results as JSON here")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")


def run_eval(args) -> int:
    from rgemma.evaluation.harness import evaluate

    results = evaluate(
        args.model,
        [t for t in args.tasks.split(",") if t],
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        batch_size=int(args.batch_size) if str(args.batch_size).isdigit() else 16,
        include_path=args.include_path,
        builtin_tasks=not args.no_builtin_tasks,
        dtype=args.dtype,
        device=args.device,
        quantize=args.quantize,
        seed=args.seed,
        gen_kwargs=args.gen_kwargs,
        apply_chat_template=args.apply_chat_template,
        log_samples=args.log_samples,
    )
    text = json.dumps(results, default=str, indent=2)
    if args.output_path:
        with open(args.output_path, "w") as f:
            f.write(text)
    if args.json:
        print(text)
    else:
        from lm_eval.utils import make_table

        print(make_table(results))
    print(f"rgemma eval: {len(results.get('results', {}))} task(s) evaluated", file=sys.stderr)
    return 0
