"""The inference speed-ups the CLI, the server and the benchmark apply: `optimize`.

`optimize(model, compile=..., quantize=...)` quantizes (`--quantize int8`), turns on
reuse_memory on a CPU, and configures the model's fast paths (rgemma.accel.choices) with
`cli_accel`: the CPU decode linears, the compiled step for `--compile`.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from rgemma.accel import process
from rgemma.accel.choices import Accel, accel_of, configure


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
    for a CPU model (float32 too: its products of 2 to 128 rows, a speculative check or a
    decode batch, beat torch's) and the faster soft-cap tanh there, the compiled one-token
    step with `compile`."""
    cpu = next(model.parameters()).device.type == "cpu"
    current = accel_of(model)
    return replace(
        current,
        linears="matvec" if cpu else current.linears,
        soft_cap="auto" if cpu else current.soft_cap,
        compile=compile or current.compile,
    )
