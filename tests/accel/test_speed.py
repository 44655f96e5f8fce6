"""The decode step and every speed switch equal the plain forward (values and state).

- model.decode_step (no validation, no host sync, state storage kept) == forward(T=1);
- step_tokens == positions.make_tokens for one token per row;
- MatVecLinear (mv / W @ x^T / F.linear by row count) == nn.Linear, values and gradients;
  MatVecRGLRU's stacked gates == RGLRU's;
- StaticDecodeStep (fixed buffers; a CUDA graph on a GPU) == decode_step;
- configure(compile=True) == decode_step (traced with the aot_eager backend: inductor's C++
  build takes minutes on a small CPU; RGEMMA_SLOW_TESTS=1 runs it too);
- the benchmark's roofline counts and a tiny in-process run.
"""

import copy
import os

import pytest
import torch

from conftest import random_model, tiny_config
from rgemma import State, kernels
from rgemma.accel import PLAIN, configure, linears, process, speed
from rgemma.accel.compile import CompiledBlock, StaticDecodeStep
from rgemma.accel.linears import AMX_ROWS, NATIVE_ROWS, SMALL_BATCH_ROWS, MatVecLinear, MatVecRGLRU
from rgemma.bench import harness as bench
from rgemma.bench.harness import decode_flops, linear_params, prefill_flops, run_bench
from rgemma.bench.report import format_table
from rgemma.models.config import RecurrentGemmaConfig
from rgemma.models.griffin import RGLRU, ResidualBlock
from rgemma.models.positions import make_tokens, step_tokens
from rgemma.text.generate import prefill


def _prefilled(model, B=3, T=9, seed=0):
    """A state after a left-padded prompt, with one row restarted at position 0 mid-way."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 97, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, :4] = 0
    logits, state = prefill(model, ids, mask)
    state.next_pos[2] = 0  # row 2's next token starts a new document
    return logits, state


def _steps(g, B, n):
    ids = torch.randint(0, 97, (n, B), generator=g)
    active = torch.rand(n, B, generator=g) > 0.25
    return ids, active


def test_step_tokens_equal_make_tokens(config):
    model = random_model()
    _, state = _prefilled(model)
    active = torch.tensor([True, False, True])
    ours = step_tokens(state, active)
    ref = make_tokens(config, 3, 1, torch.device("cpu"), active[:, None].long(), None, state)
    for name in ("pos", "real", "reset", "count", "doc_start", "count0", "n_pad"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), msg=name)
    assert ours.has_state


def test_decode_step_equals_forward_across_the_window():
    model = random_model()
    _, state = _prefilled(model)
    ref_state = state.clone()
    ptrs = [t.data_ptr() for t in state.tensors().values()]
    ids, active = _steps(torch.Generator().manual_seed(1), 3, 12)  # window is 6: wraps twice
    for tok, act in zip(ids, active):
        with torch.no_grad():
            logits = model.decode_step(tok, act, state)
            ref = model(tok[:, None], attention_mask=act[:, None].long(), cache=ref_state).logits[:, -1]
        torch.testing.assert_close(logits[act], ref[act], rtol=1e-5, atol=1e-5)
    for name, t in state.tensors().items():
        torch.testing.assert_close(t, ref_state.tensors()[name], rtol=1e-5, atol=1e-5, msg=name)
    assert [t.data_ptr() for t in state.tensors().values()] == ptrs  # updated in place


def test_decode_step_equals_full_forward():
    model = random_model(tiny_config(block_types=("attention", "recurrent")))
    ids = torch.randint(0, 97, (2, 15))
    full = model(ids).logits
    logits, state = prefill(model, ids[:, :3])
    active = torch.ones(2, dtype=torch.bool)
    with torch.no_grad():
        for t in range(3, 15):
            torch.testing.assert_close(logits, full[:, t - 1], rtol=1e-5, atol=1e-5)
            logits = model.decode_step(ids[:, t], active, state)


def _run_steps(model, state, ids, active, step=None):
    """The logits of `model.decode_step` (or `step`) over ids, active: (n, B) each."""
    step = step or model.decode_step
    with torch.no_grad():
        return torch.stack([step(t, a, state).clone() for t, a in zip(ids, active)])


def test_static_decode_step_equals_plain_step():
    model = random_model()
    _, state = _prefilled(model)
    other = state.clone()
    ids, active = _steps(torch.Generator().manual_seed(2), 3, 8)
    ref = _run_steps(model, other.clone(), ids, active)
    step = StaticDecodeStep(model)
    torch.testing.assert_close(_run_steps(model, state, ids, active, step), ref)
    torch.testing.assert_close(_run_steps(model, other, ids, active, step), ref)  # rebinds


@pytest.mark.parametrize("int8", [False, True])
def test_compiled_bf16_decode_step_keeps_the_native_linears(int8, kernel_level):
    """What `--compile` runs on a CPU: a bf16 model with speed.optimize's linears (int8 too)
    traced whole (fullgraph), each linear an rgemma:: op; its steps equal the eager ones, at
    every kernel level (the RG-LRU gates stacked where an AMX or FMA kernel runs)."""

    model = random_model().to(torch.bfloat16)
    speed.optimize(model, quantize="int8" if int8 else None)
    _, state = _prefilled(model)
    ref_state = state.clone()
    ids, active = _steps(torch.Generator().manual_seed(4), 3, 4)
    ref = _run_steps(model, ref_state, ids, active)
    ops = []

    def backend(gm, inputs):
        ops.extend(str(node.target) for node in gm.graph.nodes if node.op == "call_function")
        return gm

    torch._dynamo.reset()
    step = torch.compile(model.decode_step, backend=backend, fullgraph=True)
    torch.testing.assert_close(_run_steps(model, state, ids, active, step), ref, rtol=0, atol=0)
    linears = sum(1 for m in model.modules() if hasattr(m, "out_features"))
    gates = sum(1 for m in model.modules() if isinstance(m, MatVecRGLRU))  # one product per RG-LRU
    assert gates == (
        len(model.config.layers_block_type) - model.config.layers_block_type.count("attention")
        if kernel_level != "none"
        else 0
    )
    counts = {op: sum(op in name for name in ops) for op in ("rgemma.int8_linear", "rgemma.decode_linear")}
    assert counts == (
        {"rgemma.int8_linear": linears, "rgemma.decode_linear": gates}
        if int8
        else {"rgemma.int8_linear": 0, "rgemma.decode_linear": linears + gates}
    )


def test_decode_step_writes_each_ring_before_reading_it():
    """The attention step reads only the displaced slot of a K/V ring, then writes the new
    key in place, then attends over the ring: with no read of the old ring after the write,
    torch.compile keeps the write in place instead of copying every ring each step."""
    from torch.utils._python_dispatch import TorchDispatchMode

    model = random_model()
    _, state = _prefilled(model)
    rings = {
        t.untyped_storage().data_ptr(): name
        for name, t in state.tensors().items()
        if name.endswith((".k", ".v"))
    }
    assert len(rings) == 2 * model.config.layers_block_type.count("attention")
    events = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            for a in args:
                if isinstance(a, torch.Tensor) and a.untyped_storage().data_ptr() in rings:
                    events.append((rings[a.untyped_storage().data_ptr()], func.__name__.split(".")[0]))
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Record():
        model.decode_step(torch.tensor([5, 6, 7]), torch.tensor([True, False, True]), state)
    for name in set(rings.values()):
        ops = [
            op
            for ring, op in events
            if ring == name and op not in ("view", "transpose", "select", "expand", "t", "alias")
        ]
        write = ops.index("index_put_")
        assert set(ops[:write]) == {"index"}, (name, ops)  # only the displaced key is read first
        assert any(op in ("bmm", "mm", "matmul") for op in ops[write:]), (name, ops)


def test_compiled_step_compiles_one_graph_per_block_kind_and_leaves_prefill_eager():
    """configure(compile=True) compiles a block's one-token call: blocks of one kind share a
    graph (the tiny model: two, recurrent and attention, for four blocks), a new batch size
    compiles again, and prefill and the plain model again bring no compilation."""
    model = random_model()
    graphs = []

    def backend(gm, inputs):
        graphs.append(gm)
        return gm

    torch._dynamo.reset()
    configure(model, compile=True, compile_backend=backend)
    try:
        _, state = _prefilled(model)  # multi-token calls: eager
        assert graphs == []
        ids, active = _steps(torch.Generator().manual_seed(5), 3, 3)
        _run_steps(model, state, ids, active)
        kinds = set(model.config.layers_block_type)
        assert len(graphs) == len(kinds) == 2 and len(model.model.layers) == 4
        _, state4 = _prefilled(model, B=4)
        ids4, active4 = _steps(torch.Generator().manual_seed(6), 4, 2)
        _run_steps(model, state4, ids4, active4)
        assert len(graphs) == 4  # batch 4: each kind once more
    finally:
        configure(model, PLAIN)
    assert all(type(b) is ResidualBlock for b in model.model.layers)
    _run_steps(model, state, ids, active)
    assert len(graphs) == 4


def test_static_decode_step_refuses_a_cuda_graph_on_cpu():
    with pytest.raises(ValueError, match="CUDA"):
        StaticDecodeStep(random_model(), cuda_graph=True)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_decode_step_equals_eager(backend):
    if backend == "inductor" and not os.environ.get("RGEMMA_SLOW_TESTS"):
        pytest.skip("inductor compiles C++ for minutes on a small CPU; set RGEMMA_SLOW_TESTS=1")
    model = random_model()
    _, state = _prefilled(model)
    ref_state = state.clone()
    ids, active = _steps(torch.Generator().manual_seed(3), 3, 5)
    ref = _run_steps(model, ref_state, ids, active)
    configure(model, compile=True, compile_backend=backend)
    torch.testing.assert_close(_run_steps(model, state, ids, active), ref, rtol=1e-5, atol=1e-5)
    for name, t in state.tensors().items():
        torch.testing.assert_close(t, ref_state.tensors()[name], rtol=1e-5, atol=1e-5, msg=name)


def test_generate_with_a_compiled_step_is_unchanged():
    model = random_model()
    prompt = torch.randint(0, 97, (2, 5))
    ref = model.generate(prompt, max_new_tokens=10, eos_token_id=[])
    torch._dynamo.reset()
    configure(model, compile=True, compile_backend="aot_eager")
    assert torch.equal(model.generate(prompt, max_new_tokens=10, eos_token_id=[]), ref)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 0.1)])
def test_sdpa_attention_equals_the_reference(dtype, tol):
    """Padding, a document restart, and a second chunk over the ring, through both kernels."""
    model = random_model().to(dtype)
    ids = torch.randint(0, 97, (2, 20))
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[0, :5] = 0
    pos = (mask.cumsum(1) - 1).clamp_min(-1)
    pos[1, 12:] = torch.arange(8)
    outs = []
    for impl in ("ref", "sdpa"):
        configure(model, attention=impl)
        out = model(ids[:, :9], attention_mask=mask[:, :9], position_ids=pos[:, :9], use_cache=True)
        more = model(ids[:, 9:], attention_mask=mask[:, 9:], position_ids=pos[:, 9:], cache=out.cache).logits
        outs.append(torch.cat([out.logits, more], 1).float() * mask[..., None])
    assert outs[1].isfinite().all()
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=tol)
    with pytest.raises(ValueError, match="attention"):
        configure(model, attention="flash")


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 0.1)])
def test_matvec_linears_equal_f_linear(dtype, tol):
    model = random_model().to(dtype)
    _, state = prefill(model, torch.randint(0, 97, (1, 9)))  # one row: addmv
    ids, active = torch.randint(0, 97, (4, 1)), torch.ones(4, 1, dtype=torch.bool)
    ref = _run_steps(model, state.clone(), ids, active)
    short, long = torch.randint(0, 97, (2, 7)), torch.randint(0, 97, (2, 70))
    short_ref, long_ref = model(short).logits, model(long).logits
    configure(model, linears="matvec")
    try:
        assert type(model.lm_head) is MatVecLinear
        out = _run_steps(model, state.clone(), ids, active)
        torch.testing.assert_close(out.float(), ref.float(), rtol=0, atol=tol)
        # 14 rows: W @ x^T; 140 rows (> SMALL_BATCH_ROWS): F.linear, bit for bit
        torch.testing.assert_close(model(short).logits.float(), short_ref.float(), rtol=0, atol=tol)
        torch.testing.assert_close(model(long).logits, long_ref)
        assert set(model.state_dict()) == set(random_model().state_dict())
    finally:
        configure(model, PLAIN)
    assert type(model.lm_head) is torch.nn.Linear


@pytest.mark.parametrize("k_in", [24, 37])
@pytest.mark.parametrize("bias", [True, False])
def test_matvec_linear_one_bf16_row_equals_exact_product(k_in, bias):
    """One bf16 row through torch.mv accumulates in float32 and rounds once, so it agrees with
    the exact product to one bf16 rounding."""
    torch.manual_seed(k_in)
    layer = MatVecLinear.from_linear(torch.nn.Linear(k_in, 40, bias=bias).to(torch.bfloat16))
    x = torch.randn(1, 1, k_in, dtype=torch.bfloat16)
    with torch.no_grad():
        y = layer(x)
    exact = x.double() @ layer.weight.double().t() + (layer.bias.double() if bias else 0)
    assert y.shape == (1, 1, 40) and y.dtype == torch.bfloat16
    assert ((y.double() - exact).abs() <= exact.abs() * 2**-8 + 1e-6).all()


@pytest.mark.skipif(not kernels.amx_available(), reason="needs AMX and a C compiler")
@pytest.mark.parametrize(
    "rows,k_in,n_out",
    [(1, 24, 40), (2, 24, 40), (5, 37, 33), (16, 100, 64), (16, 2600, 70), (AMX_ROWS, 300, 50)],
)
@pytest.mark.parametrize("bias", [True, False])
def test_matvec_linear_amx_rows_equal_exact_product(rows, k_in, n_out, bias):
    """1..AMX_ROWS bf16 rows through the AMX kernel: fp32 sums rounded once, like torch's GEMM
    (odd widths and a partial last block of weight rows and inputs)."""
    torch.manual_seed(rows * k_in)
    layer = MatVecLinear.from_linear(torch.nn.Linear(k_in, n_out, bias=bias).to(torch.bfloat16))
    torch_layer = MatVecLinear.from_linear(copy.deepcopy(layer), amx_rows=0)
    x = torch.randn(rows, 1, k_in, dtype=torch.bfloat16)
    with torch.no_grad():
        y, torch_y = layer(x), torch_layer(x)
    exact = x.double() @ layer.weight.double().t() + (layer.bias.double() if bias else 0)
    assert y.shape == (rows, 1, n_out) and y.dtype == torch.bfloat16
    slack = 1e-6 * k_in * (x.double().abs() @ layer.weight.double().abs().t())  # fp32 sums
    assert ((y.double() - exact).abs() <= exact.abs() * 2**-8 + slack).all()
    torch.testing.assert_close(y, torch_y, rtol=2**-7, atol=1e-2)


@pytest.mark.skipif(not kernels.amx_available(), reason="needs AMX and a C compiler")
@pytest.mark.parametrize("rows", [3, 17, 40])
def test_amx_kernel_rounds_to_nearest_even_once(rows):
    """Small integer inputs make every fp32 sum exact, so the kernel's bf16 output must be
    exactly the exact result rounded to nearest even (ties included), bias added before
    rounding, for every batch tile, weight block and partial edge; NaN stays NaN."""
    torch.manual_seed(rows)
    x = torch.randint(-60, 61, (rows, 6)).to(torch.bfloat16)
    w = torch.randint(-60, 61, (50, 6)).to(torch.bfloat16)
    bias = torch.randint(-200, 201, (50,)).to(torch.bfloat16)
    x[rows // 2, 1] = float("nan")
    y = kernels.amx_linear(x, w, None, bias)
    sums = x.double() @ w.double().t() + bias.double()
    exact = sums.to(torch.bfloat16)
    assert (exact.double() != sums).sum() > 10  # the test does exercise rounding
    assert torch.equal(y.isnan(), exact.isnan()) and y.isnan()[rows // 2].all()
    assert torch.equal(y.nan_to_num(), exact.nan_to_num())


def _rg_lru(heads=4, width=48, seed=0):
    config = tiny_config(num_attention_heads=heads, lru_width=width, hidden_size=8 * heads)
    torch.manual_seed(seed)
    layer = RGLRU(config).to(torch.bfloat16)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    return layer


@pytest.mark.parametrize("heads,width", [(4, 48), (10, 70), (1, 33)])
def test_matvec_rglru_gates_are_one_product(heads, width, kernel_level, monkeypatch):
    """Both gates of up to stack_limit rows of heads (amx_rows with AMX, native_rows with the FMA
    kernels, none at level "none") come from one product, with the plain gates' values (fp32
    sums rounded once, then the bias and the sigmoid in bf16); more rows, and inputs that need
    gradients, take the plain gates."""
    plain = _rg_lru(heads, width)
    fast = MatVecRGLRU.from_rglru(copy.deepcopy(plain))
    limits = {"none": 0, "amx": AMX_ROWS}
    assert fast.stack_limit == limits.get(kernel_level, NATIVE_ROWS)
    calls = []
    product = linears.decode_linear
    monkeypatch.setattr(linears, "decode_linear", lambda *a: calls.append(a[1].shape) or product(*a))
    fits = max(fast.stack_limit // heads, 1)
    for batch, tokens in ((1, 1), (fits, 1), (1, fits), (fits + 1, 1)):
        x = torch.randn(batch, tokens, width, dtype=torch.bfloat16)
        calls.clear()
        with torch.no_grad():
            ours, ref = fast.gates(x), plain.gates(x)
        stacked = batch * tokens * heads <= fast.stack_limit
        assert calls == ([(2 * width, width // heads)] if stacked else [])
        for o, r in zip(ours, ref):
            assert o.shape == r.shape == x.shape
            torch.testing.assert_close(o, r, rtol=0, atol=2**-8)  # at most a bf16 ulp apart
    x = torch.randn(1, 1, width, dtype=torch.bfloat16, requires_grad=True)
    calls.clear()
    fast.gates(x)[0].sum().backward()
    assert calls == [] and x.grad is not None


def test_matvec_rglru_holds_one_gate_weight_behind_the_plain_state_dict():
    """The stacked weight is the one gate parameter and the two gate weights are views of it:
    the state_dict (keys, order, values) is the plain one; loading new weights reaches the
    stacked weight, and so does a dtype change (the stacked gates then run in float32);
    to_plain gives back an RGLRU equal to the one it came from."""
    plain = _rg_lru()
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    fast = MatVecRGLRU.from_rglru(copy.deepcopy(plain))
    assert [n for n, _ in fast.named_parameters()] == [
        "recurrent_param",
        "input_gate_bias",
        "recurrent_gate_bias",
        "gate_weights",
    ]
    after = fast.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], v) for k, v in before.items())
    other = _rg_lru(seed=1)
    fast.load_state_dict(other.state_dict())
    x = torch.randn(2, 1, 48, dtype=torch.bfloat16)
    with torch.no_grad():
        for o, r in zip(fast.gates(x), other.gates(x)):
            torch.testing.assert_close(o, r, rtol=0, atol=2**-8)
        fast.float()
        for o, r in zip(fast.gates(x.float()), copy.deepcopy(other).float().gates(x.float())):
            torch.testing.assert_close(o, r)
    with pytest.raises(RuntimeError, match="size mismatch"):
        fast.load_state_dict({**other.state_dict(), "input_gate_weight": torch.zeros(4, 12, 11)})
    back = fast.to_plain()
    assert type(back) is RGLRU and list(back.state_dict()) == list(before)
    for k, v in other.float().state_dict().items():
        assert torch.equal(back.state_dict()[k], v) and back.state_dict()[k].is_contiguous(), k


@pytest.mark.parametrize("rows", [1, 2, 5, SMALL_BATCH_ROWS, SMALL_BATCH_ROWS + 1])
@pytest.mark.parametrize("bias", [True, False])
def test_matvec_linear_values_and_gradients(rows, bias):
    torch.manual_seed(rows)
    ref = torch.nn.Linear(24, 40, bias=bias)
    fast = MatVecLinear.from_linear(copy.deepcopy(ref))
    x = torch.randn(rows, 1, 24, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y_ref, y = ref(x), fast(x2)
    assert y.shape == (rows, 1, 40)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    y_ref.square().sum().backward()
    y.square().sum().backward()
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-5)


def test_set_threads():
    n = torch.get_num_threads()
    try:
        assert process.set_threads(1) == 1
        assert process.set_threads(None) == 1
    finally:
        torch.set_num_threads(n)
    with pytest.raises(ValueError, match="threads"):
        process.set_threads(0)


# --------------------------------------------------------------------------- the benchmark
def test_roofline_counts_match_the_2b_parameter_count():
    config = RecurrentGemmaConfig.from_preset("recurrentgemma-2b")
    with torch.device("meta"):
        from rgemma import RecurrentGemmaForCausalLM

        model = RecurrentGemmaForCausalLM(config)
    embed = config.vocab_size * config.hidden_size
    vectors = sum(p.numel() for n, p in model.named_parameters() if p.ndim == 1 or "bias" in n)
    # every weight matrix (and the conv taps) is in linear_params, nothing else
    assert linear_params(config) == model.num_parameters() - embed - vectors
    W = config.attention_window_size
    assert prefill_flops(config, 1) == 2 * linear_params(config) + 8 * 4 * 2560  # one key
    assert decode_flops(config, 2, 10**6) == 2 * decode_flops(config, 1, W)  # window-bound


def test_bench_runs_in_process(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "MIN_CPU", 0.0)  # never wait for a busy machine here
    report = run_bench(
        shapes=("tiny",),
        impls=("rgemma", "rgemma-int8"),
        measures=("prefill", "decode", "position"),
        prefill=(32,),
        batches=(2,),
        positions=(20,),
        steps=2,
        reps=1,
        threads=1,
        cache_dir=tmp_path,
        isolate=False,
        out=tmp_path / "r.json",
        log=open(os.devnull, "w"),
    )
    timed = [r for r in report["results"] if r["measure"] != "int8-error"]
    assert len(timed) == 6
    for r in timed:
        assert "error" not in r, r
        assert r["tok_s"] > 0 and r["peak_rss_mb"] > 0
    quant = [r for r in report["results"] if r["measure"] == "int8-error"]
    assert len(quant) == 1 and 0 < quant[0]["max_abs"] < 0.1 * quant[0]["ref_max_abs"]
    assert (tmp_path / "r.json").is_file()
    # what ran: the CPU's features and kernel level on top, the kernel beside each figure
    assert report["machine"]["kernel_level"] == kernels.level()
    assert report["machine"]["cpu_features"] == list(kernels.cpu_features())
    assert format_table(report).startswith(f"cpu features: {' '.join(kernels.cpu_features()) or 'none'};")
    by_impl = {(r["impl"], r["measure"]): r["kernel"] for r in timed}
    fp32_pick = kernels.chosen(torch.ones(1, 4), torch.ones(2, 4), kernels.FMA_LEVEL)
    assert by_impl["rgemma", "decode"] == (fp32_pick or "torch")  # a float32 model: the FMA kernel
    if kernels.int8_gemv_available():  # int8 decode at batch 1: the GEMV (AVX-512 VNNI)
        assert by_impl["rgemma-int8", "decode"] == "int8_gemv"
    elif linears.native_available() and not kernels.amx_available():  # else the FMA kernel
        assert by_impl["rgemma-int8", "decode"] == kernels.chosen(
            torch.ones(1, 4), torch.ones(2, 4).char(), kernels.FMA_LEVEL
        )


def test_bench_products_replays_one_decode_steps_weight_products(tmp_path, monkeypatch):
    """`products` times each linear and RG-LRU gate pair of one decode step on the input the
    step gave it (rgemma only: transformers gets no such job); an unknown measure is refused."""
    from rgemma.models.griffin import RGLRU

    monkeypatch.setattr(bench, "MIN_CPU", 0.0)
    path = bench.random_checkpoint("tiny", "fp32", tmp_path)
    runner = bench.make_runner("rgemma", path, "fp32", "cpu")
    calls = runner.product_calls(3)
    modules = [m for m in runner.model.modules() if isinstance(m, RGLRU) or hasattr(m, "out_features")]
    assert len(calls) == len(modules) and all(x.numel() // x.shape[-1] == 3 for _, x in calls)
    assert {getattr(p, "__self__", p) for p, _ in calls} == set(modules)
    report = run_bench(
        shapes=("tiny",),
        impls=("rgemma", "transformers"),
        measures=("products",),
        batches=(3,),
        steps=2,
        reps=1,
        threads=1,
        cache_dir=tmp_path,
        isolate=False,
        log=open(os.devnull, "w"),
    )
    (record,) = report["results"]
    assert record["impl"] == "rgemma" and record["measure"] == "products" and "error" not in record
    assert record["seconds_per_step"] > 0 and record["bytes_per_step"] == runner.weight_bytes()
    compiled = bench.make_runner("rgemma-compile", path, "fp32", "cpu")  # blocks hide their calls
    assert [x.shape for _, x in compiled.product_calls(3)] == [x.shape for _, x in calls]
    assert all(isinstance(b, CompiledBlock) for b in compiled.model.model.layers)  # still compiled
    with pytest.raises(ValueError, match="unknown measure"):
        run_bench(shapes=("tiny",), measures=("decode", "prodcuts"), cache_dir=tmp_path)


@pytest.mark.parametrize(
    "impl,compiled,int8",
    [
        ("rgemma", False, False),
        ("rgemma-compile", True, False),
        ("rgemma-int8", False, True),
        ("rgemma-int8-compile", True, True),
    ],
)
def test_bench_runners_apply_the_switches_their_names_say(tmp_path, impl, compiled, int8):
    from rgemma.accel.quantize import Int8Linear

    runner = bench.make_runner(impl, bench.random_checkpoint("tiny", "fp32", tmp_path), "fp32", "cpu")
    blocks = runner.model.model.layers
    assert all(isinstance(b, CompiledBlock) == compiled for b in blocks)  # compiled lazily, on first use
    assert any(isinstance(m, Int8Linear) for m in runner.model.modules()) == int8
    assert (runner.quant_error is not None) == int8


def test_bench_reports_a_worker_out_of_memory_before_its_first_measure(tmp_path, monkeypatch):
    """The memory guard can fire while the model loads: the worker's report names that, and
    the measures it never reached are reported as errors too, instead of a crash."""
    monkeypatch.setattr(bench, "MIN_CPU", 0.0)
    report = run_bench(
        shapes=("tiny",),
        impls=("rgemma",),
        measures=("decode",),
        batches=(1,),
        steps=1,
        reps=1,
        threads=1,
        cache_dir=tmp_path,
        mem_limit_gb=0.01,
        log=open(os.devnull, "w"),
    )
    by_measure = {r["measure"]: r for r in report["results"]}
    assert "out of memory" in by_measure["load"]["error"]
    assert "error" in by_measure["decode"]


def test_state_is_the_same_whatever_step_fills_it():
    """State.zeros on the meta device gives the byte count the roofline uses."""
    config = tiny_config()
    assert (
        State.zeros(config, 1, torch.float32, "meta").nbytes()
        == State.zeros(config, 1, torch.float32).nbytes()
    )


_MMAP_PROBE = """
import ctypes, sys, torch
from rgemma.accel import process

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2

def mmapped_by_a_64mb_tensor():
    before = libc.mallinfo2().hblkhd
    big = torch.empty(64 << 20, dtype=torch.uint8)
    return libc.mallinfo2().hblkhd - before

default = mmapped_by_a_64mb_tensor()
applied = process.reuse_memory()
print(default, applied, mmapped_by_a_64mb_tensor())
"""


@pytest.mark.skipif(not hasattr(__import__("ctypes").CDLL(None), "mallinfo2"), reason="needs glibc 2.33+")
def test_reuse_memory_serves_big_blocks_from_the_heap():
    """In a fresh process (the setting is process-wide), glibc mmaps a 64 MiB tensor afresh by
    default; after reuse_memory it comes from the heap (glibc's own counters say so)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _MMAP_PROBE], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    assert int(out[0]) >= 64 << 20 and out[1] == "True" and int(out[2]) == 0, out


def test_optimize_reuses_memory_on_cpu(monkeypatch):
    calls = []
    monkeypatch.setattr(process, "reuse_memory", lambda: calls.append(1) or True)
    speed.optimize(random_model())
    assert calls == [1]
