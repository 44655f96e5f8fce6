"""Fast paths are chosen per model, by configure: two models in one process run different
scans, attentions, linears and int8 kernels at the same time, each through its own path;
acceleration keeps the state_dict; configure(model, PLAIN) gives back the plain model."""

import pytest
import torch
from torch import nn

from conftest import random_model, tiny_config
from rgemma.accel import PLAIN, Accel, accel_of, choices, configure, crossover, linears, speed
from rgemma.accel.compile import CompiledBlock
from rgemma.accel.linears import MatVecLinear, MatVecRGLRU
from rgemma.accel.quantize import quantize_model
from rgemma.models.griffin import RGLRU, attend_ref, attend_sdpa, tanh_fp32
from rgemma.ops.scan import rnn_scan_fast, rnn_scan_ref
from rgemma.text.generate import prefill


def _spy(calls: list, name: str, fn):
    return lambda *args: calls.append(name) or fn(*args)


def _paths(model, ids, calls: list) -> set:
    calls.clear()
    with torch.no_grad():
        model(ids)
    return set(calls)


def test_two_models_run_their_own_scan_and_attention_at_once(monkeypatch):
    calls = []
    monkeypatch.setattr(choices, "rnn_scan_ref", _spy(calls, "scan ref", rnn_scan_ref))
    monkeypatch.setattr(choices, "rnn_scan_fast", _spy(calls, "scan fast", rnn_scan_fast))
    monkeypatch.setitem(choices.ATTENTIONS, "ref", _spy(calls, "attend ref", attend_ref))
    monkeypatch.setitem(choices.ATTENTIONS, "sdpa", _spy(calls, "attend sdpa", attend_sdpa))
    ids = torch.randint(0, 97, (2, 9))
    ref = random_model()(ids).logits
    a = configure(random_model(), scan="ref", attention="sdpa")
    b = configure(random_model(), scan="fast", attention="ref")
    for _ in range(2):  # interleaved: neither choice leaks into the other model
        assert _paths(a, ids, calls) == {"scan ref", "attend sdpa"}
        assert _paths(b, ids, calls) == {"scan fast", "attend ref"}
    torch.testing.assert_close(a(ids).logits, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b(ids).logits, ref, rtol=1e-5, atol=1e-5)


def test_two_models_run_their_own_linears_at_once(monkeypatch):
    calls = []
    monkeypatch.setattr(linears, "decode_linear", _spy(calls, "matvec", linears.decode_linear))
    plain, fast = (
        random_model().to(torch.bfloat16),
        configure(random_model().to(torch.bfloat16), linears="matvec"),
    )
    assert type(plain.lm_head) is nn.Linear and type(fast.lm_head) is MatVecLinear
    _, state = prefill(plain, torch.randint(0, 97, (1, 5)))
    ids, active = torch.tensor([7]), torch.ones(1, dtype=torch.bool)
    with torch.no_grad():
        calls.clear()
        ref = plain.decode_step(ids, active, state.clone())
        assert calls == []
        out = fast.decode_step(ids, active, state.clone())
    products = (MatVecLinear, MatVecRGLRU)  # the stacked RG-LRU gates where the CPU has AMX
    assert len(calls) == sum(isinstance(m, products) for m in fast.modules())
    torch.testing.assert_close(out.float(), ref.float(), rtol=0, atol=0.1)


def test_two_int8_models_run_their_own_kernel_at_once(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "_weight_int8pack_mm", _spy(calls, "pack", torch._weight_int8pack_mm))
    config = tiny_config(hidden_size=32, lru_width=48, intermediate_size=64)  # widths % 16 == 0
    pack = configure(quantize_model(random_model(config).to(torch.bfloat16)), int8_kernel="pack")
    dequant = configure(quantize_model(random_model(config).to(torch.bfloat16)), int8_kernel="dequant")
    ids = torch.randint(0, 97, (1, 6))
    for _ in range(2):
        assert _paths(pack, ids, calls) == {"pack"}
        assert _paths(dequant, ids, calls) == set()
    torch.testing.assert_close(
        pack(ids).logits.float(), dequant(ids).logits.float(), rtol=0, atol=0.2
    )  # bf16


def _everything(monkeypatch) -> Accel:
    """Every choice away from the plain model; the stacked RG-LRU gates too (on any CPU: they
    then run through torch's product)."""
    monkeypatch.setattr(choices, "_stacking_pays", lambda rg_lru, accel: True)
    return Accel(
        scan="ref", attention="ref", linears="matvec", amx_rows=8, compile=True, compile_backend="aot_eager"
    )


def test_acceleration_keeps_the_state_dict_and_plain_gives_the_model_back(monkeypatch):
    model = random_model().to(torch.bfloat16)
    plain_types = [type(m) for m in model.modules()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 97, (2, 9))
    ref = model(ids).logits
    torch._dynamo.reset()
    configure(model, _everything(monkeypatch))
    assert isinstance(model.model.layers[0], CompiledBlock)
    assert isinstance(model.model.layers[0].temporal_block.rg_lru, MatVecRGLRU)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], v) for k, v in before.items())
    torch.testing.assert_close(model(ids).logits.float(), ref.float(), rtol=0, atol=0.1)
    _, state = prefill(model, ids)
    with torch.no_grad():
        model.decode_step(ids[:, 0], torch.ones(2, dtype=torch.bool), state)  # compiled, stacked
    assert configure(model, PLAIN) is model and accel_of(model) == PLAIN
    assert [type(m) for m in model.modules()] == plain_types
    assert list(model.state_dict()) == list(before)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert all(m.scan is rnn_scan_fast for m in model.modules() if isinstance(m, RGLRU))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert torch.equal(model(ids).logits, ref)


def test_configure_keeps_earlier_choices_and_names_a_bad_one():
    model = configure(random_model(), scan="ref")
    configure(model, attention="ref")
    assert accel_of(model) == Accel(scan="ref", attention="ref")
    assert all(m.scan is rnn_scan_ref for m in model.modules() if isinstance(m, RGLRU))
    for bad, field in (
        ({"scan": "magic"}, "scan"),
        ({"int8_kernel": "fp4"}, "int8_kernel"),
        ({"amx_rows": -1}, "amx_rows"),
        ({"native_rows": 1.5}, "native_rows"),
        ({"prefill": "fp16"}, "prefill"),
        ({"soft_cap": "fp64"}, "soft_cap"),
    ):
        with pytest.raises(ValueError, match=field):
            configure(model, **bad)
    assert accel_of(model) == Accel(scan="ref", attention="ref")  # a refused choice changes nothing


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_soft_cap_tanh_gives_the_same_logits(dtype):
    """ "fp32", "dtype" and "auto" are speed choices only: logits and decode steps are equal."""
    model = random_model(tiny_config(logits_soft_cap=3.0)).to(dtype)  # a small cap: tanh matters
    ids = torch.randint(0, 97, (3, 9))
    outs = []
    for choice in ("fp32", "dtype", "auto"):
        configure(model, soft_cap=choice)
        with torch.no_grad():
            logits, state = prefill(model, ids)
            step = model.decode_step(ids[:, 0], torch.ones(3, dtype=torch.bool), state)
        outs.append((model(ids).logits, logits, step))
    assert model.tanh in (tanh_fp32, torch.tanh)
    for other in outs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(outs[0], other))
    configure(model, PLAIN)
    assert model.tanh is tanh_fp32


@pytest.mark.parametrize(("widened", "native", "want"), [(1.0, 2.0, "fp32"), (2.0, 1.0, "dtype")])
def test_auto_takes_the_tanh_measured_faster(monkeypatch, widened, native, want):
    monkeypatch.setattr(crossover, "_race", lambda a, b: (a(), b()) and (widened, native))
    crossover._faster_tanh.cache_clear()
    try:
        model = configure(random_model().to(torch.bfloat16), soft_cap="auto")
        assert model.tanh is choices.TANHS[want]
        assert crossover.faster_tanh(torch.float32) == "fp32"  # one path in float32
    finally:
        crossover._faster_tanh.cache_clear()


def test_optimize_picks_the_soft_cap_on_cpus():
    model = random_model()
    assert accel_of(model).soft_cap == "fp32"
    assert speed.cli_accel(model).soft_cap == "auto"
