"""int8 weight-only linears: the native and pack kernels equal the dequantized reference, a quantized
model stays close to the float one, and pre-quantized tensors load to the same model."""

import pytest
import torch
from torch import nn

from conftest import random_model, tiny_config
from rgemma import RecurrentGemmaForCausalLM, kernels
from rgemma.accel import configure, quantize
from rgemma.accel.quantize import (
    Int8Linear,
    dequantize_weight,
    load_quantized_state,
    prepare_int8,
    quantize_model,
    quantize_weight,
)
from rgemma.text.generate import prefill


def force(module, kernel: str):
    """`module`'s int8 linears run `kernel` (the other modules in the process are untouched)."""
    return configure(module, int8_kernel=kernel)


def test_quantize_weight_is_the_nearest_grid_point():
    w = torch.randn(48, 64) * torch.logspace(-3, 1, 48)[:, None]
    q, scale = quantize_weight(w)
    assert q.dtype == torch.int8 and q.abs().max() <= 127 and scale.shape == (48,)
    assert (q.abs().amax(1) == 127).all()  # each row uses its whole range
    err = (q.float() * scale[:, None] - w).abs()
    assert (err <= scale[:, None] / 2 + 1e-6).all()


def test_bf16_scales_are_exact():
    """The scale is rounded to bf16 before q is chosen: dequantizing in bf16 adds no error."""
    w = torch.randn(32, 64).to(torch.bfloat16)
    q, scale = quantize_weight(w)
    assert scale.dtype == torch.bfloat16
    err = (q.float() * scale.float()[:, None] - w.float()).abs()
    assert (err <= scale.float()[:, None] / 2 + 1e-6).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_zero_and_tiny_rows_stay_finite(dtype):
    """A zero scale (an all-zero row, or one that underflows in float16) becomes 1: no NaN."""
    w = torch.randn(4, 32)
    w[1], w[2] = 0, 1e-7 * torch.randn(32)
    q, scale = quantize_weight(w.to(dtype))
    assert torch.isfinite(scale).all() and (scale > 0).all() and (q[1] == 0).all()
    assert (dequantize_weight(q, scale) - w.to(dtype).float()).abs().max() <= scale.float().max() / 2


@pytest.mark.parametrize("rows", [1, 3])
def test_pack_kernel_equals_dequantized_reference(rows):
    torch.manual_seed(0)
    linear = nn.Linear(64, 40).to(torch.bfloat16)
    q8 = Int8Linear.from_linear(linear)
    x = torch.randn(rows, 1, 64, dtype=torch.bfloat16)
    force(q8, "dequant")
    ref = q8(x)
    force(q8, "pack")
    out = q8(x)
    assert out.shape == (rows, 1, 40) and out.dtype == torch.bfloat16
    exact = x.float() @ (q8.weight.float() * q8.weight_scale.float()[:, None]).t() + linear.bias.float()
    torch.testing.assert_close(out.float(), exact, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(ref.float(), exact, rtol=2e-2, atol=2e-2)


needs_native = pytest.mark.skipif(
    not kernels.int8_gemv_available(), reason="needs AVX-512 VNNI and a C compiler"
)


@needs_native
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(
    "rows,k_in,n_out,bias",
    [
        (1, 64, 40, True),
        (2, 33, 7, False),
        (3, 100, 5, True),
        (1, 8200, 9, True),
        (1, 200, 17, True),
        (2, 8256, 16, False),
    ],
)
def test_native_kernel_equals_exact_product(dtype, rows, k_in, n_out, bias):
    """Odd widths (masked tails), more outputs than a multiple of 4, K past one 8192 block,
    several rows; within the int16 activation rounding (2^-14 of each row's absmax)."""
    torch.manual_seed(rows * k_in)
    linear = nn.Linear(k_in, n_out, bias=bias).to(dtype)
    q8 = Int8Linear.from_linear(linear)
    x = torch.randn(rows, 1, k_in, dtype=dtype) * torch.logspace(-2, 1, k_in).to(dtype)
    force(q8, "native")
    out = q8(x)
    assert out.shape == (rows, 1, n_out) and out.dtype == dtype
    w = q8.weight.double() * q8.weight_scale.double()[:, None]
    exact = x.double() @ w.t() + (linear.bias.double() if bias else 0)
    bound = x.double().abs().amax(-1, keepdim=True) * 2**-14 * w.abs().sum(1)  # activation rounding
    slack = 1e-2 * exact.abs().max() if dtype == torch.bfloat16 else 1e-5 * exact.abs().max()
    assert ((out.double() - exact).abs() <= bound + slack).all()
    force(q8, "auto")
    if rows <= quantize.NATIVE_MAX_ROWS:
        torch.testing.assert_close(q8(x), out)  # auto picks it for so few rows


@needs_native
def test_native_kernel_reads_and_writes_bf16_as_torch_rounds():
    """bf16 in and out equals the float32 call rounded by torch (nearest-even), bit for bit."""
    torch.manual_seed(1)
    q = torch.randint(-127, 128, (37, 300), dtype=torch.int8)
    x, scale, bias = (torch.randn(n, dtype=torch.bfloat16) for n in ((2, 300), 37, 37))
    out = kernels.int8_gemv(x, q, scale * 0.01, bias)
    assert out.dtype == torch.bfloat16
    ref = kernels.int8_gemv(x.float(), q, (scale * 0.01).float(), bias.float())
    assert ref.dtype == torch.float32 and torch.equal(out, ref.to(torch.bfloat16))


@needs_native
@pytest.mark.parametrize("k_in", [64, 77, 16])
def test_native_kernel_rounds_activations_to_int16_exactly(k_in):
    """The activation rounding, bit for bit: each row scaled by 16383 / absmax in float32 and
    rounded to nearest even (a NaN is skipped by the absmax and counts 0). Weights of -1/0/1
    keep every integer sum exact, so the float32 output is fully determined."""
    torch.manual_seed(k_in)
    x = torch.randn(3, k_in) * torch.logspace(-3, 2, k_in)
    x[1, 5] = float("nan")
    x[2] = torch.arange(k_in) - k_in / 2 + 0.5  # many exact ties after scaling
    q = torch.randint(-1, 2, (40, k_in), dtype=torch.int8)
    scale, bias = torch.rand(40) + 0.5, torch.randn(40)
    out = kernels.int8_gemv(x, q, scale, bias)
    m = x.nan_to_num(0.0).abs().amax(1, keepdim=True)
    s = m / 16383.0
    xq = torch.round(x.nan_to_num(0.0) * (1.0 / s))  # float32, ties to even, as the kernel
    assert (xq.abs() <= 16383).all() and (xq != torch.trunc(xq + 0.5)).any()  # ties exercised
    acc = (xq.double() @ q.double().t()).float()  # exact integers, below 2^24
    t = acc * s  # then the compiler's fused multiply-add: t * scale + bias rounded once
    torch.testing.assert_close(out, (t.double() * scale.double() + bias.double()).float(), rtol=0, atol=0)


@needs_native
def test_native_kernels_take_any_leading_shape_and_refuse_a_mismatch():
    """(..., in) in, (..., out) back, equal to the 2-D call; a width that does not match the
    weight is a ValueError before any native code reads memory."""
    torch.manual_seed(0)
    q, scale = torch.randint(-127, 128, (24, 40), dtype=torch.int8), torch.rand(24)
    x = torch.randn(2, 3, 40, dtype=torch.bfloat16)
    calls = [lambda t: kernels.int8_gemv(t, q, scale)]
    if kernels.amx_available():
        calls.append(lambda t: kernels.amx_linear(t, q, scale))
    for call in calls:
        y = call(x)
        assert y.shape == (2, 3, 24) and torch.equal(y.view(6, 24), call(x.view(6, 40)))
        with pytest.raises(ValueError, match="do not match a weight"):
            call(torch.randn(2, 39, dtype=torch.bfloat16))


@needs_native
def test_native_kernel_does_not_overflow_at_the_extremes():
    """Every activation at its absmax and every weight at 127: the int32 lanes stay in range."""
    k_in = 20000
    q = torch.full((9, k_in), 127, dtype=torch.int8)
    q[1] = -127
    out = kernels.int8_gemv(torch.ones(1, k_in), q, torch.ones(9))
    expected = torch.full((1, 9), 127.0 * k_in)
    expected[0, 1] = -127.0 * k_in
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=0)


def test_native_kernel_builds_once_and_can_be_switched_off(tmp_path, monkeypatch):
    """RGEMMA_NATIVE=0 turns it off; otherwise one cached build serves every later load."""
    monkeypatch.setenv("RGEMMA_NATIVE", "0")
    kernels._library.cache_clear()
    try:
        assert not kernels.int8_gemv_available()
        q8 = Int8Linear.from_linear(nn.Linear(64, 8).to(torch.bfloat16))
        assert q8(torch.randn(1, 64, dtype=torch.bfloat16)).shape == (1, 8)  # torch kernels
        if (
            not kernels._cpu_supported(kernels.KERNELS["int8_gemv"].cpu_flags)
            or kernels.shutil.which("cc") is None
        ):
            return
        monkeypatch.setenv("RGEMMA_NATIVE", "1")
        monkeypatch.setenv("RGEMMA_CACHE", str(tmp_path))
        kernels._library.cache_clear()
        assert kernels.int8_gemv_available()
        built = list((tmp_path / "kernels").iterdir())
        assert len(built) == 1 and built[0].suffix == ".so"  # no temp file left behind
        mtime = built[0].stat().st_mtime_ns
        kernels._library.cache_clear()
        assert kernels.int8_gemv_available() and built[0].stat().st_mtime_ns == mtime
    finally:
        kernels._library.cache_clear()


def test_pack_kernel_is_refused_where_it_would_crash():
    q8 = Int8Linear.from_linear(nn.Linear(40, 8).to(torch.bfloat16))  # 40 % 16 != 0
    force(q8, "pack")
    with pytest.raises(ValueError, match="in_features 40"):
        q8(torch.randn(1, 40, dtype=torch.bfloat16))
    force(q8, "auto")
    assert q8(torch.randn(1, 40, dtype=torch.bfloat16)).shape == (1, 8)  # falls back


def _quantized_pair(dtype=torch.float32):
    model = random_model().to(dtype)
    q = quantize_model(random_model().to(dtype))
    return model, q


def test_quantize_model_swaps_linears_not_embeddings():
    model, q = _quantized_pair()
    assert not any(type(m) is nn.Linear for m in q.modules())
    assert isinstance(q.lm_head, Int8Linear) and type(q.model.embed_tokens) is nn.Embedding
    assert q.model.embed_tokens.weight.dtype == torch.float32
    ids = torch.randint(0, 97, (2, 11))
    ref, out = model(ids).logits, q(ids).logits
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9


needs_amx = pytest.mark.skipif(not kernels.amx_available(), reason="needs AMX and a C compiler")


@needs_amx
@pytest.mark.parametrize(
    "rows,k_in,n_out,bias", [(2, 64, 40, True), (5, 33, 7, False), (33, 100, 70, True), (130, 2600, 33, True)]
)
def test_amx_kernel_equals_exact_int8_product(rows, k_in, n_out, bias):
    """bf16 activations times the int8 weights exactly, scaled in fp32, rounded to bf16 once:
    partial blocks of weight rows, inputs and batch rows, and more than AMX_MAX_ROWS rows."""
    torch.manual_seed(rows * k_in)
    linear = nn.Linear(k_in, n_out, bias=bias).to(torch.bfloat16)
    q8 = Int8Linear.from_linear(linear)
    x = torch.randn(rows, 1, k_in, dtype=torch.bfloat16)
    force(q8, "amx")
    out = q8(x)
    assert out.shape == (rows, 1, n_out) and out.dtype == torch.bfloat16
    exact = (x.double() @ q8.weight.double().t()) * q8.weight_scale.double()
    exact = exact + (linear.bias.double() if bias else 0)
    slack = 1e-6 * k_in * (x.double().abs() @ q8.weight.double().abs().t()) * q8.weight_scale.double()
    assert ((out.double() - exact).abs() <= exact.abs() * 2**-8 + slack).all()
    force(q8, "auto")
    if quantize.NATIVE_MAX_ROWS < rows <= quantize.AMX_MAX_ROWS:
        assert torch.equal(q8(x), out)  # auto picks it for decode batches


@needs_amx
def test_amx_kernel_is_refused_for_float32_activations():
    q8 = Int8Linear.from_linear(nn.Linear(32, 8))
    force(q8, "amx")
    with pytest.raises(ValueError, match="bf16 activations"):
        q8(torch.randn(3, 32))


@pytest.mark.parametrize(
    "name",
    ["pack", "dequant", pytest.param("native", marks=needs_native), pytest.param("amx", marks=needs_amx)],
)
def test_quantized_bf16_decode_equals_its_forward(name):
    """Each kernel path: decode steps of the quantized model equal its own full forward (to
    bf16 noise: the float bf16 model differs by 0.07 at logits of 5 here)."""
    torch.manual_seed(0)
    q = force(quantize_model(random_model(tiny_config_16()).to(torch.bfloat16)), name)
    ids = torch.randint(0, 97, (1, 9))
    full = q(ids).logits.float()
    logits, state = prefill(q, ids[:, :5])
    active = torch.ones(1, dtype=torch.bool)
    with torch.no_grad():
        for t in range(5, 9):
            torch.testing.assert_close(logits.float(), full[:, t - 1], rtol=0, atol=0.2)  # bf16
            logits = q.decode_step(ids[:, t], active, state)


def tiny_config_16():
    return tiny_config(hidden_size=32, lru_width=48, intermediate_size=64)  # widths % 16 == 0


def test_load_quantized_state_rebuilds_the_same_model():
    _, q = _quantized_pair()
    tensors = {
        k: v
        for k, v in q.state_dict().items()
        if k.rpartition(".")[0] in quantize.quantized_names(q.state_dict())
    }
    fresh = random_model(seed=5)
    used = load_quantized_state(fresh, tensors)
    assert used == set(tensors)
    for name, t in q.state_dict().items():
        if name in tensors:
            assert torch.equal(fresh.state_dict()[name], t), name
    ids = torch.randint(0, 97, (1, 7))
    assert isinstance(fresh.lm_head, Int8Linear)
    torch.testing.assert_close(fresh.lm_head(torch.ones(1, 32)), q.lm_head(torch.ones(1, 32)))
    assert fresh(ids).logits.shape == (1, 7, 97)


def test_prepare_int8_on_the_meta_device_takes_a_state_dict():
    _, q = _quantized_pair()
    names = quantize.quantized_names(q.state_dict())
    with torch.device("meta"):
        empty = RecurrentGemmaForCausalLM(q.config)
    prepare_int8(empty, names, torch.float32)
    assert empty.lm_head.weight.dtype == torch.int8 and empty.lm_head.weight.is_meta
    empty.load_state_dict(q.state_dict(), assign=True)
    ids = torch.randint(0, 97, (1, 6))
    torch.testing.assert_close(empty(ids).logits, q(ids).logits)


def test_bad_quantized_tensors_are_named():
    model = random_model()
    bad = {"lm_head.weight": torch.zeros(97, 32), "lm_head.weight_scale": torch.ones(97)}
    with pytest.raises(ValueError, match="lm_head.weight must be int8"):
        load_quantized_state(model, bad)
    bad = {"lm_head.weight": torch.zeros(97, 32, dtype=torch.int8), "lm_head.weight_scale": torch.ones(3)}
    with pytest.raises(ValueError, match="weight_scale"):
        load_quantized_state(model, bad)
    with pytest.raises(ValueError, match="not an nn.Linear"):
        prepare_int8(model, ["model.embed_tokens"])
    with pytest.raises(ValueError, match="method"):
        quantize_model(model, method="int4")


def test_int8_export_loads_directly(tmp_path):
    """`rgemma convert --quantize int8` output loads with from_pretrained as Int8Linears."""
    from conftest import random_model
    from rgemma import RecurrentGemmaForCausalLM
    from rgemma.accel.quantize import Int8Linear
    from rgemma.convert.pipeline import convert

    model = random_model()
    model.save_pretrained(tmp_path / "fp")
    convert(tmp_path / "fp", tmp_path / "q", quantize="int8", progress=False)
    q = RecurrentGemmaForCausalLM.from_pretrained(tmp_path / "q")
    assert isinstance(q.model.layers[0].temporal_block.linear_x, Int8Linear)
    assert q.lm_head.weight is q.model.embed_tokens.weight
    ids = torch.randint(0, 97, (2, 12))
    ref, got = model(ids).logits, q(ids).logits
    assert (ref - got).abs().max() < 0.05 * ref.abs().max()
    assert (ref.argmax(-1) == got.argmax(-1)).float().mean() > 0.9


def test_perplexity_delta_scores_every_int8_kernel(tmp_path):
    """The bench's int8 perplexity check on the bundled model: each kernel that loads is scored,
    and int8 weight-only quantization barely moves perplexity (+0.015% on 38k held-out tokens)."""
    import json

    from rgemma import bundled_model_dir
    from rgemma.bench.harness import perplexity_delta

    data = tmp_path / "docs.jsonl"
    data.write_text(
        "".join(
            json.dumps({"text": t}) + "\n"
            for t in (
                "Once upon a time there was a little cat who liked to play in the sun.",
                "The boy saw a big red ball. He ran to get it and laughed.",
            )
        )
    )
    result = perplexity_delta(bundled_model_dir(), data, max_docs=2)
    kernels_scored = ["auto"] + [
        k for k, ok in (("native", kernels.int8_gemv_available()), ("amx", kernels.amx_available())) if ok
    ]
    for k in kernels_scored:
        suffix = "" if k == "auto" else f"_{k}"
        assert abs(result[f"relative_change{suffix}"]) < 0.05  # two short documents
        assert result[f"logits{suffix}"]["top1_agreement"] > 0.9
    assert result["tokens"] > 20 and result["perplexity"] > 1


@pytest.mark.parametrize("rows", [1, 8, 40])
def test_compiled_linears_keep_their_kernels_in_one_graph(rows):
    """Under torch.compile each decode linear is one opaque op (rgemma::decode_linear,
    rgemma::int8_linear) in a single graph (fullgraph=True fails on a break), running the same
    kernels as eager, so the results are equal; with autograd on, the plain code is traced."""
    from rgemma.accel.linears import MatVecLinear

    torch.manual_seed(rows)
    dense = nn.Linear(64, 48).to(torch.bfloat16)
    q8 = Int8Linear.from_linear(dense)
    dense = MatVecLinear.from_linear(dense)
    x = torch.randn(rows, 64, dtype=torch.bfloat16)
    for layer, op in ((dense, torch.ops.rgemma.decode_linear), (q8, torch.ops.rgemma.int8_linear)):
        seen = []

        def backend(gm, inputs, seen=seen):
            seen.extend(node.target for node in gm.graph.nodes)
            return gm

        torch._dynamo.reset()
        with torch.no_grad():
            compiled = torch.compile(layer, backend=backend, fullgraph=True)(x)
            assert torch.equal(compiled, layer(x))
        assert op in seen
        seen.clear()
        torch._dynamo.reset()
        torch.compile(layer, backend=backend, fullgraph=True)(x.requires_grad_())
        assert op not in seen and seen
        x = x.detach()
