"""The GPU paths, checked and timed in one short run (bench/gpu_check.sh runs this).

Correctness first (each check is independent; a failure is recorded and the run goes on):
- the Triton RG-LRU scan against the reference loop: values, final state, gradients;
- the decode step captured as a CUDA graph against the eager step, over many steps;
- the model on the GPU against the model on the CPU (same weights, float32).
Then timings on the 2B shape (random weights, bf16): the scan (triton vs fast), prefill
tok/s, and decode tok/s at batch 1/8/32, eager vs CUDA graph.

`--device cpu` runs the same script at toy sizes (no graph, Triton interpreted if present):
a dry run for machines without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import torch

RESULTS: dict = {"checks": {}, "timings": {}}


def check(name):
    """Run fn, record "ok"/"FAILED: ..." under RESULTS["checks"][name]; never raise."""

    def wrap(fn):
        def run(*args, **kwargs):
            t = time.perf_counter()
            try:
                detail = fn(*args, **kwargs)
                RESULTS["checks"][name] = {"ok": True, "detail": detail}
            except Exception as err:  # record and go on: one broken path must not hide others
                traceback.print_exc()
                RESULTS["checks"][name] = {"ok": False, "detail": f"{type(err).__name__}: {err}"}
            RESULTS["checks"][name]["seconds"] = round(time.perf_counter() - t, 2)
            print(f"[check] {name}: {RESULTS['checks'][name]}", flush=True)

        return run

    return wrap


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def best_time(fn, device, reps=3):
    fn()
    sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return min(times)


def random_model(config, dtype, device, seed=0):
    """A model with DeepMind's random initialisation, built on the device without a CPU copy."""
    from rgemma import RecurrentGemmaForCausalLM
    from rgemma.models.griffin import init_weights

    with torch.device("meta"):
        model = RecurrentGemmaForCausalLM(config)
    model = model.to(dtype).to_empty(device=device)
    torch.manual_seed(seed)
    with torch.no_grad():
        init_weights(model, config)
        for name, p in model.named_parameters():  # non-trivial norms and biases too
            if "norm" in name or "bias" in name:
                p.normal_(0, 0.1)
    model.tie_weights()
    return model.eval()


def tiny_config():
    from rgemma import RecurrentGemmaConfig

    return RecurrentGemmaConfig(
        num_hidden_layers=4,
        vocab_size=512,
        hidden_size=128,
        intermediate_size=512,
        num_attention_heads=4,
        num_key_value_heads=1,
        attention_window_size=32,
    )


# --------------------------------------------------------------------------- correctness
def scan_inputs(B, T, E, device, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, E, generator=g).to(device, dtype)
    a = torch.rand(B, T, E, generator=g).to(device, dtype)
    a[:, T // 3] = 0  # a document start
    h0 = torch.randn(B, E, generator=g).to(device)
    return x, a, h0


@check("triton scan == reference (values, final state, gradients)")
def check_triton_scan(device, quick):
    from rgemma.ops.scan import rnn_scan

    if device != "cuda" and not os.environ.get("TRITON_INTERPRET"):
        return "skipped: no CUDA (set TRITON_INTERPRET=1 to interpret the kernels)"
    B, T, E = (2, 300, 260) if not quick else (2, 20, 70)
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, a, h0 = scan_inputs(B, T, E, device, dtype)
        grads = {}
        for impl, dev in (("ref", "cpu"), ("triton", device)):
            xs, as_, hs = (t.detach().to(dev).requires_grad_() for t in (x, a, h0))
            y, h = rnn_scan(xs, as_, hs, impl=impl)
            w = torch.linspace(-1, 1, y.numel(), device=dev).view_as(y)
            ((y * w).sum() + h.square().sum()).backward()
            grads[impl] = [t.detach().float().cpu() for t in (y, h, xs.grad, as_.grad, hs.grad)]
        err = max((r - t).abs().max().item() for r, t in zip(grads["ref"], grads["triton"]))
        out[str(dtype)] = err
        assert err < (1e-4 if dtype == torch.float32 else 2e-2), f"{dtype}: max error {err}"
    return out


@check("decode step as a CUDA graph == eager step")
def check_cuda_graph(device, quick):
    from rgemma.accel.compile import StaticDecodeStep
    from rgemma.text.generate import prefill

    if device != "cuda":
        return "skipped: no CUDA"
    model = random_model(tiny_config(), torch.float32, device)
    ids = torch.randint(0, 512, (3, 40), device=device)
    _, state = prefill(model, ids[:, :8])
    ref_state = state.clone()
    step = StaticDecodeStep(model, cuda_graph=True)
    active = torch.tensor([True, False, True], device=device)
    err = 0.0
    with torch.no_grad():
        for t in range(8, 40):  # crosses the window of 32
            ref = model.decode_step(ids[:, t], active, ref_state)
            err = max(err, (step(ids[:, t], active, state) - ref).abs().max().item())
    state_err = max(
        (a.float() - b.float()).abs().max().item()
        for a, b in zip(state.tensors().values(), ref_state.tensors().values())
    )
    assert err < 1e-4 and state_err < 1e-4, (err, state_err)
    return {"logits_err": err, "state_err": state_err}


@check("model on the device == model on the CPU (float32)")
def check_device_vs_cpu(device, quick):
    model = random_model(tiny_config(), torch.float32, "cpu")
    ids = torch.randint(0, 512, (2, 70))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    with torch.no_grad():
        ref = model(ids, attention_mask=mask).logits
        out = model.to(device)(ids.to(device), attention_mask=mask.to(device)).logits.cpu()
    err = (out - ref).abs().max().item()
    assert err < 1e-3, err
    return {"max_abs_err": err}


# --------------------------------------------------------------------------- timings
def time_scan(device, quick):
    from rgemma.ops.scan import rnn_scan

    B, T, E = (1, 32768, 2560) if not quick else (1, 256, 64)
    x, a, h0 = scan_inputs(B, T, E, device)
    out = {}
    for impl in ("fast", "triton"):
        try:
            s = best_time(lambda: rnn_scan(x, a, h0, impl=impl), device)
            out[impl] = {"ms": 1e3 * s, "GB/s": 3 * x.numel() * 4 / s / 1e9}
        except Exception as err:
            out[impl] = f"FAILED: {type(err).__name__}: {err}"
    RESULTS["timings"][f"scan B={B} T={T} E={E}"] = out
    print(f"[time] scan: {out}", flush=True)


def time_model(device, quick, budget_s):
    from rgemma import RecurrentGemmaConfig
    from rgemma.bench.harness import SHAPES
    from rgemma.text.generate import prefill

    config = RecurrentGemmaConfig(**SHAPES["2b"].config) if not quick else tiny_config()
    model = random_model(config, torch.bfloat16 if device == "cuda" else torch.float32, device)
    start = time.perf_counter()
    out = RESULTS["timings"].setdefault("2b bf16" if not quick else "tiny", {})
    for T in (4096, 32768) if not quick else (64,):
        ids = torch.randint(3, config.vocab_size, (1, T), device=device)
        with torch.no_grad():
            s = best_time(lambda: prefill(model, ids), device, reps=2)
        out[f"prefill T={T} tok/s"] = T / s
        print(f"[time] prefill T={T}: {T / s:.0f} tok/s", flush=True)
    for B in (1, 8, 32):
        if time.perf_counter() - start > budget_s:
            out[f"decode B={B}"] = "skipped: time budget"
            continue
        out[f"decode B={B} tok/s"] = time_decode(model, config, B, device)
        print(f"[time] decode B={B}: {out[f'decode B={B} tok/s']}", flush=True)


def time_decode(model, config, B, device, steps=32):
    from rgemma.accel.compile import StaticDecodeStep
    from rgemma.text.generate import prefill

    res = {}
    ids = torch.randint(3, config.vocab_size, (B, 16), device=device)
    active = torch.ones(B, dtype=torch.bool, device=device)
    for label in ("eager", "cuda_graph"):
        if label == "cuda_graph" and device != "cuda":
            continue
        step = StaticDecodeStep(model) if label == "cuda_graph" else model.decode_step
        with torch.no_grad():
            logits, state = prefill(model, ids)
            tok = logits.argmax(-1)

            def run():
                t = tok
                for _ in range(steps):
                    t = step(t, active, state).argmax(-1)

            s = best_time(run, device, reps=2)
        res[label] = B * steps / s
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="bench/results/gpu_check.json")
    p.add_argument("--budget", type=float, default=240, help="seconds for the model timings")
    args = p.parse_args(argv)
    quick = args.device != "cuda"
    RESULTS["env"] = {
        "torch": torch.__version__,
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "triton_interpret": os.environ.get("TRITON_INTERPRET"),
    }
    try:
        import triton

        RESULTS["env"]["triton"] = triton.__version__
    except ImportError:
        RESULTS["env"]["triton"] = None
    print(f"[env] {RESULTS['env']}", flush=True)
    check_triton_scan(args.device, quick)
    check_cuda_graph(args.device, quick)
    check_device_vs_cpu(args.device, quick)
    for fn in (lambda: time_scan(args.device, quick), lambda: time_model(args.device, quick, args.budget)):
        try:
            fn()
        except Exception as err:
            traceback.print_exc()
            RESULTS["timings"].setdefault("errors", []).append(f"{type(err).__name__}: {err}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(RESULTS, f, indent=1)
    print(json.dumps(RESULTS, indent=1))
    return 0 if all(c["ok"] for c in RESULTS["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
