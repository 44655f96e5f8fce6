"""`rgemma bench`: speed and memory of rgemma against transformers, on the same random weights.

Shapes: `2b` (the real 2B shape in bf16), `2b-3l` (three 2B-shaped layers with the full vocab,
fp32 and bf16) and `small` (hidden 512, 6 layers, 32k vocab, fp32). Measures:
- ceilings: this machine's GEMM GFLOP/s (bf16, fp32) and memory GB/s, measured in the run;
- prefill: tokens/s for one prompt of T tokens (rgemma: generate.prefill, chunks of PREFILL_CHUNK);
- decode: tokens/s summed over B rows, greedy (rgemma: generate.decode);
- position: ms per token at batch 1 with ~P tokens already read, and the peak RSS there.
Each figure is also a fraction of its roofline: non-embedding FLOPs / GEMM rate for prefill;
max(bytes / bandwidth, FLOPs / GEMM rate) per decode step, where bytes = every weight read
once plus the state. Times are the best of a few runs (the machine may be shared; `cpu` is
the fraction of the threads' time the process got, and `load` the load average).

Each (shape, dtype, implementation) runs in a child process, so its peak RSS is its own and a
run that outgrows the memory limit or the clock fails alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rgemma.accel.memory import meminfo_gb, peak_rss_mb, reset_peak_rss, rss_bytes
from rgemma.bench.report import ceilings_line, format_record
from rgemma.bench.trace import kernel_info, kernel_line, summary, traced
from rgemma.io.files import cache_root
from rgemma.models.config import PRESETS, RecurrentGemmaConfig
from rgemma.text.generate import PREFILL_CHUNK

PREFIX = "BENCH "  # marks a result line on a worker's stdout
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
IMPLS = ("rgemma", "rgemma-compile", "rgemma-int8", "rgemma-int8-compile", "transformers")


@dataclass
class Shape:
    config: dict
    dtypes: tuple[str, ...]
    prefill: tuple[int, ...] = (1024, 4096, 32768)
    batches: tuple[int, ...] = (1, 8, 32)
    positions: tuple[int, ...] = (1024, 32768)
    synthetic_positions: bool = False  # reach a position by filling the state, not by prefill


_2B = dict(PRESETS["recurrentgemma-2b"])
SHAPES = {
    "2b": Shape(_2B, ("bf16",), prefill=(1024, 4096), synthetic_positions=True),
    "2b-3l": Shape({**_2B, "num_hidden_layers": 3}, ("fp32", "bf16")),
    "small": Shape(
        dict(
            hidden_size=512,
            num_hidden_layers=6,
            vocab_size=32000,
            intermediate_size=2 * 1536,
            num_attention_heads=8,
            num_key_value_heads=1,
            attention_window_size=2048,
        ),
        ("fp32",),
    ),
    "tiny": Shape(
        dict(
            hidden_size=64,
            num_hidden_layers=3,
            vocab_size=256,
            intermediate_size=256,
            num_attention_heads=2,
            num_key_value_heads=1,
            attention_window_size=16,
        ),
        ("fp32",),
        prefill=(64,),
        batches=(1, 2),
        positions=(8, 64),
    ),
}


# --------------------------------------------------------------------------- ceilings
def measure_ceilings(device: str = "cpu", quick: bool = False) -> dict:
    """GEMM GFLOP/s in bf16 and fp32, and memory GB/s (copy counted as read + write, a sum,
    and an fp32 matrix-vector product, each over 1 GiB: far beyond the caches)."""
    n = 2048 if quick else 4096
    out = {f"gemm_{k}_gflops": _gemm_rate(DTYPES[k], n, device) for k in ("bf16", "fp32")}
    out.update(_bandwidth(device, 2**28 if not quick else 2**26))
    out["bandwidth_gbs"] = max(out["copy_gbs"], out["sum_gbs"], out["gemv_gbs"])
    return out


def _best(fn, reps: int = 3) -> float:
    fn()
    return _timed(lambda: None, lambda _: fn(), torch.get_num_threads(), reps, 3 * reps)["seconds"]


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _gemm_rate(dtype: torch.dtype, n: int, device: str) -> float:
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    return 2 * n**3 / _best(lambda: a @ b) / 1e9


def _bandwidth(device: str, numel: int) -> dict:
    src = torch.ones(numel, device=device)
    dst = torch.empty_like(src)
    nbytes = numel * 4
    copy = 2 * nbytes / _best(lambda: dst.copy_(src)) / 1e9
    total = nbytes / _best(lambda: src.sum()) / 1e9
    mat, vec = src.view(-1, 4096), torch.ones(4096, device=device)
    gemv = nbytes / _best(lambda: mat @ vec) / 1e9
    return {"copy_gbs": copy, "sum_gbs": total, "gemv_gbs": gemv}


# --------------------------------------------------------------------------- rooflines
def linear_params(config: RecurrentGemmaConfig) -> int:
    """Weights of every matrix product per token, the LM head and the embedding excepted."""
    D, E, F_ = config.hidden_size, config.lru_width, config.mlp_width
    H, Hkv, Dh, K = (
        config.num_attention_heads,
        config.num_key_value_heads,
        config.head_dim,
        config.conv1d_width,
    )
    recurrent = 3 * D * E + 2 * E * E // H + E * K
    attention = 2 * D * H * Dh + 2 * D * Hkv * Dh
    return (
        sum(recurrent if k == "recurrent" else attention for k in config.layers_block_type)
        + config.num_hidden_layers * 3 * D * F_
    )


def _attention_flops(config: RecurrentGemmaConfig, keys: float) -> float:
    """Scores and weighted values of one query over `keys` keys, summed over attention layers."""
    n = config.layers_block_type.count("attention")
    return n * 4 * config.num_attention_heads * config.head_dim * keys


def prefill_flops(config: RecurrentGemmaConfig, T: int) -> float:
    """Non-embedding FLOPs of reading T tokens (query t sees min(t+1, W+1) keys)."""
    W1 = config.attention_window_size + 1
    keys = sum(min(t + 1, W1) for t in range(min(T, W1))) + max(0, T - W1) * W1
    return 2 * linear_params(config) * T + _attention_flops(config, keys)


def decode_flops(config: RecurrentGemmaConfig, batch: int, position: int) -> float:
    """FLOPs of one decode step for `batch` rows at `position`, the LM head included."""
    per_row = 2 * (linear_params(config) + config.hidden_size * config.vocab_size)
    keys = min(position + 1, config.attention_window_size + 1)
    return batch * (per_row + _attention_flops(config, keys))


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes a decode step reads: every tensor once (a tied LM head is the embedding); an
    embedding that is not also the head is only looked up, so it does not count."""
    seen, total = set(), 0
    head = getattr(getattr(model, "lm_head", None), "weight", None)
    embed = model.get_input_embeddings().weight
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen or (t is embed and t is not head):
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total


def roofline(record: dict, ceilings: dict) -> dict:
    """Adds flops/bytes-derived roofline fractions to a measured record."""
    rate = ceilings.get(f"gemm_{'fp32' if record['dtype'] == 'fp32' else 'bf16'}_gflops")
    bw = ceilings.get("bandwidth_gbs")
    seconds = record.get("seconds_per_step")
    if not rate or not bw or not seconds:
        return record
    gemm_s = record["flops_per_step"] / (rate * 1e9)
    out = {"gemm_frac": gemm_s / seconds}
    if record.get("bytes_per_step"):
        out["bw_frac"] = record["bytes_per_step"] / (bw * 1e9) / seconds
    out["roofline_frac"] = max(out.values())
    return {**record, **out}


# --------------------------------------------------------------------------- weights
def shape_config(name: str) -> RecurrentGemmaConfig:
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}; choose from {sorted(SHAPES)}")
    return RecurrentGemmaConfig(**SHAPES[name].config)


def random_model(shape: str, dtype: str, seed: int = 0):
    """A RecurrentGemmaForCausalLM of `shape` with random weights (DeepMind's initialisation),
    built on the meta device and then filled, so only one copy is ever in memory."""
    from rgemma.models.griffin import init_weights
    from rgemma.pretrained.classes import RecurrentGemmaForCausalLM

    config = shape_config(shape)
    with torch.device("meta"):
        model = RecurrentGemmaForCausalLM(config)
    model = model.to(DTYPES[dtype]).to_empty(device="cpu")
    torch.manual_seed(seed)
    with torch.no_grad():
        init_weights(model, config)
    model.tie_weights()
    return model.eval()


def random_checkpoint(shape: str, dtype: str, cache_dir: Path, seed: int = 0) -> Path:
    """random_model(shape, dtype, seed) as an HF-format checkpoint, written once and reused."""
    path = Path(cache_dir) / f"{shape}-{dtype}-seed{seed}"
    if not (path / "config.json").is_file():
        random_model(shape, dtype, seed).save_pretrained(path)
    return path


# --------------------------------------------------------------------------- implementations
class RgemmaRunner:
    """rgemma as the CLI runs it: speed.optimize's fast paths, with `variant` "compile"
    (--compile), "int8" (--quantize int8, whose logit error against the unquantized model is
    kept) or both, "int8-compile". Prefill is generate.prefill; decode is model.decode_step
    with a greedy argmax, as for transformers (generate.decode adds the sampler's
    log-probabilities and stop bookkeeping)."""

    def __init__(self, path: Path, dtype: str, device: str, variant: str = ""):
        from rgemma.accel import speed
        from rgemma.pretrained.classes import RecurrentGemmaForCausalLM

        self.model = RecurrentGemmaForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], device=device)
        self.config, self.device = self.model.config, device  # self.config: rgemma's, for both
        switches = variant.split("-")
        ids = _random_ids(self.config, 1, 64, device) if "int8" in switches else None
        with torch.no_grad():
            ref = self.model(ids).logits if ids is not None else None
            speed.optimize(
                self.model, compile="compile" in switches, quantize="int8" if "int8" in switches else None
            )
            self.quant_error = logit_error(ref, self.model(ids).logits) if ids is not None else None

    def prefill(self, ids: torch.Tensor):
        from rgemma.text.generate import prefill

        return prefill(self.model, ids)

    def decode(self, ctx, steps: int) -> None:
        logits, state = ctx
        token = logits.argmax(-1)
        active = torch.ones_like(token, dtype=torch.bool)
        for _ in range(steps):
            token = self.model.decode_step(token, active, state).argmax(-1)

    def at_position(self, position: int, synthetic: bool):
        if not synthetic:
            return self.prefill(_random_ids(self.config, 1, position, self.device))
        from rgemma.models.state import State

        state = State.zeros(self.config, 1, self.model.dtype, self.device)
        for t in state.tensors().values():
            if t.is_floating_point():
                t.normal_(0, 0.5)
        for t in (state.count, state.next_pos):
            t.fill_(position)
        return torch.randn(1, self.config.vocab_size, device=self.device), state

    def weight_bytes(self) -> int:
        return weight_bytes(self.model)

    def product_calls(self, batch: int) -> list:
        """(product, input) for every weight product of one decode step at `batch` rows (the
        linears, and the RG-LRU gates), recorded from an eager step."""
        from rgemma.accel.choices import accel_of, configure
        from rgemma.models.griffin import RGLRU

        calls, accel = [], accel_of(self.model)
        configure(self.model, compile=False)  # a plain step: hooks do not fire in compiled code

        def record(module, args):
            product = module.gates if isinstance(module, RGLRU) else module
            calls.append((product, args[0].clone()))

        hooks = [
            m.register_forward_pre_hook(record)
            for m in self.model.modules()
            if isinstance(m, RGLRU) or hasattr(m, "out_features")
        ]
        try:
            with torch.no_grad():
                logits, state = self.prefill(_random_ids(self.config, batch, 16, self.device))
                self.model.decode_step(logits.argmax(-1), torch.ones(batch, dtype=torch.bool), state)
        finally:
            for hook in hooks:
                hook.remove()
            configure(self.model, accel)
        calls = calls[-len(hooks) :]  # a step calls each once; the prefill's calls come first
        assert all(x.numel() // x.shape[-1] == batch for _, x in calls), "not a one-token step"
        return calls


class TransformersRunner:
    """transformers' RecurrentGemmaForCausalLM with its own cache, fed token by token."""

    def __init__(self, path: Path, dtype: str, device: str):
        import transformers

        self.model = (
            transformers.RecurrentGemmaForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
            .to(device)
            .eval()
        )
        self.config = RecurrentGemmaConfig.from_json_file(Path(path) / "config.json")
        self.device, self.dtype = device, DTYPES[dtype]

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor, chunk: int | None = None):
        from transformers import DynamicCache

        m = self.model
        m._setup_cache(m.config, ids.shape[0], ids.device, self.dtype)  # its state lives on modules
        cache = DynamicCache(config=m.config)
        for s in range(0, ids.shape[1], chunk or ids.shape[1]):
            logits = m(
                ids[:, s : s + (chunk or ids.shape[1])], cache=cache, use_cache=True, logits_to_keep=1
            ).logits[:, -1]
        return logits, cache

    @torch.no_grad()
    def decode(self, ctx, steps: int) -> None:
        logits, cache = ctx
        token = logits.argmax(-1)
        for _ in range(steps):
            logits = self.model(token[:, None], cache=cache, use_cache=True, logits_to_keep=1).logits
            token = logits[:, -1].argmax(-1)

    def at_position(self, position: int, synthetic: bool):
        # Reached in chunks (the cost of a step does not depend on how it got there).
        return self.prefill(_random_ids(self.config, 1, position, self.device), chunk=PREFILL_CHUNK)

    def weight_bytes(self) -> int:
        return weight_bytes(self.model)


def logit_error(ref: torch.Tensor, out: torch.Tensor) -> dict:
    """How far `out` logits are from `ref`: max and mean |difference|, and how often the top
    token agrees."""
    diff = (out.float() - ref.float()).abs()
    return {
        "max_abs": diff.max().item(),
        "mean_abs": diff.mean().item(),
        "ref_max_abs": ref.float().abs().max().item(),
        "top1_agreement": (out.argmax(-1) == ref.argmax(-1)).float().mean().item(),
    }


def perplexity_delta(
    model_dir: str | Path, data: str | Path, dtype: str = "bfloat16", max_docs: int | None = 200
) -> dict:
    """Perplexity of a trained checkpoint on the documents in `data` (JSONL or text), before
    and after int8 weight-only quantization, with the logit error on the first document.

    Scored once per int8 kernel: "auto" (what a prefill uses) and, where they load, "native"
    (the int8 GEMV batch-1 decode uses, with its int16 activations) and "amx" (decode batches
    of bf16 rows), each forced on every call."""
    from rgemma.accel import quantize
    from rgemma.accel.choices import accel_of, configure
    from rgemma.io.documents import read_documents
    from rgemma.kernels import amx_available, int8_gemv_available
    from rgemma.pretrained.loading import load
    from rgemma.text.scoring import document_perplexity

    lm, tok = load(str(model_dir), dtype)
    docs = read_documents(data)[:max_docs]
    doc = docs[0]
    ids = torch.tensor([tok.encode(doc)[:512]], device=lm.device)
    result = {"model": str(model_dir), "dtype": dtype}
    with torch.no_grad():
        before = document_perplexity(lm, tok, docs)
        ref = lm(ids).logits
        quantize.quantize_model(lm)
        result.update(tokens=before["tokens"], perplexity=before["perplexity"])
        cpu = lm.device.type == "cpu"
        bf16 = lm.dtype == torch.bfloat16
        choices = (
            ("auto",)
            + (("native",) if int8_gemv_available() and cpu else ())
            + (("amx",) if amx_available() and cpu and bf16 else ())
        )
        accel = accel_of(lm)
        for kernel in choices:
            configure(lm, accel, int8_kernel=kernel)
            after = document_perplexity(lm, tok, docs)
            suffix = "" if kernel == "auto" else f"_{kernel}"
            result[f"perplexity_int8{suffix}"] = after["perplexity"]
            result[f"relative_change{suffix}"] = after["perplexity"] / before["perplexity"] - 1
            result[f"logits{suffix}"] = logit_error(ref, lm(ids).logits)
    return result


def make_runner(impl: str, path: Path, dtype: str, device: str):
    if impl == "transformers":
        return TransformersRunner(path, dtype, device)
    if impl not in IMPLS:
        raise ValueError(f"unknown implementation {impl!r}; choose from {IMPLS}")
    return RgemmaRunner(path, dtype, device, impl.partition("-")[2])


def _random_ids(config, batch: int, length: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(batch * 100003 + length)
    return torch.randint(3, config.vocab_size, (batch, length), generator=g).to(device)


# --------------------------------------------------------------------------- measurements
@dataclass
class Meter:
    """Wall time, CPU share and peak RSS of one measured phase."""

    threads: int
    start: dict = field(default_factory=dict)

    def __enter__(self):
        _sync()
        reset_peak_rss()
        self.start = dict(wall=time.perf_counter(), cpu=time.process_time(), load=os.getloadavg()[0])
        return self

    def __exit__(self, *exc):
        _sync()
        wall = time.perf_counter() - self.start["wall"]
        self.result = dict(
            seconds=wall,
            peak_rss_mb=peak_rss_mb(),
            load=self.start["load"],
            cpu=(time.process_time() - self.start["cpu"]) / wall / self.threads,
        )


MIN_CPU = 0.85  # a run that got less of its threads' time was slowed by another process
BUSY_WAIT = 5.0  # seconds to wait before retaking such a run


def _timed(setup, run, threads: int, reps: int, tries: int) -> dict:
    """The best of `reps` clean runs of run(setup()), only run() timed. A run during which
    the process got less than MIN_CPU of its threads' time (the machine is shared) is retaken,
    up to `tries` runs in all; if none was clean, the best is kept, marked `contended`."""
    clean, dirty = [], []
    for _ in range(tries):
        ctx = setup()
        with Meter(threads) as m:
            run(ctx)
        (clean if m.result["cpu"] >= MIN_CPU else dirty).append(m.result)
        if len(clean) >= reps:
            break
        if m.result["cpu"] < MIN_CPU:
            time.sleep(BUSY_WAIT)
    best = min(clean or dirty, key=lambda r: r["seconds"])
    return {**best, "contended": not clean, "runs": len(clean) + len(dirty)}


def bench_prefill(runner, T: int, threads: int, reps: int) -> dict:
    ids = _random_ids(runner.config, 1, T, runner.device)
    with traced() as seen:
        runner.prefill(ids[:, : min(T, PREFILL_CHUNK)])  # warm-up, at the chunk's shapes
    big = T > 8192
    r = _timed(lambda: ids, runner.prefill, threads, 1 if big else reps, 2 if big else 3 * reps)
    return {
        **r,
        **_kernels(seen),
        "tok_s": T / r["seconds"],
        "seconds_per_step": r["seconds"],
        "flops_per_step": prefill_flops(runner.config, T),
    }


def bench_decode(runner, batch: int, steps: int, threads: int, reps: int, state_bytes: int) -> dict:
    ids = _random_ids(runner.config, batch, 16, runner.device)
    ctx = runner.prefill(ids)
    with traced() as seen:
        runner.decode(ctx, 2)  # warm-up (and compilation)
    r = _timed(lambda: runner.prefill(ids), lambda ctx: runner.decode(ctx, steps), threads, reps, 3 * reps)
    sec = r["seconds"] / steps
    return {
        **r,
        **_kernels(seen),
        "tok_s": batch / sec,
        "ms_per_token": 1e3 * sec,
        "seconds_per_step": sec,
        "flops_per_step": decode_flops(runner.config, batch, 16 + steps),
        "bytes_per_step": runner.weight_bytes() + batch * state_bytes,
    }


def bench_products(runner, batch: int, steps: int, threads: int, reps: int) -> dict:
    """The weight products of a decode step alone, back to back on the inputs a step gave
    them: the step's floor with every other op taken out (rgemma only). Against `decode`, it
    splits a step into products and the rest."""
    calls = runner.product_calls(batch)

    def run(c):
        for _ in range(steps):
            for product, x in c:
                product(x)

    with traced() as seen:  # one pass, untimed
        for product, x in calls:
            product(x)
    r = _timed(lambda: calls, run, threads, reps, 3 * reps)
    sec = r["seconds"] / steps
    return {
        **r,
        **_kernels(seen),
        "tok_s": batch / sec,
        "ms_per_token": 1e3 * sec,
        "seconds_per_step": sec,
        "flops_per_step": decode_flops(runner.config, batch, 0),
        "bytes_per_step": runner.weight_bytes(),
    }


def bench_position(
    runner, position: int, steps: int, threads: int, reps: int, synthetic: bool, state_bytes: int
) -> dict:
    with traced() as seen:
        runner.decode(runner.at_position(64, synthetic), 2)  # warm-up
    ctx = runner.at_position(position, synthetic)
    # The same state serves every run: it moves on by `steps` tokens, nothing else changes.
    r = _timed(lambda: ctx, lambda c: runner.decode(c, steps), threads, reps, 3 * reps)
    sec = r["seconds"] / steps
    return {
        **r,
        **_kernels(seen),
        "tok_s": 1 / sec,
        "ms_per_token": 1e3 * sec,
        "seconds_per_step": sec,
        "flops_per_step": decode_flops(runner.config, 1, position),
        "bytes_per_step": runner.weight_bytes() + state_bytes,
    }


def _kernels(seen) -> dict:
    """The record's `kernel` (what its products ran, e.g. linear_avx2, or torch) and the counts
    per kernel in one traced call."""
    return {"kernel": summary(seen), "kernel_calls": dict(seen)}


# --------------------------------------------------------------------------- one worker
def run_group(spec: dict, emit) -> None:
    """Every measure of one (shape, dtype, implementation), each passed to emit(record)."""
    from rgemma.accel.process import set_threads
    from rgemma.models.state import State

    threads = set_threads(spec["threads"])
    shape = SHAPES[spec["shape"]]
    base = {k: spec[k] for k in ("shape", "dtype", "impl")}
    current = {"measure": "load", "size": 0}  # what is running when the memory guard fires
    _guard_memory(spec["mem_limit_gb"], base, current, emit)
    path = random_checkpoint(spec["shape"], spec["dtype"], Path(spec["cache_dir"]))
    runner = make_runner(spec["impl"], path, spec["dtype"], spec["device"])
    config = shape_config(spec["shape"])
    state_bytes = State.zeros(config, 1, DTYPES[spec["dtype"]], "meta").nbytes()
    if getattr(runner, "quant_error", None):
        emit({**base, "measure": "int8-error", "size": 64, **runner.quant_error})
    for measure, size in spec["jobs"]:
        current.update(measure=measure, size=size)
        record = {**base, "measure": measure, "size": size}
        try:
            with torch.no_grad():
                record.update(_measure(runner, measure, size, spec, threads, shape, state_bytes))
        except Exception as err:  # one failing measure must not hide the others
            record["error"] = f"{type(err).__name__}: {err}"[:300]
        emit(roofline(record, spec.get("ceilings", {})))


def _measure(runner, measure, size, spec, threads, shape, state_bytes) -> dict:
    if measure == "prefill":
        return bench_prefill(runner, size, threads, spec["reps"])
    if measure == "decode":
        return bench_decode(runner, size, spec["steps"], threads, spec["reps"], state_bytes)
    if measure == "position":
        return bench_position(
            runner, size, spec["steps"], threads, spec["reps"], shape.synthetic_positions, state_bytes
        )
    if measure == "products":
        return bench_products(runner, size, spec["steps"], threads, spec["reps"])
    raise ValueError(f"unknown measure {measure!r}")


def _guard_memory(limit_gb: float | None, base: dict, current: dict, emit) -> None:
    """A watchdog: past `limit_gb` of RSS the worker reports the failure and exits at once,
    before the machine starts swapping or the OOM killer picks a victim."""
    if not limit_gb:
        return

    def watch():
        while True:
            if rss_bytes() > limit_gb * 2**30:
                emit({**base, **current, "error": f"out of memory: RSS passed the {limit_gb:.1f} GB limit"})
                sys.stdout.flush()
                os._exit(3)
            time.sleep(0.02)

    if rss_bytes() is not None:
        threading.Thread(target=watch, daemon=True).start()


def _worker_main(spec_json: str) -> int:
    def emit(record):
        print(PREFIX + json.dumps(record), flush=True)

    run_group(json.loads(spec_json), emit)
    return 0


# --------------------------------------------------------------------------- the run
MEASURES = ("ceilings", "prefill", "decode", "position", "products")


def unknown_measures(names) -> str | None:
    unknown = sorted(set(names) - set(MEASURES))
    return f"unknown measure(s) {', '.join(unknown)}; choose from {', '.join(MEASURES)}" if unknown else None


def run_bench(
    shapes=("small", "2b-3l"),
    dtypes=None,
    impls=("rgemma", "transformers"),
    measures=("ceilings", "prefill", "decode", "position"),
    prefill=None,
    batches=None,
    positions=None,
    steps: int = 16,
    reps: int = 3,
    threads: int = 2,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    mem_limit_gb: float | None = None,
    timeout: float = 3600,
    isolate: bool = True,
    quick: bool = False,
    out: str | Path | None = None,
    log=sys.stderr,
) -> dict:
    """Run the benchmark; returns (and writes to `out` as JSON) the machine, the ceilings and
    one record per (shape, dtype, implementation, measure, size)."""
    from rgemma.accel.process import set_threads

    problem = unknown_measures(measures)
    if problem:
        raise ValueError(problem)
    set_threads(threads)
    cache_dir = Path(cache_dir or cache_root() / "bench")
    if mem_limit_gb is None:
        mem_limit_gb = 0.8 * meminfo_gb("MemAvailable")
    report = {"machine": machine_info(threads), "ceilings": {}, "results": []}
    print(kernel_line(report["machine"]), file=log, flush=True)
    if "ceilings" in measures:
        report["ceilings"] = measure_ceilings(device, quick)
        print(ceilings_line(report["ceilings"]), file=log, flush=True)
    common = dict(
        steps=steps,
        reps=reps,
        threads=threads,
        device=device,
        cache_dir=str(cache_dir),
        mem_limit_gb=mem_limit_gb,
    )
    for spec in _specs(shapes, dtypes, impls, measures, (prefill, batches, positions), common):
        spec["ceilings"] = report["ceilings"]
        for record in _run_spec(spec, isolate, timeout):
            report["results"].append(record)
            print(format_record(record), file=log, flush=True)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=1) + "\n")
    return report


def _specs(shapes, dtypes, impls, measures, sizes, common: dict):
    """One worker's spec per (shape, dtype, implementation): its jobs (measure, size), with
    `sizes` = (prefill lengths, batches, positions) overriding each shape's defaults, and the
    `common` settings (steps, reps, threads, device, cache_dir, mem_limit_gb)."""
    prefill, batches, positions = sizes
    for name in shapes:
        shape_config(name)  # a clear error for an unknown name
        shape = SHAPES[name]
        jobs = (
            [("prefill", t) for t in (prefill or shape.prefill) if "prefill" in measures]
            + [("decode", b) for b in (batches or shape.batches) if "decode" in measures]
            + [("position", p) for p in (positions or shape.positions) if "position" in measures]
            + [("products", b) for b in (batches or shape.batches) if "products" in measures]
        )
        for dtype in shape.dtypes:
            if dtypes and dtype not in dtypes:
                continue
            for impl in impls:
                ours = [j for j in jobs if j[0] != "products" or impl.startswith("rgemma")]
                if ours:
                    yield dict(shape=name, dtype=dtype, impl=impl, jobs=ours, **common)


def _run_spec(spec: dict, isolate: bool, timeout: float) -> list[dict]:
    if not isolate:
        records = []
        run_group(spec, records.append)
        return records
    cmd = [sys.executable, "-m", "rgemma.bench.harness", "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        stdout, failure = proc.stdout, (proc.stderr.strip().splitlines() or [""])[-1]
        failure = f"worker exited with {proc.returncode}: {failure}" if proc.returncode else ""
    except subprocess.TimeoutExpired as err:
        stdout, failure = err.stdout or "", f"timed out after {timeout:.0f} s"
        stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
    records = [json.loads(line[len(PREFIX) :]) for line in stdout.splitlines() if line.startswith(PREFIX)]
    done = {(r.get("measure"), r.get("size")) for r in records}
    base = {k: spec[k] for k in ("shape", "dtype", "impl")}
    for measure, size in spec["jobs"]:
        if (measure, size) not in done:
            records.append(
                {
                    **base,
                    "measure": measure,
                    "size": size,
                    "error": failure or "not run (an earlier measure failed)",
                }
            )
    return records


def machine_info(threads: int) -> dict:
    cpu = ""
    try:
        cpu = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "memory_gb": round(meminfo_gb("MemTotal"), 1),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "cuda": torch.cuda.is_available() and torch.cuda.get_device_name(0),
        **kernel_info(),
    }


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- the worker process
if __name__ == "__main__":  # python -m rgemma.bench.harness --worker SPEC_JSON (see _run_spec)
    if sys.argv[1:2] != ["--worker"] or len(sys.argv) != 3:
        raise SystemExit("usage: python -m rgemma.bench.harness --worker SPEC_JSON (rgemma bench runs it)")
    raise SystemExit(_worker_main(sys.argv[2]))
