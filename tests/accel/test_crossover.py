"""The crossover from rgemma's FMA kernels to torch's GEMM (rgemma.accel.crossover): measured
once per machine and cached, forced by RGEMMA_GEMM_ROWS, and obeyed by the decode linears."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from rgemma import kernels
from rgemma.accel import crossover
from rgemma.accel.linears import MatVecLinear


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RGEMMA_CACHE", str(tmp_path))
    monkeypatch.delenv("RGEMMA_GEMM_ROWS", raising=False)
    crossover._cached.cache_clear()
    yield tmp_path
    crossover._cached.cache_clear()


def _fake_race(monkeypatch, torch_wins_from: int | None, missing_kernel: bool = False):
    """_race as if torch's GEMM were faster from `torch_wins_from` rows (None: never)."""
    seen = []

    def race(native, gemm):
        rows = crossover.LADDER[len(seen)]
        seen.append(rows)
        if missing_kernel:
            return None, 1.0
        slower = torch_wins_from is not None and rows >= torch_wins_from
        return (2.0 if slower else 1.0), 1.0

    monkeypatch.setattr(crossover, "_race", race)
    return seen


@pytest.mark.parametrize(
    ("torch_wins_from", "missing", "want"),
    [(16, False, 8), (32, False, 16), (128, False, 64), (None, False, 128), (None, True, 8)],
)
def test_measure_keeps_the_rows_up_to_where_torch_wins(monkeypatch, torch_wins_from, missing, want):
    seen = _fake_race(monkeypatch, torch_wins_from, missing)
    assert crossover.measure(torch.bfloat16, shape=(8, 16)) == want
    assert seen == [r for r in crossover.LADDER if r <= want or r == seen[-1]]  # stops at the first loss


def test_within_tolerance_the_kernel_keeps_the_rows(monkeypatch):
    monkeypatch.setattr(crossover, "_race", lambda a, b: (crossover.TOLERANCE * 0.99, 1.0))
    assert crossover.measure(torch.float32, shape=(8, 16)) == crossover.LADDER[-1]


def test_measured_once_then_read_from_the_cache(fresh_cache, monkeypatch):
    calls = []
    monkeypatch.setattr(crossover, "measure", lambda dtype: calls.append(dtype) or 32)
    assert crossover.gemm_rows(torch.bfloat16) == 32
    crossover._cached.cache_clear()  # a new process
    assert crossover.gemm_rows(torch.bfloat16) == 32
    assert calls == [torch.bfloat16]
    table = json.loads(crossover.cache_path().read_text())
    assert list(table.values()) == [32] and "bfloat16|" in next(iter(table))
    assert crossover.gemm_rows(torch.float32) == 32 and len(calls) == 2  # a key per dtype
    assert sorted(p.name for p in fresh_cache.iterdir()) == ["crossover.json"]  # no temp left


@pytest.mark.parametrize("damage", ["{not json", "[1, 2]", '{"other": 5}'])
def test_a_damaged_cache_is_measured_again_and_others_keys_kept(fresh_cache, monkeypatch, damage):
    crossover.cache_path().write_text(damage)
    monkeypatch.setattr(crossover, "measure", lambda dtype: 16)
    assert crossover.gemm_rows(torch.bfloat16) == 16
    table = json.loads(crossover.cache_path().read_text())
    assert 16 in table.values() and (damage != '{"other": 5}' or table["other"] == 5)


def test_a_read_only_cache_still_answers(fresh_cache, monkeypatch):
    monkeypatch.setattr(crossover, "measure", lambda dtype: 64)
    monkeypatch.setattr(crossover, "cache_path", lambda: fresh_cache / "missing-dir" / "file" / "x.json")
    (fresh_cache / "missing-dir").write_text("a file where a folder should be")
    assert crossover.gemm_rows(torch.bfloat16) == 64


def test_the_environment_forces_it_and_bad_values_are_one_line(monkeypatch):
    monkeypatch.setenv("RGEMMA_GEMM_ROWS", "24")
    assert crossover.gemm_rows(torch.bfloat16) == 24
    for bad in ("-1", "ten", "1.5"):
        monkeypatch.setenv("RGEMMA_GEMM_ROWS", bad)
        with pytest.raises(ValueError, match="RGEMMA_GEMM_ROWS must be a count of rows"):
            crossover.gemm_rows(torch.bfloat16)


def test_the_real_measurement_returns_a_ladder_value(fresh_cache):
    assert crossover.measure(torch.float32, shape=(64, 96)) in (crossover.MIN_ROWS, *crossover.LADDER)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_decode_linears_take_the_kernel_up_to_the_crossover_then_torch(monkeypatch, dtype):
    if kernels.chosen(torch.ones(2, 8, dtype=dtype), torch.ones(4, 8, dtype=dtype)) is None:
        pytest.skip("no FMA kernel runs these dtypes on this CPU")
    if dtype == torch.bfloat16 and kernels.amx_available():
        pytest.skip("bf16 takes the AMX kernel on this CPU")
    monkeypatch.setenv("RGEMMA_GEMM_ROWS", "12")
    calls = []
    real = kernels.linear
    monkeypatch.setattr(kernels, "linear", lambda *a, **k: calls.append(a[0].shape[0]) or real(*a, **k))
    torch.manual_seed(0)
    layer = MatVecLinear.from_linear(nn.Linear(40, 24).to(dtype))
    plain = nn.Linear(40, 24).to(dtype)
    plain.load_state_dict(layer.state_dict())
    for rows in (1, 8, 12, 13, 40):
        x = torch.randn(rows, 40, dtype=dtype)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), plain(x), rtol=2**-7, atol=2**-7)
    # float32 has no crossover: its rows decode alike whatever the batch
    assert calls == ([1, 8, 12] if dtype == torch.bfloat16 else [1, 8, 12, 13, 40])


def test_float32_rows_are_the_same_alone_or_batched(monkeypatch):
    """Even where torch's GEMM would win, float32 keeps the batch-invariant FMA kernel."""
    if kernels.chosen(torch.ones(2, 8), torch.ones(4, 8)) is None:
        pytest.skip("no FMA kernel runs float32 on this CPU")
    monkeypatch.setenv("RGEMMA_GEMM_ROWS", "0")
    torch.manual_seed(0)
    layer = MatVecLinear.from_linear(nn.Linear(300, 70))
    x = torch.randn(40, 300)
    with torch.no_grad():
        batched = layer(x)
        alone = torch.cat([layer(x[i : i + 1]) for i in range(40)])
    assert torch.equal(batched, alone)
