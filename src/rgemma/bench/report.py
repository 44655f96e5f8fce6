"""`rgemma bench`'s report: a line per figure as it is measured, and the markdown table of a
whole run (one row per shape, dtype, measure and size; one column per implementation)."""

from __future__ import annotations

from rgemma.bench.trace import kernel_line


def ceilings_line(c: dict) -> str:
    return (
        f"ceilings: GEMM bf16 {c['gemm_bf16_gflops']:.0f} GFLOP/s, fp32 "
        f"{c['gemm_fp32_gflops']:.0f} GFLOP/s; memory {c['bandwidth_gbs']:.1f} GB/s (copy "
        f"{c['copy_gbs']:.1f}, sum {c['sum_gbs']:.1f}, gemv {c['gemv_gbs']:.1f})"
    )


def format_record(r: dict) -> str:
    head = f"{r['shape']:6s} {r['dtype']:4s} {r['impl']:14s} {r['measure']:8s} {r['size']:>6}"
    if "error" in r:
        return f"{head}  FAILED: {r['error']}"
    if r["measure"] == "int8-error":
        return (
            f"{head}  logits vs unquantized: max |diff| {r['max_abs']:.3f} (of max "
            f"{r['ref_max_abs']:.1f}), mean {r['mean_abs']:.4f}, top-1 agreement "
            f"{100 * r['top1_agreement']:.1f}%"
        )
    ms = f" {r['ms_per_token']:8.2f} ms/tok" if "ms_per_token" in r else ""
    roof = f" roofline {100 * r['roofline_frac']:5.1f}%" if "roofline_frac" in r else ""
    busy = "  CONTENDED" if r.get("contended") else ""
    kernel = f"  kernel {r['kernel']}" if "kernel" in r else ""
    return (
        f"{head} {r['tok_s']:10.1f} tok/s{ms}{roof}  rss {r['peak_rss_mb']:7.0f} MB"
        f"  cpu {100 * r['cpu']:3.0f}%  load {r['load']:.1f}{kernel}{busy}"
    )


def format_table(report: dict, baseline: str = "transformers") -> str:
    """A markdown table: one row per (shape, dtype, measure, size), one column per impl, and the
    kernels rgemma's products ran; above it, the CPU features and the kernel level."""
    rows, impls = {}, []
    for r in report["results"]:
        if r["measure"] == "int8-error":
            continue
        key = (r["shape"], r["dtype"], r["measure"], r["size"])
        rows.setdefault(key, {})[r["impl"]] = r
        if r["impl"] not in impls:
            impls.append(r["impl"])
    lines = [
        kernel_line(report.get("machine", {})),
        "",
        "| shape | dtype | measure | size | "
        + " | ".join(impls)
        + f" | rgemma / {baseline} | rgemma roofline | rgemma peak RSS | rgemma kernel |",
        "|" + "---|" * (len(impls) + 8),
    ]
    for (shape, dtype, measure, size), by_impl in rows.items():
        cells = [_cell(by_impl.get(i), measure) for i in impls]
        ours, theirs = by_impl.get("rgemma", {}), by_impl.get(baseline, {})
        ratio = f"{ours['tok_s'] / theirs['tok_s']:.2f}x" if "tok_s" in ours and "tok_s" in theirs else ""
        roof = f"{100 * ours['roofline_frac']:.0f}%" if "roofline_frac" in ours else ""
        rss = f"{ours['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in ours else ""
        lines.append(
            f"| {shape} | {dtype} | {measure} | {size} | "
            + " | ".join(cells)
            + f" | {ratio} | {roof} | {rss} | {ours.get('kernel', '')} |"
        )
    return "\n".join(lines)


def _cell(r: dict | None, measure: str) -> str:
    if r is None:
        return ""
    if "error" in r:
        return "failed: " + r["error"].split(":")[0]
    unit = {"position": "tok", "products": "step"}.get(measure)
    if unit:
        return f"{r['ms_per_token']:.2f} ms/{unit}"
    return f"{r['tok_s']:.1f} tok/s"
