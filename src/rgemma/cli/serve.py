"""`rgemma serve`: the flags, and the call to rgemma.serving.api.serve."""

from __future__ import annotations

import argparse
import os

from rgemma.cli.options import dataclass_arguments, dataclass_values, port_number, weight_options
from rgemma.serving.api import serve
from rgemma.serving.limits import Limits

EPILOG = """examples:
  rgemma serve                                    # the bundled model on 127.0.0.1:8080
  rgemma serve --model google/recurrentgemma-2b-it --dtype bfloat16 --max-batch 64
  RGEMMA_API_KEY=secret rgemma serve --host 0.0.0.0 --port 9000

  curl localhost:8080/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 50}'
  curl -N localhost:8080/v1/completions -H 'Content-Type: application/json' \\
    -d '{"prompt": "Once upon a time", "max_tokens": 50, "stream": true}'

OpenAI's clients work as they are (base_url="http://127.0.0.1:8080/v1"). The schema is at
/openapi.json, metrics at /metrics. SIGTERM finishes in-flight requests (up to
--shutdown-grace seconds) and then exits."""


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument(
        "--model",
        metavar="PATH_OR_REPO_ID",
        default=None,
        help="an HF-format directory, or a repo id in the local HF cache (default: the bundled model)",
    )
    p.add_argument(
        "--model-name", metavar="NAME", default=None, help="the id clients use (default: the model's name)"
    )
    p.add_argument(
        "--adapter",
        metavar="DIR",
        default=None,
        help="a LoRA adapter directory (rgemma train --lora, or peft's save_pretrained), merged "
        "into the weights at load; --model may also be an adapter directory alone, whose "
        "base_model_name_or_path is then loaded",
    )
    weight_options(p)
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument(
        "--port", type=port_number, metavar="PORT", default=8080, help="port, 1..65535 (default 8080)"
    )
    p.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help="require 'Authorization: Bearer KEY' (default: $RGEMMA_API_KEY, else none)",
    )
    dataclass_arguments(p, Limits)
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the one-token decode step, as `generate --compile` does; it compiles "
        "once per batch-size bucket (powers of two up to --max-batch) as traffic first reaches it",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def run_serve(args: argparse.Namespace) -> int:
    serve(
        model=args.model,
        adapter=args.adapter,
        host=args.host,
        port=args.port,
        api_key=args.api_key or os.environ.get("RGEMMA_API_KEY") or None,
        dtype=args.dtype,
        device=args.device,
        model_name=args.model_name,
        log_level=args.log_level,
        quantize=args.quantize,
        compile=args.compile,
        limits=Limits(**dataclass_values(args, Limits)),
    )
    return 0
