"""Loading for inference: a model and its tokenizer, with the speed-ups of
rgemma.accel.speed.optimize applied."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import torch

from rgemma.accel.speed import optimize
from rgemma.io.checkpoint_files import parse_dtype, resolve_model_dir
from rgemma.pretrained.classes import RecurrentGemmaForCausalLM
from rgemma.text.tokenizer import Tokenizer


def load(
    model: str | None,
    dtype: str | None = None,
    device: str | None = None,
    err: TextIO = sys.stderr,
    *,
    compile: bool = False,
    quantize: str | None = None,
) -> tuple[RecurrentGemmaForCausalLM, Tokenizer]:
    """Model and tokenizer from a directory, a cached repo id, or (None) the bundled model,
    with the inference speed-ups of rgemma.accel.speed.optimize applied."""
    path = resolve_model_dir(model)
    start = time.perf_counter()
    print(f"loading {path}", file=err)
    wanted = parse_dtype(dtype)
    if model is None and wanted is None:
        wanted = torch.float32  # the bundled weights are stored in bf16 for size; fp32 is faster on CPU
    lm = RecurrentGemmaForCausalLM.from_pretrained(path, dtype=wanted, device=device)
    tokenizer = Tokenizer.from_dir(path)
    n_params = lm.num_parameters()  # before int8 turns weights into buffers
    optimize(lm, compile=compile, quantize=quantize)
    extras = "".join(
        [
            ", int8 weight-only linears" if quantize == "int8" else "",
            ", compiled decode step (the first tokens compile it)" if compile else "",
        ]
    )
    print(
        f"loaded {n_params / 1e6:.1f}M parameters ({lm.dtype}{extras}) in {time.perf_counter() - start:.1f}s",
        file=err,
    )
    return lm, tokenizer
