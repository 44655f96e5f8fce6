"""Decode-sized weight products on CPUs: MatVecLinear for nn.Linear, MatVecRGLRU for the RG-LRU's
block-diagonal gates. Each holds its own kernel policy (`amx_rows`), set by accel.configure.

1 to `amx_rows` bf16 rows go through rgemma's AMX kernel where the CPU has AMX
(rgemma.kernels); otherwise one row goes through torch.mv / torch.addmv, which read a bf16
weight at close to memory speed where F.linear's GEMM path does not, and up to
SMALL_BATCH_ROWS rows are computed as W @ x^T (the weight as the streamed left operand). Larger
inputs (prefill) take F.linear. The speed-ups are measured in the README (Speed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rgemma import kernels
from rgemma.accel.swap import adopt
from rgemma.models.griffin import RGLRU

SMALL_BATCH_ROWS = 128  # up to this many rows, W @ x^T beats x @ W^T on CPUs
AMX_ROWS = 32  # the default limit: up to this many bf16 rows rgemma's AMX kernel beats torch's


class MatVecLinear(nn.Linear):
    """An nn.Linear (the same parameters, the same state_dict) for decode-sized inputs.

    Under torch.compile (outside autograd) the product is one opaque op, rgemma::decode_linear,
    so the compiled step keeps these kernels and inductor fuses only the code around them."""

    amx_rows = AMX_ROWS  # the most rows the AMX kernel takes; 0: never

    @classmethod
    def from_linear(cls, linear: nn.Linear, amx_rows: int = AMX_ROWS) -> MatVecLinear:
        """`linear`'s parameters (the same tensors) behind these kernels."""
        fast = linear if type(linear) is cls else adopt(linear, cls)
        fast.amx_rows = amx_rows
        return fast

    def to_plain(self) -> nn.Linear:
        return adopt(self, nn.Linear, drop=("amx_rows",))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if kernels.needs_grad(x, self.weight):
            return decode_linear(x, self.weight, self.bias, self.amx_rows)
        return _decode_product(x, self.weight, self.bias, self.amx_rows)


def decode_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, amx_rows: int = AMX_ROWS
) -> torch.Tensor:
    """F.linear(x, weight, bias) through the kernel that suits x's row count."""
    rows = x.numel() // max(x.shape[-1], 1)
    if 1 <= rows <= amx_rows and _amx_fits(x, weight):
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


def _decode_product(x, weight, bias, amx_rows: int) -> torch.Tensor:
    """decode_linear outside autograd; while torch.compile traces, the opaque op around it."""
    if torch.compiler.is_compiling():
        return torch.ops.rgemma.decode_linear(x, weight, bias, amx_rows)
    return decode_linear(x, weight, bias, amx_rows)


@torch.library.custom_op("rgemma::decode_linear", mutates_args=())
def _decode_linear_op(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, amx_rows: int
) -> torch.Tensor:
    return decode_linear(x, weight, bias, amx_rows).contiguous()


@_decode_linear_op.register_fake
def _(x, weight, bias, amx_rows):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def _amx_fits(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """bf16 on a CPU with AMX, outside autograd, and not while torch.compile traces (there
    the rgemma::decode_linear op hides the native call)."""
    return (
        x.dtype == weight.dtype == torch.bfloat16
        and x.device.type == "cpu"
        and not kernels.needs_grad(x, weight)
        and not torch.compiler.is_compiling()
        and kernels.amx_available()
    )


_GATES = ("input_gate_weight", "recurrent_gate_weight")


class MatVecRGLRU(RGLRU):
    """An RGLRU (the same state_dict) whose two gates, at decode, are one product.

    Each gate is H block-diagonal products x_h @ W_h with (E/H, E/H) blocks, which torch's bmm
    reads at a fraction of memory speed for one row. Here the H head slices of x become H rows
    against all 2H blocks, transposed and stacked as one (2E, E/H) weight; head h's gates are
    the diagonal blocks of the (H, 2E) result. That is H times the multiply-adds, but one pass
    over the weight bytes, which is what a decode step on AMX waits for.

    The stacked weight is the module's one gate parameter, `gate_weights`; input_gate_weight
    and recurrent_gate_weight are views of it, computed on access, so nothing can make them
    drift apart (a dtype change, a load_state_dict). The state_dict still holds the two under
    their own keys, in the plain order. Other inputs (prefill, more than `amx_rows` rows of
    heads, autograd, another device) take the plain RGLRU.gates through those views. Build it
    with from_rglru."""

    amx_rows = AMX_ROWS

    @classmethod
    def from_rglru(cls, plain: RGLRU, amx_rows: int = AMX_ROWS) -> MatVecRGLRU:
        """`plain` with its gate weights stacked (one copy made; the old tensors are let go)."""
        if type(plain) is cls:
            plain.amx_rows = amx_rows
            return plain
        wx, wa = plain.input_gate_weight, plain.recurrent_gate_weight
        fast = adopt(plain, cls, drop=_GATES)
        with torch.no_grad():  # (2H, out, in) -> (2E, E/H)
            stacked = torch.cat([wx.transpose(1, 2), wa.transpose(1, 2)]).flatten(0, 1)
        fast.gate_weights = nn.Parameter(stacked, requires_grad=wx.requires_grad)
        fast.amx_rows, fast._order = amx_rows, tuple(plain._parameters)
        return fast

    def to_plain(self) -> RGLRU:
        """The plain RGLRU, its gate weights copied out in the plain layout and order."""
        plain = adopt(self, RGLRU, drop=("gate_weights", "amx_rows", "_order"))
        for name in _GATES:
            w = getattr(self, name)
            setattr(plain, name, nn.Parameter(w.detach().contiguous(), requires_grad=w.requires_grad))
        for name in self._order:  # move each to the end, in the plain order
            plain._parameters[name] = plain._parameters.pop(name)
        return plain

    @property
    def input_gate_weight(self) -> torch.Tensor:
        return self._gate_view(0)

    @property
    def recurrent_gate_weight(self) -> torch.Tensor:
        return self._gate_view(1)

    def _gate_view(self, gate: int) -> torch.Tensor:
        n = self.gate_weights.shape[-1]
        return self.gate_weights.view(2, self.heads, n, n)[gate].transpose(1, 2)  # (H, in, out)

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stacked = self.gate_weights
        if not self._stacked_applies(x, stacked):
            return super().gates(x)
        H, E = self.heads, x.shape[-1]
        y = _decode_product(x.reshape(-1, E // H), stacked, None, self.amx_rows)  # a row per
        # (token, head), times every block: (N*H, 2E), through the AMX kernel (rows <= amx_rows)
        y = y.view(-1, H, 2, H, E // H)  # (N, row head, gate, block head, E/H)
        # head h's gates are block h of row h: the (row head, block head) diagonal, as a view
        # (torch.diagonal would do; inductor's lowering of it warns on every compile)
        n, row, gate, block, last = y.stride()  # any layout (torch's W @ x^T gives a transpose)
        gate_x, gate_a = (
            y.as_strided((y.shape[0], 2, H, E // H), (n, gate, row + block, last)).reshape(-1, 2, E).unbind(1)
        )
        return (
            torch.sigmoid(gate_x.reshape(x.shape) + self.input_gate_bias.flatten()),
            torch.sigmoid(gate_a.reshape(x.shape) + self.recurrent_gate_bias.flatten()),
        )

    def _stacked_applies(self, x: torch.Tensor, stacked: torch.Tensor) -> bool:
        """Rows of heads within amx_rows, the weight's dtype, on a CPU, outside autograd."""
        return (
            x.dtype == stacked.dtype
            and x.device.type == "cpu"
            and x.numel() // x.shape[-1] * self.heads <= self.amx_rows
            and not kernels.needs_grad(x, stacked)
        )

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        for name in self._order:
            t = getattr(self, name)
            destination[prefix + name] = t if keep_vars else t.detach()

    def _load_from_state_dict(self, state_dict, prefix, metadata, strict, missing, unexpected, errors):
        keys = {prefix + name: getattr(self, name) for name in _GATES}
        for key, view in keys.items():
            if key not in state_dict:
                missing.extend([key] if strict else [])
            elif state_dict[key].shape != view.shape:
                errors.append(
                    f"size mismatch for {key}: copying a param with shape "
                    f"{tuple(state_dict[key].shape)}, the shape in current model is {tuple(view.shape)}."
                )
            else:
                with torch.no_grad():
                    view.copy_(state_dict[key])  # into the stacked weight
        rest = {k: v for k, v in state_dict.items() if k not in keys}
        super()._load_from_state_dict(rest, prefix, metadata, strict, missing, unexpected, errors)
        if prefix + "gate_weights" in missing:
            missing.remove(prefix + "gate_weights")
