"""Sampling: each filter's math, the order in `sample`, seeds, and validation."""

import math

import pytest
import torch

from rgemma.text.sampling import (
    SamplingParams,
    apply_min_p,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    draw,
    sample,
    truncated_probs,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _logits_of(probs: list[float]) -> torch.Tensor:
    """(1, V) logits whose softmax is `probs`."""
    return torch.tensor([probs]).log()


def _kept(logits: torch.Tensor) -> list[int]:
    return torch.isfinite(logits[0]).nonzero().flatten().tolist()


@pytest.fixture
def logits() -> torch.Tensor:
    return torch.randn(8, 50, generator=_gen(0)) * 3


def test_greedy_is_argmax_with_its_logprob(logits):
    ids, logprobs = sample(logits, SamplingParams(temperature=0), _gen(1))
    assert torch.equal(ids, logits.argmax(-1))
    expected = logits.log_softmax(-1).gather(1, ids[:, None]).squeeze(1)
    torch.testing.assert_close(logprobs, expected)


def test_same_seed_same_samples_different_seed_different(logits):
    flat = torch.zeros(64, 1000)  # uniform: two seeds agreeing on 64 draws is ~impossible
    first, _ = sample(flat, SamplingParams(), _gen(7))
    again, _ = sample(flat, SamplingParams(), _gen(7))
    other, _ = sample(flat, SamplingParams(), _gen(8))
    assert torch.equal(first, again)
    assert (first != other).sum() > 32


def test_each_row_draws_from_its_own_generator(logits):
    """With a generator per row, a row's token is the same whatever rows sample beside it."""
    together, _ = sample(logits, SamplingParams(), [_gen(i) for i in range(8)])
    for i in range(8):
        alone, _ = sample(logits[i : i + 1], SamplingParams(), [_gen(i)])
        assert alone.item() == together[i].item()
    with pytest.raises(ValueError, match="generators"):
        sample(logits, SamplingParams(), [_gen(0)])


def test_draw_inverts_the_cdf_and_never_picks_an_impossible_token():
    probs = torch.tensor([[0.0, 0.25, 0.0, 0.75, 0.0, 0.0]]).expand(4, 6)
    u = torch.tensor([0.0, 0.2499, 0.25, 1 - 2**-53], dtype=torch.float64)
    assert draw(probs, u).tolist() == [1, 1, 3, 3]


def test_sampling_frequencies_follow_softmax():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    batch = probs.log().expand(20000, 4)
    ids, _ = sample(batch, SamplingParams(), _gen(3))
    freq = torch.bincount(ids, minlength=4).float() / ids.numel()
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)


def test_top_k_one_and_tiny_top_p_equal_greedy(logits):
    greedy, _ = sample(logits, SamplingParams(temperature=0), None)
    for params in (
        SamplingParams(top_k=1),
        SamplingParams(top_p=1e-6),
        SamplingParams(temperature=5, top_k=1),
    ):
        ids, _ = sample(logits, params, _gen(4))
        assert torch.equal(ids, greedy), params


def test_top_k_keeps_k_largest(logits):
    out = apply_top_k(logits, 5)
    assert (torch.isfinite(out).sum(-1) == 5).all()
    assert torch.equal(out.topk(5).indices.sort().values, logits.topk(5).indices.sort().values)
    assert apply_top_k(logits, 0) is logits


def test_sampled_ids_stay_inside_top_k(logits):
    rows = logits[:1].expand(2000, -1)
    ids, _ = sample(rows, SamplingParams(top_k=3), _gen(5))
    allowed = set(logits[0].topk(3).indices.tolist())
    assert set(ids.tolist()) <= allowed
    assert len(set(ids.tolist())) == 3


def test_top_p_keeps_smallest_nucleus():
    logits = _logits_of([0.5, 0.3, 0.15, 0.05])
    assert _kept(apply_top_p(logits, 0.75)) == [0, 1]
    assert _kept(apply_top_p(logits, 0.85)) == [0, 1, 2]
    assert _kept(apply_top_p(logits, 0.4)) == [0]
    assert apply_top_p(logits, 1.0) is logits


def test_top_p_works_on_unsorted_rows_and_keeps_top_token():
    logits = _logits_of([0.05, 0.3, 0.15, 0.5])
    assert _kept(apply_top_p(logits, 0.75)) == [1, 3]
    assert _kept(apply_top_p(torch.zeros(1, 6), 1e-9)) == [0]


def test_min_p_threshold_is_relative_to_top_probability():
    logits = _logits_of([0.5, 0.3, 0.15, 0.05])
    assert _kept(apply_min_p(logits, 0.2)) == [0, 1, 2]  # threshold 0.1
    assert _kept(apply_min_p(logits, 0.5)) == [0, 1]  # threshold 0.25
    assert _kept(apply_min_p(logits, 1.0)) == [0]
    assert apply_min_p(logits, 0.0) is logits


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5], [2.0, -2.0, 1.0, 0.5]])
    prev = torch.tensor([[0, 1, -1], [3, 3, 3]])
    out = apply_repetition_penalty(logits, prev, 2.0)
    assert torch.equal(out, torch.tensor([[1.0, -4.0, 1.0, 0.5], [2.0, -2.0, 1.0, 0.25]]))


def test_repetition_penalty_ignores_padding_and_counts_once():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    assert torch.equal(apply_repetition_penalty(logits, torch.tensor([[-1, -1]]), 3.0), logits)
    once = apply_repetition_penalty(logits, torch.tensor([[0, 0, 0, -1]]), 2.0)
    assert torch.equal(once, torch.tensor([[1.0, -2.0, 1.0]]))
    assert apply_repetition_penalty(logits, None, 2.0) is logits


def test_penalty_changes_greedy_choice_and_logprob():
    logits = torch.tensor([[3.0, 2.0, -1.0]])
    prev = torch.tensor([[0]])
    ids, logprobs = sample(logits, SamplingParams(temperature=0, repetition_penalty=2.0), None, prev)
    assert ids.tolist() == [1]
    expected = torch.tensor([1.5, 2.0, -1.0]).log_softmax(-1)[1]
    torch.testing.assert_close(logprobs[0], expected)


def test_logprob_is_of_temperature_scaled_untruncated_distribution(logits):
    params = SamplingParams(temperature=0.7, top_k=10, top_p=0.9)
    ids, logprobs = sample(logits, params, _gen(6))
    expected = (logits / 0.7).log_softmax(-1).gather(1, ids[:, None]).squeeze(1)
    torch.testing.assert_close(logprobs, expected)


def test_filters_apply_in_documented_order():
    # top-k first leaves [0.5, 0.3] renormalised to [0.625, 0.375], where top-p 0.6 keeps one
    # token; on the full row top-p 0.6 keeps two. So top-p must see top-k's output.
    logits = _logits_of([0.5, 0.3, 0.15, 0.05]).expand(500, 4)
    ids, _ = sample(logits, SamplingParams(top_k=2, top_p=0.6), _gen(9))
    assert set(ids.tolist()) == {0}
    ids, _ = sample(logits, SamplingParams(top_p=0.6), _gen(9))
    assert set(ids.tolist()) == {0, 1}


def test_half_precision_logits_are_accepted(logits):
    ids, logprobs = sample(logits.bfloat16(), SamplingParams(top_p=0.9), _gen(2))
    assert ids.shape == (8,) and logprobs.dtype == torch.float32
    assert (logprobs <= 0).all()


@pytest.mark.parametrize(
    "field, value",
    [
        ("temperature", -0.1),
        ("temperature", math.inf),
        ("top_k", -1),
        ("top_k", 2.5),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("min_p", -0.1),
        ("min_p", 1.1),
        ("repetition_penalty", 0.0),
    ],
)
def test_invalid_params_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"SamplingParams.{field}"):
        SamplingParams(**{field: value})


def test_apply_temperature_rejects_zero_and_scales():
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(torch.zeros(1, 3), 0.0)
    torch.testing.assert_close(apply_temperature(torch.ones(1, 3), 0.5), torch.full((1, 3), 2.0))


# --------------------------------------------------------------------------- extremes
def _extreme_cases(st):
    """Any accepted SamplingParams, extremes included, and logits that are finite (huge, tiny,
    zero) or masked with -inf, each row with at least one finite value."""
    positive = st.sampled_from([1e-300, 1e-45, 1e-38, 1e-8, 0.5, 1.0, 2.0, 1e8, 1e38, 1e300]) | st.floats(
        min_value=1e-300, max_value=1e300
    )
    params = st.builds(
        SamplingParams,
        temperature=st.just(0.0) | positive,
        top_k=st.integers(0, 2**31) | st.integers(0, 9),
        top_p=st.floats(min_value=0, max_value=1, exclude_min=True) | st.sampled_from([1e-300, 1.0]),
        min_p=st.floats(min_value=0, max_value=1) | st.sampled_from([1e-300, 1.0]),
        repetition_penalty=positive,
    )
    big = float(torch.finfo(torch.float32).max)
    value = st.sampled_from([0.0, -0.0, 1e-45, -1e-45, big, -big, 3e38, -3e38, -math.inf]) | st.floats(
        min_value=-big, max_value=big, width=32
    )
    rows = st.lists(st.lists(value, min_size=8, max_size=8), min_size=1, max_size=3)
    return params, rows.filter(lambda r: all(any(math.isfinite(v) for v in row) for row in r))


def test_any_accepted_params_give_finite_probabilities():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    params_st, rows_st = _extreme_cases(st)

    @hypothesis.settings(max_examples=400, deadline=None, database=None)
    @hypothesis.given(params=params_st, rows=rows_st, seen=st.lists(st.integers(-1, 7), max_size=6))
    def check(params, rows, seen):
        logits = torch.tensor(rows, dtype=torch.float32)
        prev = torch.tensor([seen or [-1]] * len(rows))
        ids, logprobs = sample(logits, params, _gen(0), prev)
        assert torch.isfinite(logprobs).all() and (logprobs <= 0).all(), (ids, logprobs)
        penalised = apply_repetition_penalty(logits, prev, params.repetition_penalty)
        if params.greedy:
            assert torch.equal(ids, penalised.argmax(-1))
            return
        probs = truncated_probs(apply_temperature(penalised, params.temperature), params)
        assert torch.isfinite(probs).all(), probs
        torch.testing.assert_close(probs.sum(-1), torch.ones(len(rows)))
        assert (probs.gather(1, ids[:, None]) > 0).all(), (probs, ids)

    check()


@pytest.mark.parametrize("field", ["temperature", "repetition_penalty"])
def test_a_vanishing_parameter_samples_instead_of_raising(field):
    """The reported failure: 1e-300 overflowed logits to inf and softmax to nan."""
    logits = torch.tensor([[3.0, 0.0, -2.0, -math.inf], [-5.0, -6.0, -7.0, -8.0]])
    ids, logprobs = sample(logits, SamplingParams(**{field: 1e-300}), _gen(0), torch.tensor([[0, 1, 2]] * 2))
    assert torch.isfinite(logprobs).all() and ids.tolist()[0] == 0
