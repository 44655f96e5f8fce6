"""The decode step made cheaper to launch: compiled blocks (CompiledBlock, put in place by
accel.configure(compile=True)) and a step on fixed buffers, optionally a CUDA graph
(StaticDecodeStep, a callable the caller holds instead of model.decode_step)."""

from __future__ import annotations

import torch

from rgemma.accel.swap import adopt
from rgemma.models.griffin import ResidualBlock
from rgemma.models.state import State


class CompiledBlock(ResidualBlock):
    """A ResidualBlock (the same parts, the same state_dict) whose one-token calls with a state
    (decode) run through `torch.compile`; every other call (prefill) stays eager.

    The compiled code is that of ResidualBlock.forward, so blocks of one kind share it: a model
    compiles two graphs, recurrent and attention (again for each new batch size), where the
    whole step as one graph takes longer to compile for the same speed (README, Speed).
    `mode="reduce-overhead"` adds CUDA graphs on a GPU; `backend="aot_eager"` traces without
    generating code (what the CPU tests use)."""

    @classmethod
    def from_block(cls, block: ResidualBlock, mode: str | None, backend: str) -> CompiledBlock:
        if type(block) is cls:
            if block.options == (mode, backend):
                return block
            block = block.to_plain()
        fast = adopt(block, cls)
        fast.options = (mode, backend)
        eager = ResidualBlock.forward.__get__(fast)
        fast.compiled = torch.compile(eager, mode=mode, backend=backend, dynamic=False)
        return fast

    def to_plain(self) -> ResidualBlock:
        return adopt(self, ResidualBlock, drop=("options", "compiled"))

    def forward(self, x, tok, state, need_probs: bool = False):
        if x.shape[1] == 1 and tok.has_state and not need_probs and tok.trace is None:
            return self.compiled(x, tok, state, need_probs)
        return ResidualBlock.forward(self, x, tok, state, need_probs)


class StaticDecodeStep:
    """`model.decode_step` on fixed buffers: token ids and the active mask are copied into
    static tensors, the step updates the State in place (it never replaces a state tensor),
    and the logits land in one output tensor, overwritten by the next call.

    That is what a CUDA graph needs. With `cuda_graph` (default: when the model is on CUDA)
    the step is captured the first time it sees a State and replayed while that State comes
    back; a different State (a new generation) is captured afresh. Warm-up runs go to a
    clone, so capturing never advances the caller's State. Call it where model.decode_step
    would be called; the model itself is left as it is.
    """

    def __init__(self, model, cuda_graph: bool | None = None, warmup: int = 2):
        device = next(model.parameters()).device
        self.step = model.decode_step
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
