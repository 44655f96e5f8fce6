"""Loading for inference: a model and its tokenizer, with the speed-ups of
rgemma.accel.speed.optimize applied."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rgemma.accel.speed import optimize
from rgemma.io.checkpoint_files import resolve_model_dir, tokenizer_files
from rgemma.pretrained.adapters import adapter_base, is_adapter_dir, merge_adapter
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
    adapter: str | None = None,
) -> tuple[RecurrentGemmaForCausalLM, Tokenizer]:
    """Model and tokenizer from a directory, a cached repo id, or (None) the bundled model,
    with the inference speed-ups of rgemma.accel.speed.optimize applied. `adapter` (a LoRA adapter
    directory) is merged into the weights; `model` may itself be an adapter directory, whose
    base model then loads. The tokenizer comes from the adapter directory when it has one."""
    path = resolve_model_dir(model)
    if adapter is None and is_adapter_dir(path):
        path, adapter = adapter_base(path), str(path)
    start = time.perf_counter()
    print(f"loading {path}", file=err)
    on_read = quantize if adapter is None else None  # int8 as each tensor is read; after a merge
    lm = RecurrentGemmaForCausalLM.from_pretrained(path, dtype=dtype, device=device, quantize=on_read)
    if adapter is not None:
        merge_adapter(lm, adapter)
        print(f"merged the LoRA adapter {adapter}", file=err)
    tokenizer = Tokenizer.from_dir(adapter if adapter and tokenizer_files(adapter) else path)
    n_params = lm.num_parameters() + sum(b.numel() for n, b in lm.named_buffers() if n.endswith(".weight"))
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
