"""Peak memory of `rgemma convert` on a 2B-shaped DeepMind checkpoint (bf16, random weights).

    python bench/convert_memory.py                 # all 26 layers: a 5.4 GB .pt, 5.4 GB written
    python bench/convert_memory.py --layers 6      # quicker: 2.3 GB

One child process builds the .pt; a second, small one runs the conversion as its own child and
reports that child's peak resident set (getrusage RUSAGE_CHILDREN ru_maxrss) and peak anonymous
memory (RssAnon sampled from /proc). A child's ru_maxrss includes what the process that spawned
it had resident, so neither the builder nor this script (which never imports torch) is the
parent of the measured conversion. The bound is 1.3 x (largest shard + largest tensor).
Needs about 2.2x the checkpoint size of free disk under --workdir.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

D, H, F, V, K = 2560, 10, 7680, 256000, 4  # recurrentgemma-2b
PATTERN = ("recurrent", "recurrent", "attention")


def deepmind_2b_shapes(layers: int) -> dict[str, tuple[int, ...]]:
    """DeepMind's torch state-dict names and shapes for a 2B-shaped Griffin."""
    shapes = {"embedder.input_embedding": (V, D)}
    for i in range(layers):
        b = f"blocks.{i}."
        shapes[b + "temporal_pre_norm.scale"] = (D,)
        if PATTERN[i % 3] == "recurrent":
            r = b + "recurrent_block."
            for name in ("linear_y", "linear_x"):
                shapes[r + name + ".weight"], shapes[r + name + ".bias"] = (D, D), (D,)
            shapes[r + "linear_out.weight"], shapes[r + "linear_out.bias"] = (D, D), (D,)
            shapes[r + "conv_1d.w"], shapes[r + "conv_1d.b"] = (K, D), (D,)
            shapes[r + "rg_lru.a_param"] = (D,)
            for gate in ("input_gate", "a_gate"):
                shapes[r + f"rg_lru.{gate}.w"], shapes[r + f"rg_lru.{gate}.b"] = (
                    (H, D // H, D // H),
                    (H, D // H),
                )
        else:
            a = b + "attention_block."
            shapes[a + "proj_q.weight"] = (D, D)
            shapes[a + "proj_k.weight"] = shapes[a + "proj_v.weight"] = (D // H, D)
            shapes[a + "proj_final.weight"], shapes[a + "proj_final.bias"] = (D, D), (D,)
        shapes[b + "channel_pre_norm.scale"] = (D,)
        m = b + "mlp_block."
        shapes[m + "ffw_up.w"], shapes[m + "ffw_up.b"] = (2, D, F), (2, 1, 1, F)
        shapes[m + "ffw_down.weight"], shapes[m + "ffw_down.bias"] = (D, F), (D,)
    shapes["final_norm.scale"] = (D,)
    return shapes


def build_checkpoint(path: Path, layers: int) -> int:
    """Write the random bf16 .pt; returns the largest tensor's size in bytes."""
    import torch

    gen = torch.Generator().manual_seed(0)
    state = {
        k: (torch.randn(s, generator=gen) * 0.02).to(torch.bfloat16)
        for k, s in deepmind_2b_shapes(layers).items()
    }
    torch.save(state, path)
    return max(t.numel() * t.element_size() for t in state.values())


def sample_anon(pid: int, peak: list[int], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak[0] = max(peak[0], int(line.split()[1]) * 1024)
        except OSError:
            return
        time.sleep(0.02)


def measure_conversion(pt: Path, out: Path, max_shard_size: str) -> dict:
    """(peak RSS, peak anonymous RSS, seconds) of the conversion run in a child process."""
    code = (
        "import sys; from rgemma.convert.pipeline import convert; "
        "convert(sys.argv[1], sys.argv[2], attention_window_size=2048, logits_soft_cap=30.0, "
        "max_shard_size=sys.argv[3], progress=False)"
    )
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code, str(pt), str(out), max_shard_size])
    peak, stop = [0], threading.Event()
    sampler = threading.Thread(target=sample_anon, args=(child.pid, peak, stop), daemon=True)
    sampler.start()
    rc = child.wait()
    stop.set()
    sampler.join()
    if rc != 0:
        raise SystemExit(f"conversion failed with exit code {rc}")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    return {
        "peak_rss_bytes": rss,
        "peak_anon_bytes": peak[0],
        "convert_seconds": round(time.perf_counter() - start, 1),
    }


def run_json(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=26, help="layers of the 2B shape (default 26)")
    parser.add_argument("--max-shard-size", default="2GB")
    parser.add_argument("--workdir", type=Path, default=None, help="where to put the .pt and output")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    parser.add_argument("--step", choices=("build", "measure"), help=argparse.SUPPRESS)
    parser.add_argument("--pt", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step == "build":
        t0 = time.perf_counter()
        largest = build_checkpoint(args.pt, args.layers)
        print(
            json.dumps({"largest_tensor_bytes": largest, "build_seconds": round(time.perf_counter() - t0, 1)})
        )
        return 0
    if args.step == "measure":
        print(json.dumps(measure_conversion(args.pt, args.out, args.max_shard_size)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="convert-memory-", dir=args.workdir))
    try:
        pt, out = work / "2b.pt", work / "out"
        report = {"layers": args.layers}
        report.update(run_json("--step", "build", "--pt", str(pt), "--layers", str(args.layers)))
        report.update(
            run_json(
                "--step",
                "measure",
                "--pt",
                str(pt),
                "--out",
                str(out),
                "--max-shard-size",
                args.max_shard_size,
            )
        )
        largest_shard = max(f.stat().st_size for f in out.glob("*.safetensors"))
        bound = 1.3 * (largest_shard + report["largest_tensor_bytes"])
        rss = report["peak_rss_bytes"]
        report.update(
            checkpoint_bytes=pt.stat().st_size,
            largest_shard_bytes=largest_shard,
            bound_bytes=int(bound),
            within_bound=rss <= bound,
        )
        print(json.dumps(report, indent=2))
        gib = 2**30
        print(
            f"peak RSS {rss / gib:.2f} GiB (anonymous {report['peak_anon_bytes'] / gib:.2f} GiB) vs "
            f"bound 1.3 x ({largest_shard / gib:.2f} + {report['largest_tensor_bytes'] / gib:.2f}) "
            f"= {bound / gib:.2f} GiB: {'OK' if rss <= bound else 'OVER'}",
            file=sys.stderr,
        )
        return 0 if rss <= bound else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
