"""linear_fma.c's NEON variant (aarch64), cross-compiled with neon_driver.c and run under
qemu-user, against the exact product as test_linear.py checks the x86 variants; and the aarch64
kernel levels, from a faked /proc/cpuinfo.

The qemu tests skip unless aarch64-linux-gnu-gcc and qemu-aarch64 (or qemu-aarch64-static) are
on PATH (Debian: apt-get install gcc-aarch64-linux-gnu qemu-user). The driver is linked
statically, so qemu needs no aarch64 sysroot."""

from __future__ import annotations

import shutil
import struct
import subprocess
from itertools import product
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_linear import WIDTHS, _case, check_rounded_once

from rgemma import kernels

HERE = Path(__file__).parent
CROSS_CC = "aarch64-linux-gnu-gcc"
QEMUS = ("qemu-aarch64", "qemu-aarch64-static")
ROWS = (1, 2, 3, 5, 8, 17, 128)  # one row (NB1 streams), tiles of 1 to 3 rows, panels (128)
WEIGHTS = (torch.bfloat16, torch.int8, torch.float32)
WEIGHT_KINDS = {torch.bfloat16: 0, torch.int8: 1, torch.float32: 2}  # linear_fma.c's wk
KINDS = tuple(product((torch.float32, torch.bfloat16), repeat=4))  # dtypes of x, scale, bias, y


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> list[str]:
    """The command that runs neon_driver.c and linear_fma.c, built once for aarch64 with
    linear_neon's flags, under qemu."""
    cc, qemu = shutil.which(CROSS_CC), next(filter(None, map(shutil.which, QEMUS)), None)
    if cc is None or qemu is None:
        pytest.skip(f"needs {CROSS_CC} and {' or '.join(QEMUS)} on PATH to run the NEON kernel")
    kernel = kernels.KERNELS["linear_neon"]
    flags = [f for f in kernels.BASE_FLAGS if f not in ("-shared", "-fPIC")]
    exe = tmp_path_factory.mktemp("neon") / "neon_driver"
    sources = [str(kernels.HERE / kernel.source), str(HERE / "neon_driver.c")]
    build = subprocess.run(
        [cc, *flags, "-static", *kernel.cflags, *sources, "-o", str(exe)], capture_output=True, timeout=300
    )
    assert build.returncode == 0, build.stderr.decode()
    return [qemu, str(exe)]


def _bytes(t: torch.Tensor | None) -> bytes:
    return b"" if t is None else t.contiguous().view(torch.uint8).numpy().tobytes()


def _kinds(x, scale, bias, y_dtype) -> int:
    """linear_fma.c's kinds word: bit 0 x, 1 scale, 2 bias, 3 y, each set for bf16."""
    dtypes = [t.dtype if t is not None else torch.float32 for t in (x, scale, bias)] + [y_dtype]
    return sum((dtype == torch.bfloat16) << i for i, dtype in enumerate(dtypes))


def _input(x, w, scale, bias, y_dtype, threads) -> bytes:
    """One case as neon_driver.c reads it."""
    (rows, k_in), n_out = x.shape, w.shape[0]
    kinds = _kinds(x, scale, bias, y_dtype)
    head = (rows, n_out, k_in, WEIGHT_KINDS[w.dtype], kinds, threads, scale is not None, bias is not None)
    return struct.pack("<8q", *head) + b"".join(map(_bytes, (x, w, scale, bias)))


def _run(driver: list[str], cases: list[tuple]) -> list[torch.Tensor]:
    """y for each case (x, w, scale, bias, y dtype, threads), from one run of the driver."""
    run = subprocess.run(
        driver, input=b"".join(_input(*case) for case in cases), capture_output=True, timeout=600
    )
    assert run.returncode == 0, run.stderr.decode()
    out = run.stdout
    ys, at = [], 0
    for x, w, _, _, y_dtype, _ in cases:
        (status,) = struct.unpack_from("<q", out, at)
        assert status == 0
        shape = (x.shape[0], w.shape[0])
        size = shape[0] * shape[1] * y_dtype.itemsize
        ys.append(torch.frombuffer(bytearray(out[at + 8 : at + 8 + size]), dtype=y_dtype).view(shape))
        at += 8 + size
    assert at == len(out)
    return ys


def _weights(dtype: torch.dtype, w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """test_linear's weights: bf16 w, int8 q, or float32 that is not bf16-representable."""
    return {torch.bfloat16: w, torch.int8: q, torch.float32: w.float() * 1.25 + 2.0**-12}[dtype]


def _cases() -> list[tuple]:
    """Each weight dtype x ROWS x WIDTHS (tails of a block of 8 inputs and whole blocks), with and
    without bias (and a scale with int8 weights), the 16 mixes of bf16 and float32 for x, scale,
    bias and y and 1 or 2 threads cycled through them."""
    cases = []
    shapes = product(WEIGHTS, ROWS, WIDTHS, (False, True))
    for i, (w_dtype, rows, (n_out, k_in), with_bias) in enumerate(shapes):
        x_dtype, s_dtype, b_dtype, y_dtype = KINDS[i // 2 % len(KINDS)]
        x, w, q, scale, bias = _case(rows, n_out, k_in, x_dtype, i)
        scale = scale.to(s_dtype) if w_dtype == torch.int8 else None  # bf16-representable: exact
        bias = bias.to(b_dtype) if with_bias else None
        cases.append((x, _weights(w_dtype, w, q), scale, bias, y_dtype, 2 if i % 3 == 0 else 1))
    return cases


def test_neon_equals_the_exact_product(driver):
    cases = _cases()
    for (x, w, scale, bias, _, _), y in zip(cases, _run(driver, cases), strict=True):
        check_rounded_once(y, x, w, scale, bias)


def test_neon_bf16_output_is_the_fp32_output_rounded_by_torch(driver):
    """One rounding, to nearest even as torch rounds: bit for bit (the same sums)."""
    cases = []
    for w_dtype, rows in product(WEIGHTS, (1, 5, 17)):
        x, w, q, scale, bias = _case(rows, 37, 83, torch.bfloat16, rows)
        scale = scale if w_dtype == torch.int8 else None
        cases += [
            (x, _weights(w_dtype, w, q), scale, bias, y_dtype, 2)
            for y_dtype in (torch.float32, torch.bfloat16)
        ]
    ys = _run(driver, cases)
    for y_bf16, y32 in zip(ys[1::2], ys[::2], strict=True):
        assert torch.equal(y_bf16, y32.to(torch.bfloat16))


def test_neon_ties_round_to_even_and_nan_stays_nan(driver):
    """Sums that are exact bf16 ties (1 + odd * 2^-8) round as torch rounds, to even."""
    x = torch.zeros(5, 18, dtype=torch.bfloat16)
    x[:, 0], x[:, 17] = 1.0, torch.tensor([1.0, 3.0, 5.0, 7.0, float("nan")]) * 2.0**-8
    w = torch.ones(3, 18, dtype=torch.bfloat16)
    expect = (x.float() @ w.float().T).to(torch.bfloat16)  # the float32 sums are exact
    weights = (w, torch.ones(3, 18, dtype=torch.int8), w.float())
    cases = [
        (x, wt, torch.ones(3) if wt.dtype == torch.int8 else None, None, torch.bfloat16, 1) for wt in weights
    ]
    for y in _run(driver, cases):
        assert torch.equal(y[:4], expect[:4]) and y[4].isnan().all()


CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm
CPU implementer\t: 0x41
"""


def _fake_aarch64(monkeypatch, cpuinfo: str) -> None:
    """This machine as an aarch64 Linux one whose /proc/cpuinfo reads `cpuinfo`; linear_neon
    counts as built."""
    monkeypatch.setattr(kernels.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(kernels, "Path", lambda _: SimpleNamespace(read_text=lambda: cpuinfo))
    monkeypatch.setattr(kernels, "_cpuinfo", kernels._cpuinfo.__wrapped__)  # uncached: reads `cpuinfo`
    monkeypatch.setattr(kernels, "_cpu_flags", kernels._cpu_flags.__wrapped__)
    monkeypatch.setattr(kernels, "_library", lambda name: object() if name == "linear_neon" else None)
    monkeypatch.delenv("RGEMMA_NATIVE", raising=False)
    monkeypatch.delenv("RGEMMA_KERNEL_LEVEL", raising=False)


def test_aarch64_levels_come_from_the_features_line(monkeypatch):
    _fake_aarch64(monkeypatch, CPUINFO)
    assert kernels.levels() == ("none", "neon")
    assert kernels.cpu_features() == ("asimd",) and kernels.cpu_level() == "neon" == kernels.level()
    x, w = torch.ones(2, 8, dtype=torch.bfloat16), torch.ones(3, 8, dtype=torch.bfloat16)
    for weight in (w, w.char(), w.float()):
        for acts in (x, x.float()):
            assert kernels.chosen(acts, weight) == "linear_neon" == kernels.chosen(acts, weight, "neon")
    assert not kernels.int8_gemv_available() and not kernels.amx_available()
    assert not kernels.available("linear_avx2") and not kernels.fast_half_gemm(torch.bfloat16)
    monkeypatch.setenv("RGEMMA_KERNEL_LEVEL", "none")
    assert kernels.level() == "none" and kernels.chosen(x, w) is None
    monkeypatch.setenv("RGEMMA_KERNEL_LEVEL", "avx2")  # another architecture's level
    with pytest.raises(ValueError, match="unknown kernel level 'avx2' on aarch64; the levels are none, neon"):
        kernels.level()


def test_aarch64_without_advanced_simd_runs_no_kernel(monkeypatch):
    _fake_aarch64(monkeypatch, CPUINFO.replace(" asimd ", " "))
    assert kernels.cpu_features() == () and kernels.cpu_level() == "none"
    assert kernels.chosen(torch.ones(1, 8), torch.ones(3, 8)) is None


def test_x86_rejects_the_neon_level(monkeypatch):
    monkeypatch.setattr(kernels, "_arch", lambda: "x86_64")
    monkeypatch.delenv("RGEMMA_KERNEL_LEVEL", raising=False)
    assert (
        not kernels.available("linear_neon")
        and kernels.chosen(torch.ones(1, 8), torch.ones(3, 8)) != "linear_neon"
    )
    monkeypatch.setenv("RGEMMA_KERNEL_LEVEL", "neon")
    with pytest.raises(ValueError, match="unknown kernel level 'neon' on x86_64"):
        kernels.level()
