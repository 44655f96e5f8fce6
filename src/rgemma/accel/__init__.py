"""What makes a model faster, applied from outside it, per model (two models in one process
can differ).

- `configure(model, accel=None, **choices)` (choices.py): the one way to choose a model's fast
  paths, an `Accel`: scan, attention, linears (+ amx_rows), int8_kernel, compile. The choices
  live on the model's own modules (swap.py: a submodule put in place, or an attribute the
  model declares); `configure(model, PLAIN)` gives back the plain model.
- linears.py: MatVecLinear and MatVecRGLRU, decode-sized products on CPUs.
- compile.py: CompiledBlock (the compiled one-token step) and StaticDecodeStep (fixed buffers,
  a CUDA graph on CUDA).
- quantize.py: int8 weight-only linears and their checkpoint format.
- process.py: process-wide CPU settings (threads, glibc's allocator).
- speed.py: `optimize`, what the CLI applies.
"""

from rgemma.accel.choices import PLAIN, Accel, accel_of, configure
from rgemma.accel.speed import optimize

__all__ = ["PLAIN", "Accel", "accel_of", "configure", "optimize"]
