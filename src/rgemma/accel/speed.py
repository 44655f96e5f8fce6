"""Speed switches, applied from outside the model, one call each.

- `set_threads(n)`: intra-op CPU threads.
- `use_scan(impl)`: the RG-LRU scan every model uses ("fast", "ref", or "triton" on a GPU).
- `matvec_linears(model)`: decode-sized products on CPUs: 1-32 bf16 rows through rgemma's AMX
  kernel where the CPU has AMX; otherwise one row through torch.addmv (streams bf16 weights
  ~1.25x faster than F.linear's GEMM path) and up to 128 rows as W @ x^T. With AMX the RG-LRU's
  two block-diagonal gates become one such product too (MatVecRGLRU).
- `reuse_memory()`: on Linux/glibc, large blocks come from the heap and freed memory is kept
  for reuse, so a step's big temporaries (logits: 32 x 256000 floats are 33 MB) stop
  page-faulting fresh memory every step.
- `use_attention(impl)`: prefill attention, "sdpa" (torch's fused kernel, the default) or
  "ref" (DeepMind's computation, which rounds the scores to the model dtype).
- `compile_decode_step(model)`: `torch.compile` of the one-token decode step, block by block.
- `static_decode_step(model)`: the decode step on fixed input/output buffers; on CUDA it is
  captured once per State as a CUDA graph and replayed (one launch per token).

`optimize(model, compile=..., quantize=...)` applies what the CLI offers in one call: int8
(`--quantize int8`), reuse_memory and the CPU linears (always on a CPU; the linears for
bf16/fp16), the compiled step (`--compile`).

The decode loop (`rgemma.generate.decode`) calls `model.decode_step(ids, active, state)`;
the switches replace that attribute on the instance (the compiled step: each block's
`forward`), and `plain_decode_step(model)` puts the model's own methods back. Those are the
reference every switch is tested against (tests/test_speed.py).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from rgemma import kernels
from rgemma.accel.memory import libc
from rgemma.models.griffin import RGLRU
from rgemma.models.state import State
from rgemma.models.surface import floating_dtype


def set_threads(n: int | None) -> int:
    """Use `n` intra-op CPU threads (None leaves torch's default); returns the count in force."""
    if n is not None:
        if n < 1:
            raise ValueError(f"threads must be at least 1, got {n}")
        torch.set_num_threads(n)
    return torch.get_num_threads()


SMALL_BATCH_ROWS = 128  # up to this many rows, W @ x^T beats x @ W^T on CPUs (README, Speed)
AMX_ROWS = 32  # up to this many bf16 rows, rgemma's AMX kernel (rgemma.kernels) beats torch's
# (bench/kernels_ab.py, ms per step vs torch's: 2B batch 1 257 vs 293 (torch.mv); 2B-shaped 3
# layers batch 1 78 vs 82, 16 96 vs 105, 32 133 vs 159, 64 242 vs 228)
USE_AMX = True  # tests switch it off to compare with torch's kernels


class MatVecLinear(nn.Linear):
    """An nn.Linear (same parameters, same state_dict) for decode-sized inputs on CPUs.

    1 to AMX_ROWS bf16 rows go through rgemma's AMX kernel where the CPU has AMX
    (rgemma.kernels). Otherwise one row goes through torch.mv / torch.addmv, which read a bf16
    weight at close to memory speed where F.linear's GEMM path does not, and up to
    SMALL_BATCH_ROWS rows are computed as W @ x^T (the weight as the streamed left operand),
    1.2-1.6x faster than x @ W^T for the batched decode shapes measured. Larger inputs
    (prefill) take F.linear.

    Under torch.compile (outside autograd) the product is one opaque op, rgemma::decode_linear,
    so the compiled step keeps these kernels and inductor fuses only the code around them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if kernels.needs_grad(x, self.weight):
            return decode_linear(x, self.weight, self.bias)
        return _decode_product(x, self.weight, self.bias)


def decode_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear(x, weight, bias) through the kernel MatVecLinear picks for x's row count."""
    rows = x.numel() // max(x.shape[-1], 1)
    if 1 <= rows <= AMX_ROWS and _amx_fits(x, weight):
        return kernels.amx_linear(x, weight, None, bias)
    if rows == 1:
        row = x.reshape(-1)
        y = torch.mv(weight, row) if bias is None else torch.addmv(bias, weight, row)
        return y.view(*x.shape[:-1], -1)
    if 1 < rows <= SMALL_BATCH_ROWS:
        xt = x.reshape(rows, -1).t()
        y = torch.mm(weight, xt) if bias is None else torch.addmm(bias[:, None], weight, xt)
        return y.t().reshape(*x.shape[:-1], -1)
    return F.linear(x, weight, bias)


def _decode_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """decode_linear outside autograd; while torch.compile traces, the opaque op around it."""
    if torch.compiler.is_compiling():
        return torch.ops.rgemma.decode_linear(x, weight, bias)
    return decode_linear(x, weight, bias)


@torch.library.custom_op("rgemma::decode_linear", mutates_args=())
def _decode_linear_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return decode_linear(x, weight, bias).contiguous()


@_decode_linear_op.register_fake
def _(x, weight, bias):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


class MatVecRGLRU(RGLRU):
    """An RGLRU (same parameters, same state_dict) whose two gates, at decode on a CPU with
    AMX, are one product through rgemma's AMX kernel.

    Each gate is H block-diagonal products x_h @ W_h with (E/H, E/H) blocks, which torch's bmm
    reads at ~6 GB/s for one row. Here the H head slices of x become H rows against all 2H
    blocks, transposed and stacked as one (2E, E/H) weight; head h's gates are the diagonal
    blocks of the (H, 2E) result. That is H times the multiply-adds, but one pass over the
    weight bytes, which is what a decode step waits for. `pack_gates` builds the stacked
    weight and makes both parameters views of it (no second copy; writes to the parameters,
    e.g. load_state_dict, land in it). Other inputs (prefill, float32, autograd, more than
    AMX_ROWS rows of heads) take the plain RGLRU.gates."""

    def pack_gates(self) -> None:
        """Build the stacked weight when the gates are bf16 on a CPU with AMX (else nothing)."""
        self.__dict__.pop("packed_gates", None)
        wx, wa = self.input_gate_weight, self.recurrent_gate_weight
        if not (
            wx.dtype == wa.dtype == torch.bfloat16 and wx.device.type == "cpu" and kernels.amx_available()
        ):
            return
        with torch.no_grad():
            packed = torch.cat([wx.transpose(1, 2), wa.transpose(1, 2)]).contiguous()  # (2H, out, in)
        wx.data, wa.data = packed[: self.heads].transpose(1, 2), packed[self.heads :].transpose(1, 2)
        self.__dict__["packed_gates"] = packed.view(-1, packed.shape[-1])  # (2E, E/H)

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        packed = self.__dict__.get("packed_gates")
        if not self._stacked_applies(x, packed):
            return super().gates(x)
        H, E = self.heads, x.shape[-1]
        y = _decode_product(x.reshape(-1, E // H), packed, None)  # a row per (token, head),
        # times every block: (N*H, 2E), through the AMX kernel (rows <= AMX_ROWS)
        y = y.view(-1, H, 2, H, E // H)  # (N, row head, gate, block head, E/H)
        # head h's gates are block h of row h: the (row head, block head) diagonal, as a view
        # (torch.diagonal would do; inductor's lowering of it warns on every compile)
        n, row, gate, block, _ = y.stride()
        gate_x, gate_a = (
            y.as_strided((y.shape[0], 2, H, E // H), (n, gate, row + block, 1)).reshape(-1, 2, E).unbind(1)
        )
        return (
            torch.sigmoid(gate_x.reshape(x.shape) + self.input_gate_bias.flatten()),
            torch.sigmoid(gate_a.reshape(x.shape) + self.recurrent_gate_bias.flatten()),
        )

    def _stacked_applies(self, x: torch.Tensor, packed: torch.Tensor | None) -> bool:
        """bf16 rows of heads within AMX_ROWS, outside autograd, and both parameters still the
        views pack_gates made (not replaced since; trusted while torch.compile traces)."""
        if (
            packed is None
            or not USE_AMX
            or x.dtype != packed.dtype
            or x.numel() // x.shape[-1] * self.heads > AMX_ROWS
            or kernels.needs_grad(x, self.input_gate_weight, self.recurrent_gate_weight)
        ):
            return False
        return torch.compiler.is_compiling() or (
            self.input_gate_weight.data_ptr() == packed.data_ptr()
            and self.recurrent_gate_weight.data_ptr() == packed[packed.shape[0] // 2].data_ptr()
        )


def _amx_fits(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """bf16 on a CPU with AMX, outside autograd, and not while torch.compile traces (there
    the rgemma::decode_linear op hides the native call)."""
    return (
        USE_AMX
        and x.dtype == weight.dtype == torch.bfloat16
        and x.device.type == "cpu"
        and not kernels.needs_grad(x, weight)
        and not torch.compiler.is_compiling()
        and kernels.amx_available()
    )


def matvec_linears(model, enable: bool = True):
    """Switch every nn.Linear of `model` to MatVecLinear and every RGLRU to MatVecRGLRU (or
    back, with enable=False), in place: only the classes change, no tensor is copied (the
    gates' parameters become views of their stacked weight). Returns the model."""
    for plain, fast in ((nn.Linear, MatVecLinear), (RGLRU, MatVecRGLRU)):
        old, new = (plain, fast) if enable else (fast, plain)
        for module in model.modules():
            if type(module) is old:
                module.__class__ = new
                if new is MatVecRGLRU:
                    module.pack_gates()
                elif old is MatVecRGLRU:
                    module.__dict__.pop("packed_gates", None)
    return model


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def reuse_memory() -> bool:
    """Make glibc serve allocations up to 1 GiB from its heap and never trim freed memory back
    to the OS (mallopt), process-wide. Without it, blocks over 32 MiB are mmap'd afresh on
    every allocation and page-fault in 4 KiB at a time: a 2B decode step at batch 32 builds
    several such logits-sized tensors. Memory freed stays mapped for reuse, so RSS holds its
    peak: call it once the model is loaded (and quantized), so that those steps' big
    temporaries go back to the OS. Returns whether it applied (False off glibc)."""
    mallopt = getattr(libc(), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30) and mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))


def optimize(model, *, compile: bool = False, quantize: str | None = None):
    """The inference speed-ups the CLI and server use, in place: `quantize="int8"` swaps the
    linears for int8 weight-only ones (rgemma.quantize), a CPU model gets reuse_memory (and
    matvec_linears when bf16/fp16), and `compile` compiles the decode step (each new batch
    size compiles once). Returns the model."""
    if quantize not in (None, "none", "int8"):
        raise ValueError(f"unknown quantization {quantize!r}; expected 'int8' or none")
    if quantize == "int8":
        from rgemma.accel.quantize import quantize_model

        quantize_model(model)
    if next(model.parameters()).device.type == "cpu":
        reuse_memory()
        if floating_dtype(model.parameters()) != torch.float32:
            matvec_linears(model)  # float32 F.linear is as fast at one row (README, Speed)
    if compile:
        compile_decode_step(model)
    return model


def use_scan(impl: str) -> str:
    """Make every model run the RG-LRU scan `impl` (see rgemma.scan.rnn_scan); returns the
    previous choice. "triton" needs the model on a CUDA device."""
    from rgemma.models import griffin as model_module

    if impl not in ("fast", "ref", "triton"):
        raise ValueError(f"unknown scan impl {impl!r}; expected 'fast', 'ref' or 'triton'")
    previous, model_module.SCAN_IMPL = model_module.SCAN_IMPL, impl
    return previous


def use_attention(impl: str) -> str:
    """Make every model's multi-token attention use `impl` (see rgemma.model.attend);
    returns the previous choice."""
    from rgemma.models import griffin as model_module

    if impl not in ("sdpa", "ref"):
        raise ValueError(f"unknown attention impl {impl!r}; expected 'sdpa' or 'ref'")
    previous, model_module.ATTENTION_IMPL = model_module.ATTENTION_IMPL, impl
    return previous


def plain_decode_step(model):
    """Undo the switches below: `model.decode_step` is the model's own method again, and its
    blocks run their own forward."""
    model.__dict__.pop("decode_step", None)
    for block in _blocks(model):
        block.__dict__.pop("forward", None)
    return model


def _eager_step(model):
    return functools.partial(type(model).decode_step, model)


def _blocks(model) -> nn.ModuleList:
    return model.model.layers


def compile_decode_step(model, mode: str | None = None, backend: str = "inductor"):
    """`torch.compile` for the one-token step, block by block: each residual block's
    one-token call runs compiled (on first use, and again for a new batch size), while the few
    ops between blocks (embedding, final norm, LM head, soft-cap) stay eager. Blocks of one kind
    share their compiled code, so a model compiles two graphs, recurrent and attention: the
    full 2B in ~51 s from a cold cache where the whole step as one graph took ~82 s, at the
    same speed within this machine's noise (README, Speed). Multi-token calls (prefill) stay eager.
    `mode="reduce-overhead"` adds CUDA graphs on a GPU; `backend="aot_eager"` traces without
    generating code (what the CPU tests use). Returns the model."""
    plain_decode_step(model)
    for block in _blocks(model):
        block.forward = _OneTokenCompiled(block, mode, backend)
    return model


class _OneTokenCompiled:
    """A block's forward that sends one-token calls with a state (decode) to its compiled
    version and every other call to the plain one."""

    def __init__(self, block: nn.Module, mode: str | None, backend: str):
        self.plain = block.forward
        self.compiled = torch.compile(block.forward, mode=mode, backend=backend, dynamic=False)

    def __call__(self, x, tok, state, need_probs: bool = False):
        one_token = x.shape[1] == 1 and tok.has_state and not need_probs
        return (self.compiled if one_token else self.plain)(x, tok, state, need_probs)


def static_decode_step(model, cuda_graph: bool | None = None):
    """Replace `model.decode_step` with a StaticDecodeStep (CUDA graph on CUDA by default).
    Returns the model."""
    model.decode_step = StaticDecodeStep(model, cuda_graph)
    return model


class StaticDecodeStep:
    """`model.decode_step` on fixed buffers: token ids and the active mask are copied into
    static tensors, the step updates the State in place (it never replaces a state tensor),
    and the logits land in one output tensor, overwritten by the next call.

    That is what a CUDA graph needs. With `cuda_graph` (default: when the model is on CUDA)
    the step is captured the first time it sees a State and replayed while that State comes
    back; a different State (a new generation) is captured afresh. Warm-up runs go to a
    clone, so capturing never advances the caller's State.
    """

    def __init__(self, model, cuda_graph: bool | None = None, warmup: int = 2):
        device = next(model.parameters()).device
        self.step = _eager_step(model)
        self.cuda_graph = device.type == "cuda" if cuda_graph is None else cuda_graph
        if self.cuda_graph and device.type != "cuda":
            raise ValueError("a CUDA graph needs the model on a CUDA device")
        self.warmup = warmup
        self.state: State | None = None
        self.graph = None

    def __call__(self, input_ids: torch.Tensor, active: torch.Tensor, state: State) -> torch.Tensor:
        if state is not self.state:
            self._bind(state)
        self.ids.copy_(input_ids)
        self.active.copy_(active)
        if self.graph is not None:
            self.graph.replay()
        else:
            self.logits = self.step(self.ids, self.active, self.state)
        return self.logits

    def _bind(self, state: State) -> None:
        B, device = state.batch_size, state.device
        self.state = state
        self.ids = torch.zeros(B, dtype=torch.long, device=device)
        self.active = torch.ones(B, dtype=torch.bool, device=device)
        self.graph = self._capture() if self.cuda_graph else None

    def _capture(self):
        scratch = self.state.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                self.step(self.ids, self.active, scratch)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.logits = self.step(self.ids, self.active, self.state)
        return graph
