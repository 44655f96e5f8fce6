"""Load time and peak memory of `--quantize int8` on a 9B-shaped checkpoint (bf16, random weights).

    python bench/load_memory.py --workdir /work/big                     # 38 layers: 17.2 GB in 5 shards
    python bench/load_memory.py --workdir /work/big --layers 6          # quicker: 4.5 GB in 4 shards
    python bench/load_memory.py --workdir /work/big --quantize int8,none   # and a plain bf16 load
    python bench/load_memory.py --workdir /work/big --clean             # delete the checkpoint after

The checkpoint (RecurrentGemma-9B's config with `--layers` layers; bf16 safetensors in 5 shards
and model.safetensors.index.json; fewer shards when the 2.1 GB embedding is a large part of it)
is written once under --workdir, tensor by tensor, and reused. The files are then read with
plain 64 MiB reads: cold (their pages dropped from the page cache first with posix_fadvise;
`--cache warm` keeps them), both dropping the pages behind the reader, as the loader does for a
checkpoint this large, and keeping them, then again from whatever the cache kept.

For each `--quantize` choice one small process that never imports torch runs
`RecurrentGemmaForCausalLM.from_pretrained(dir, quantize=...)` in its child, cold again, and
reports: load seconds; the child's peak resident set (VmHWM at the end of the load, and
getrusage ru_maxrss over the whole run: a child counts what its parent had resident at the
fork, so the parent is kept small) and the peaks of its anonymous and file-backed parts sampled
from /proc; the loaded model's bytes (every parameter and buffer once: for int8, the linears'
int8 weights and scales, the bf16 embedding and the tied head's int8 copy) and peak / size;
then `optimize` as the CLI applies it and `--decode-steps` batch-1 decode steps. Last, the time
to touch as much new memory as the first model holds (one write per page): the page faults
that any loader pays to build it. The CPU features and kernel level come with the figures.
Needs the checkpoint's size of free disk under --workdir.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

SHARDS = 5
READ_BUFFER = 64 << 20
STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")


# --------------------------------------------------------------------------- the checkpoint
def checkpoint_dir(workdir: Path, layers: int) -> Path:
    return workdir / f"rgemma-9b-shape-{layers}l-bf16"


def build_checkpoint(out: Path, layers: int, seed: int = 0) -> dict:
    """Write RecurrentGemma-9B's shape with `layers` layers as bf16 safetensors in SHARDS shards,
    one tensor at a time (the largest, the 2.1 GB embedding, is all that is ever held). The
    shard limit is the smallest (in 1% steps) that gives SHARDS files. config.json comes last,
    so a directory with one is complete."""
    import torch

    from rgemma.io.checkpoint_files import write_config
    from rgemma.io.shards import ShardEntry, ShardWriter
    from rgemma.models.config import RecurrentGemmaConfig
    from rgemma.pretrained.checkpoint import checkpoint_config
    from rgemma.pretrained.classes import RecurrentGemmaForCausalLM

    config = RecurrentGemmaConfig.from_preset("recurrentgemma-9b", num_hidden_layers=layers)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in RecurrentGemmaForCausalLM(config).state_dict().items()}
    shapes.pop("lm_head.weight")  # tied to the embedding
    entries = [ShardEntry(k, torch.bfloat16, s) for k, s in shapes.items()]
    total = sum(e.nbytes for e in entries)
    limit = total // SHARDS
    while len(ShardWriter(out, entries, limit).shards) > SHARDS:
        limit += total // 100
    out.mkdir(parents=True, exist_ok=True)
    writer, gen = ShardWriter(out, entries, limit), torch.Generator().manual_seed(seed)
    try:
        for e in entries:
            writer.write(e.name, torch.empty(e.shape, dtype=e.dtype).normal_(0, 0.02, generator=gen))
        writer.finish()
    finally:
        writer.close()
    write_config(out, checkpoint_config(config, torch.bfloat16))
    return {"parameters": sum(e.nbytes for e in entries) // 2, "shards": len(writer.shards)}


def shard_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.safetensors"))


# --------------------------------------------------------------------------- reading the files
def drop_cache(files: list[Path]) -> None:
    """Drop the files' clean pages from the page cache (what a cold start reads from disk)."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_seconds(files: list[Path], drop: bool = False) -> float:
    """Read every file once with plain READ_BUFFER reads into one buffer; `drop`: dropping the
    pages read from the page cache behind the reader, as the loader does for a large checkpoint."""
    buf = memoryview(bytearray(READ_BUFFER))
    start = time.perf_counter()
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            offset = 0
            while n := fh.readinto(buf):
                if drop:
                    os.posix_fadvise(fh.fileno(), offset, n, os.POSIX_FADV_DONTNEED)
                offset += n
    return time.perf_counter() - start


def touch_seconds(nbytes: int) -> float:
    """Write one byte in every page of `nbytes` of new memory, held until the end: the page
    faults any loader pays to build a model of that size (in a VM, host-side work too)."""
    chunk, held = 1 << 30, []
    start = time.perf_counter()
    for n in [chunk] * (nbytes // chunk) + [nbytes % chunk]:
        buf = bytearray(n)  # calloc: untouched zero pages
        memoryview(buf)[:: mmap.PAGESIZE] = b"\1" * len(range(0, n, mmap.PAGESIZE))
        held.append(buf)
    return time.perf_counter() - start


# --------------------------------------------------------------------------- the measured child
def status(pid: int | str = "self") -> dict[str, int]:
    """STATUS_FIELDS of /proc/PID/status in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in STATUS_FIELDS:
            out[key] = int(value.split()[0]) * 1024
    return out


def model_bytes(model) -> dict[str, int]:
    """Bytes of every parameter and buffer, each storage counted once, and of the float ones."""
    seen, total, floating = set(), 0, 0
    for t in [*model.parameters(), *model.buffers()]:
        key = t.untyped_storage().data_ptr()
        if key in seen:
            continue
        seen.add(key)
        total += t.untyped_storage().nbytes()
        floating += t.untyped_storage().nbytes() if t.is_floating_point() else 0
    return {"model_bytes": total, "float_bytes": floating}


def load_and_decode(path: Path, quantize: str, dtype: str | None, threads: int, steps: int) -> None:
    """The child: load, report (one JSON line), optimize as the CLI does, decode, report."""
    import torch

    from rgemma import kernels
    from rgemma.accel.speed import optimize
    from rgemma.pretrained.classes import RecurrentGemmaForCausalLM
    from rgemma.text.core import prefill

    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = RecurrentGemmaForCausalLM.from_pretrained(
        path, dtype=dtype, quantize=None if quantize == "none" else quantize
    )
    seconds = time.perf_counter() - start
    report = {
        "load_seconds": round(seconds, 1),
        **model_bytes(model),
        "after_load": status(),
        "cpu_features": list(kernels.cpu_features()),
        "kernel_level": kernels.level(),
        "threads": threads,
    }
    print(json.dumps(report), flush=True)
    if steps <= 0:
        return
    optimize(model, quantize=None if quantize == "none" else quantize)
    with torch.no_grad():
        logits, state = prefill(model, torch.randint(0, model.config.vocab_size, (1, 8)))
        token, active = logits.argmax(-1), torch.ones(1, dtype=torch.bool)
        token = model.decode_step(token, active, state).argmax(-1)  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            token = model.decode_step(token, active, state).argmax(-1)
        seconds = time.perf_counter() - start
    decode = {"decode_tokens_per_s": round(steps / seconds, 2), "after_decode": status()}
    print(json.dumps(decode), flush=True)


def sample(pid: int, peaks: dict, stop: threading.Event) -> None:
    """Keep the highest of each STATUS_FIELDS reading of `pid` in `peaks` until `stop`."""
    while not stop.is_set():
        try:
            now = status(pid)
        except (OSError, ValueError):
            return
        for key, value in now.items():
            peaks[key] = max(peaks.get(key, 0), value)
        time.sleep(0.02)


def measure(path: Path, quantize: str, dtype: str | None, threads: int, steps: int, cold: bool) -> dict:
    """Run load_and_decode in a child; its reports, with the peaks sampled while it loaded
    (`load_peaks`) and over its whole run (`peaks`, and `ru_maxrss`)."""
    if cold:
        drop_cache(shard_files(path))
    args = ["--step", "load", "--dir", str(path), "--quantize", quantize, "--threads", str(threads)]
    args += ["--decode-steps", str(steps)] + (["--dtype", dtype] if dtype else [])
    child = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    peaks, stop = {}, threading.Event()
    sampler = threading.Thread(target=sample, args=(child.pid, peaks, stop), daemon=True)
    sampler.start()
    report: dict = {}
    for line in child.stdout:
        report.update(json.loads(line))
        report.setdefault("load_peaks", dict(peaks))
    rc = child.wait()
    stop.set()
    sampler.join()
    if rc != 0:
        raise SystemExit(f"loading failed with exit code {rc}")
    report["peaks"] = peaks
    report["ru_maxrss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    return report


# --------------------------------------------------------------------------- the driver
def run_json(*args: str) -> list[dict]:
    done = subprocess.run([sys.executable, __file__, *args], check=True, stdout=subprocess.PIPE, text=True)
    return [json.loads(line) for line in done.stdout.splitlines()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="where the checkpoint is kept (required)")
    parser.add_argument("--layers", type=int, default=38, help="layers of the 9B shape (default 38)")
    parser.add_argument("--quantize", default="int8", help="comma-separated: int8, none (default int8)")
    parser.add_argument("--dtype", default=None, help="load dtype (default the checkpoint's, bf16)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--decode-steps", type=int, default=4, help="batch-1 decode steps timed (0: none)")
    parser.add_argument("--cache", choices=("cold", "warm"), default="cold", help="cold: drop pages first")
    parser.add_argument("--clean", action="store_true", help="delete the checkpoint at the end")
    parser.add_argument("--step", choices=("build", "measure", "load"), help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step == "build":
        print(json.dumps(build_checkpoint(args.dir, args.layers)))
        return 0
    if args.step == "load":
        load_and_decode(args.dir, args.quantize, args.dtype, args.threads, args.decode_steps)
        return 0
    if args.workdir is None:
        parser.error("--workdir is required")
    path, cold = checkpoint_dir(args.workdir, args.layers), args.cache == "cold"
    if args.step == "measure":
        print(json.dumps(measure(path, args.quantize, args.dtype, args.threads, args.decode_steps, cold)))
        return 0
    try:
        return run(args, path, cold)
    finally:
        if args.clean:
            shutil.rmtree(path, ignore_errors=True)


def run(args, path: Path, cold: bool) -> int:
    report = {"layers": args.layers, "checkpoint": str(path)}
    if not (path / "config.json").is_file():
        shutil.rmtree(path, ignore_errors=True)  # an interrupted build
        start = time.perf_counter()
        report["build"] = run_json("--step", "build", "--dir", str(path), "--layers", str(args.layers))[0]
        report["build"]["seconds"] = round(time.perf_counter() - start, 1)
    report["reads"] = reads = measure_reads(path, cold)
    base = ["--workdir", str(args.workdir), "--layers", str(args.layers), "--threads", str(args.threads)]
    base += ["--decode-steps", str(args.decode_steps), "--cache", args.cache]
    base += ["--dtype", args.dtype] if args.dtype else []
    modes = args.quantize.split(",")
    for mode in modes:
        report[mode] = run_json("--step", "measure", "--quantize", mode, *base)[0]
    first = report[modes[0]]
    reads["touched_bytes"] = first["model_bytes"]
    reads["touch_seconds"] = round(touch_seconds(first["model_bytes"]), 1)
    print(json.dumps(report, indent=2))
    print(
        f"CPU features: {' '.join(first['cpu_features'])}; kernel level {first['kernel_level']}; "
        f"{args.threads} threads; checkpoint {reads['checkpoint_bytes'] / 1e9:.2f} GB in {reads['shards']} "
        f"shards; reading it: cold {reads['cold_read_seconds']:.1f} s, cold dropping pages behind "
        f"{reads['cold_read_dropping_seconds']:.1f} s, again {reads['plain_read_seconds']:.1f} s; "
        f"touching {reads['touched_bytes'] / 1e9:.1f} GB of new memory {reads['touch_seconds']:.1f} s",
        file=sys.stderr,
    )
    for mode in modes:
        print(summary(mode, report[mode], reads), file=sys.stderr)
    return 0


def measure_reads(path: Path, cold: bool) -> dict:
    """The time to read the shards (cold: their pages dropped from the cache first) with and
    without dropping them behind the reader, and to read them again."""
    files = shard_files(path)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    reads = {
        "checkpoint_parameters": index["metadata"]["total_size"] // 2,  # all bf16
        "checkpoint_bytes": sum(f.stat().st_size for f in files),
        "shards": len(files),
        "cold": cold,
    }
    for name, drop in (("cold_read_dropping_seconds", True), ("cold_read_seconds", False)):
        if cold:
            drop_cache(files)
        reads[name] = round(read_seconds(files, drop), 1)
    reads["plain_read_seconds"] = round(read_seconds(files), 1)
    return reads


def summary(mode: str, r: dict, reads: dict) -> str:
    gb = 1e9
    peak, size = r["after_load"]["VmHWM"], r["model_bytes"]
    lines = [
        f"{mode}: loaded {reads['checkpoint_parameters'] / 1e9:.2f}B parameters in {r['load_seconds']:.1f} s",
        f"  model {size / gb:.2f} GB; peak RSS while loading {peak / gb:.2f} GB = {peak / size:.2f}x "
        f"(RssAnon {r['load_peaks'].get('RssAnon', 0) / gb:.2f} GB, RssFile "
        f"{r['load_peaks'].get('RssFile', 0) / gb:.2f} GB); whole run ru_maxrss {r['ru_maxrss'] / gb:.2f} GB",
    ]
    if "decode_tokens_per_s" in r:
        lines.append(f"  decode batch 1: {r['decode_tokens_per_s']} tok/s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
