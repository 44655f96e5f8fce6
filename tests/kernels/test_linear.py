"""The native linear kernels at every level this CPU runs, against the exact product.

`kernels.linear` (bf16 weights) and `kernels.int8_linear` (int8 weights, a scale per output
channel) promise x.float() @ w.float().T [* scale] + bias in fp32, up to summation order,
rounded once to x's dtype. The reference is that product in float64; a level the CPU lacks
skips with its reason."""

from __future__ import annotations

import pytest
import torch

from conftest import require_level
from rgemma import kernels

ROWS = (1, 2, 3, 4, 5, 8, 16, 17, 33, 64, 128)
WIDTHS = ((37, 83), (24, 64), (9, 1), (13, 200), (5, 4001))  # (out, in): tails, a multiple of 16, one
# input, and one so wide that 33+ rows are taken in several panels (linear_fma.c, X_BYTES)
DTYPES = (torch.bfloat16, torch.float32)
# The kernel each level picks, for bf16 and for float32 activations.
PICKS = {
    "avx2": ("linear_avx2", "linear_avx2"),
    "avx512": ("linear_avx512", "linear_avx512"),
    "avx512bf16": ("linear_avx512bf16", "linear_avx512"),
    "amx": ("amx_linear", "linear_avx512"),
    "neon": ("linear_neon", "linear_neon"),
}


def _level(name: str) -> str:
    """`name` when this CPU (and the environment) runs it, else skip with the reason."""
    require_level(name)
    if not kernels.available(PICKS[name][0], name):
        pytest.skip(f"kernel level {name!r}: no C compiler, or its kernel did not build")
    return name


def _bound(x, w, scale, bias, ref) -> torch.Tensor:
    """fp32 error for any order of sums: in * 2^-23 * sum |x w| (times |scale|), and the roundings
    of the scale product and bias sum: 2^-22 * (|y| + |bias|)."""
    sums = x.double().abs() @ w.double().abs().T * x.shape[-1] * 2.0**-23
    sums = sums * scale.double().abs() if scale is not None else sums
    return sums + (ref.abs() + (bias.double().abs() if bias is not None else 0)) * 2.0**-22 + 1e-30


def _check(y, x, w, scale, bias):
    assert y.dtype == x.dtype
    check_rounded_once(y, x, w, scale, bias)


def check_rounded_once(y, x, w, scale, bias):
    """y (bf16 or float32, whatever x's dtype) is the exact product within `_bound`, plus half a
    bf16 step when y is bf16."""
    ref = x.double() @ w.double().T
    ref = ref * scale.double() if scale is not None else ref
    ref = ref + bias.double() if bias is not None else ref
    allowed = _bound(x, w, scale, bias, ref)
    if y.dtype == torch.bfloat16:  # rounded once to bf16: at most half a bf16 step more
        allowed = allowed + (ref.abs() + allowed) * 2.0**-8
    assert y.shape == ref.shape
    err = (y.double() - ref).abs()
    assert (err <= allowed).all(), f"worst excess {(err - allowed).max().item():.3g}"


def _case(rows, n_out, k_in, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, k_in, generator=g).to(dtype)
    w = torch.randn(n_out, k_in, generator=g).to(torch.bfloat16)
    q = torch.randint(-127, 128, (n_out, k_in), generator=g, dtype=torch.int8)
    # bf16-representable, so a kernel that reads them as bf16 (AMX) computes the same product
    scale = (torch.rand(n_out, generator=g) * 0.02 + 0.001).to(torch.bfloat16).to(dtype)
    bias = torch.randn(n_out, generator=g).to(torch.bfloat16).to(dtype)
    return x, w, q, scale, bias


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp32"])
@pytest.mark.parametrize("name", kernels.LEVELS[1:])
def test_linear_equals_the_exact_product(name, dtype):
    at = _level(name)
    for i, (rows, (n_out, k_in)) in enumerate((r, s) for r in ROWS for s in WIDTHS):
        x, w, q, scale, bias = _case(rows, n_out, k_in, dtype, i)
        assert kernels.chosen(x, w, at) == PICKS[name][dtype == torch.float32]
        b = bias if i % 2 else None
        _check(kernels.linear(x, w, b, level=at), x, w, None, b)
        _check(kernels.int8_linear(x, q, scale, b, level=at), x, q, scale, b)
        w32 = w.float() * 1.25 + 2.0**-12  # not bf16-representable: all 24 bits read
        assert kernels.chosen(x, w32, at) == PICKS[name][1]  # the FMA kernel, whatever x's dtype
        _check(kernels.linear(x, w32, b, level=at), x, w32, None, b)


@pytest.mark.parametrize("name", kernels.LEVELS[1:])
def test_bf16_output_is_the_fp32_output_rounded_by_torch(name):
    """One rounding, to nearest even as torch rounds: bit for bit (same order of sums)."""
    at = _level(name)
    if PICKS[name][0] != PICKS[name][1]:
        pytest.skip(f"bf16 and fp32 activations take different kernels at {name!r}")
    x, w, q, scale, bias = _case(5, 37, 83, torch.bfloat16, 7)
    y, y32 = kernels.linear(x, w, bias, level=at), kernels.linear(x.float(), w, bias, level=at)
    assert torch.equal(y, y32.to(torch.bfloat16))
    y, y32 = (kernels.int8_linear(t, q, scale, bias, level=at) for t in (x, x.float()))
    assert torch.equal(y, y32.to(torch.bfloat16))


@pytest.mark.parametrize("name", kernels.LEVELS[1:])
def test_ties_round_to_even_and_nan_stays_nan(name):
    """Sums that are exact bf16 ties (1 + odd * 2^-8) round as torch rounds, to even."""
    at = _level(name)
    x = torch.zeros(5, 18, dtype=torch.bfloat16)
    x[:, 0], x[:, 17] = 1.0, torch.tensor([1.0, 3.0, 5.0, 7.0, float("nan")]) * 2.0**-8
    w, q, scale = torch.ones(3, 18, dtype=torch.bfloat16), torch.ones(3, 18, dtype=torch.int8), torch.ones(3)
    expect = (x.float() @ w.float().T).to(torch.bfloat16)  # the float32 sums are exact
    assert torch.equal(kernels.linear(x, w, level=at)[:4], expect[:4])
    assert torch.equal(kernels.int8_linear(x, q, scale, level=at)[:4], expect[:4])
    assert kernels.linear(x, w, level=at)[4].isnan().all()


@pytest.mark.parametrize("name", kernels.LEVELS[1:])
def test_leading_dims_strides_and_mismatches(name):
    at = _level(name)
    x, w, q, scale, bias = _case(6, 19, 45, torch.float32, 3)
    x3 = x.view(2, 3, 45)
    torch.testing.assert_close(
        kernels.linear(x3, w, bias, level=at), kernels.linear(x, w, bias, level=at).view(2, 3, 19)
    )
    xt = torch.randn(45, 4).t()  # not contiguous
    torch.testing.assert_close(kernels.linear(xt, w, level=at), kernels.linear(xt.contiguous(), w, level=at))
    assert kernels.linear(x[:0], w, level=at).shape == (0, 19)
    for bad in (torch.randn(2, 44), torch.randn(44), torch.tensor(1.0)):
        with pytest.raises(ValueError, match="do not match"):
            kernels.linear(bad, w, level=at)
        with pytest.raises(ValueError, match="do not match"):
            kernels.int8_linear(bad, q, scale, level=at)


def test_no_kernel_means_none():
    """Inputs no kernel takes, or level "none", give None (the caller runs torch's)."""
    x, w, q, scale, _ = _case(2, 8, 32, torch.float32, 0)
    assert kernels.linear(x, w, level="none") is None
    assert kernels.int8_linear(x, q, scale, level="none") is None
    assert kernels.linear(x.double(), w) is None and kernels.linear(x, w.half()) is None
    assert kernels.linear(x, q) is None and kernels.int8_linear(x, w, scale) is None  # swapped
    assert kernels.linear(x.requires_grad_(), w) is None


def test_levels_come_from_the_cpu_and_the_environment_caps_them(monkeypatch):
    monkeypatch.setattr(kernels, "_arch", lambda: "x86_64")  # the x86-64 levels, on any machine
    found = kernels.cpu_level()
    assert set(kernels.cpu_features()) <= {
        f for fs in kernels.ARCH_LEVEL_FLAGS["x86_64"].values() for f in fs
    }
    monkeypatch.delenv("RGEMMA_NATIVE", raising=False)
    monkeypatch.delenv("RGEMMA_KERNEL_LEVEL", raising=False)
    assert kernels.level() == found
    for cap in kernels.levels():  # down, never up past the CPU's
        monkeypatch.setenv("RGEMMA_KERNEL_LEVEL", cap)
        assert kernels.level() == min(cap, found, key=kernels.levels().index)
    monkeypatch.setenv("RGEMMA_KERNEL_LEVEL", "avx2")
    assert not kernels.int8_gemv_available() and not kernels.amx_available()
    if kernels.available("linear_avx2", "avx2"):
        assert kernels.chosen(
            torch.ones(1, 4, dtype=torch.bfloat16), torch.ones(2, 4, dtype=torch.bfloat16)
        ) == ("linear_avx2")
    skylake = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl")  # AVX-512 without VNNI/BF16
    monkeypatch.setattr(kernels, "_cpu_flags", lambda: skylake)
    monkeypatch.delenv("RGEMMA_KERNEL_LEVEL")
    assert kernels.cpu_level() == "avx512" and kernels.level() == "avx512"
    monkeypatch.setattr(kernels, "_cpu_flags", lambda: (*skylake, "avx512_vnni", "avx512_bf16"))
    assert kernels.cpu_level() == "avx512bf16"
    monkeypatch.setenv("RGEMMA_KERNEL_LEVEL", "sse9")
    with pytest.raises(ValueError, match="unknown kernel level"):
        kernels.level()
    monkeypatch.setenv("RGEMMA_KERNEL_LEVEL", "amx")
    monkeypatch.setenv("RGEMMA_NATIVE", "0")
    assert kernels.level() == "none" and kernels.linear(torch.ones(1, 4), torch.ones(2, 4).bfloat16()) is None


@pytest.mark.skipif(kernels.shutil.which("cc") is None, reason="needs a C compiler")
def test_every_kernel_compiles_even_where_it_cannot_run():
    """A CPU without AVX-512 or AMX still catches a kernel that no longer builds (each of this
    architecture's kernels; test_neon.py cross-compiles the aarch64 one)."""
    for kernel in kernels.KERNELS.values():
        if kernel.level in kernels.levels():
            assert kernels._build(kernels.shutil.which("cc"), kernel).exists()


def test_a_cpus_tuning_flags_join_the_build_command(monkeypatch):
    """int8_gemv drops its software prefetch on AMD family 25 (measured faster on Zen 4), keeps
    it on Zen 5 (family 26) and Intel; a vendor-wide entry applies where no family entry does."""
    gemv = kernels.KERNELS["int8_gemv"]
    cases = (
        ("AuthenticAMD", "25", True),
        ("AuthenticAMD", "26", False),
        ("GenuineIntel", "6", False),
        ("", "", False),
    )
    for vendor, family, expect in cases:
        monkeypatch.setattr(kernels, "_vendor", lambda v=vendor: v)
        monkeypatch.setattr(kernels, "_cpuinfo", lambda field, f=family: f if field == "cpu family" else "")
        assert ("-DPREFETCH=0" in kernels.build_command("cc", gemv)) == expect, (vendor, family)
    tuned = kernels.Kernel(
        *[getattr(gemv, f) for f in ("source", "level", "cpu_flags", "cflags", "function", "argtypes")],
        vendor_cflags=(("AuthenticAMD", ("-DA",)), ("AuthenticAMD/26", ("-DB",))),
    )
    monkeypatch.setattr(kernels, "_vendor", lambda: "AuthenticAMD")
    monkeypatch.setattr(kernels, "_cpuinfo", lambda field: "26" if field == "cpu family" else "")
    assert "-DB" in kernels.build_command("cc", tuned) and "-DA" not in kernels.build_command("cc", tuned)
    monkeypatch.setattr(kernels, "_cpuinfo", lambda field: "25" if field == "cpu family" else "")
    assert "-DA" in kernels.build_command("cc", tuned) and "-DB" not in kernels.build_command("cc", tuned)
    assert kernels.build_command("cc", kernels.KERNELS["linear_avx2"])[:1] == ["cc"]


@pytest.mark.skipif(kernels.shutil.which("cc") is None, reason="needs a C compiler")
def test_a_header_change_builds_the_kernel_again(tmp_path, monkeypatch):
    """The cached library is keyed by the headers the sources include, not only the source."""
    here = tmp_path / "kernels"
    here.mkdir()
    for f in kernels.HERE.glob("*.[ch]"):
        (here / f.name).write_bytes(f.read_bytes())
    monkeypatch.setattr(kernels, "HERE", here)
    monkeypatch.setenv("RGEMMA_CACHE", str(tmp_path / "cache"))
    kernel = kernels.KERNELS["quantize_avx2"]
    first = kernels._build(kernels.shutil.which("cc"), kernel)
    (here / "scalars.h").write_text((here / "scalars.h").read_text() + "\n/* changed */\n")
    second = kernels._build(kernels.shutil.which("cc"), kernel)
    assert first != second and first.exists() and second.exists()
