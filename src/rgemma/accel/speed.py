"""The inference speed-ups the CLI, the server and the benchmark apply: `optimize`.

`optimize(model, compile=..., quantize=...)` quantizes (`--quantize int8`), turns on
reuse_memory on a CPU, and configures the model's fast paths (rgemma.accel.choices) with
`cli_accel`: the CPU linears for bf16/fp16 weights, the compiled step for `--compile`.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from rgemma.accel import process
from rgemma.accel.choices import Accel, accel_of, configure
from rgemma.models.surface import floating_dtype


def optimize(model: nn.Module, *, compile: bool = False, quantize: str | None = None) -> nn.Module:
    """In place: `quantize="int8"` swaps the linears for int8 weight-only ones
    (rgemma.accel.quantize), a CPU model reuses freed memory (process.reuse_memory), and the
    model gets cli_accel's fast paths (each new batch size compiles once). Returns the model."""
    if quantize not in (None, "none", "int8"):
        raise ValueError(f"unknown quantization {quantize!r}; expected 'int8' or none")
    if quantize == "int8":
        from rgemma.accel.quantize import quantize_model

        quantize_model(model)
    if next(model.parameters()).device.type == "cpu":
        process.reuse_memory()
    return configure(model, cli_accel(model, compile))


def cli_accel(model: nn.Module, compile: bool = False) -> Accel:
    """The fast paths optimize gives `model` (its other choices kept): rgemma's decode linears
    for a CPU model in bf16/fp16 (a float32 F.linear is as fast at one row), the compiled
    one-token step with `compile`."""
    cpu = next(model.parameters()).device.type == "cpu"
    half = cpu and floating_dtype(model.parameters()) != torch.float32
    current = accel_of(model)
    return replace(current, linears="matvec" if half else current.linears, compile=compile or current.compile)
