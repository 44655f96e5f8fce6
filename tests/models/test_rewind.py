"""Exact rewinds (rgemma.models.rewind): a traced call over T tokens, taken back to after its
first j tokens, equals a state that saw only those j tokens: every tensor and counter."""

import pytest
import torch

from conftest import random_model, tiny_config
from rgemma import State

W = 8
TOL = dict(rtol=1e-5, atol=1e-5)  # the values a one-token call computes differ in the last bits
pytestmark = pytest.mark.usefixtures("no_grad")


@pytest.fixture
def no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def model():
    return random_model(tiny_config(attention_window_size=W))


def fed(model, ids, sizes):
    """The state after feeding ids in chunks of `sizes` (empty: a fresh state)."""
    state, s = State.zeros(model.config, ids.shape[0], torch.float32), 0
    for n in sizes:
        model(ids[:, s : s + n], cache=state, use_cache=True)
        s += n
    return state


def assert_same(a: State, b: State):
    ta, tb = a.tensors(), b.tensors()
    assert ta.keys() == tb.keys()
    for name in ta:
        torch.testing.assert_close(ta[name], tb[name], **TOL, msg=name)


@pytest.mark.parametrize(
    "prefix,T",
    [(0, 5), (3, 4), (6, 5), (7, 9), (5, 20), (13, 3), (1, 1)],  # chunks crossing W, longer than W
)
def test_rewind_to_every_prefix_equals_feeding_it(model, prefix, T):
    torch.manual_seed(prefix * 100 + T)
    ids = torch.randint(0, 97, (2, prefix + T))
    head = [prefix] if prefix else []
    for j in range(T + 1):
        state = fed(model, ids, head)
        out = model(ids[:, prefix:], cache=state, use_cache=True, rewind=True)
        assert out.rewind.length == T
        out.rewind.apply(state, j)
        assert_same(state, fed(model, ids, head + ([j] if j else [])))


def test_rewind_per_row_then_continue(model):
    """Rows rewound by different amounts continue exactly as rows that never saw the rest."""
    ids = torch.randint(0, 97, (3, 30))
    state = fed(model, ids, [10])
    model(ids[:, 10:21], cache=state, use_cache=True, rewind=True).rewind.apply(
        state, torch.tensor([0, 4, 11])
    )
    for row, keep in enumerate([0, 4, 11]):
        alone = fed(model, ids[row : row + 1], [10 + keep])
        assert_same(state.select([row]), alone)
        nxt = ids[row : row + 1, 25:28]
        torch.testing.assert_close(
            model(nxt, cache=state.select([row]), use_cache=True).logits,
            model(nxt, cache=alone, use_cache=True).logits,
            **TOL,
        )


def test_rewind_with_document_resets(model):
    ids = torch.randint(0, 97, (1, 16))
    pos = torch.tensor([[0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 0, 1, 2]])
    for j in range(11):
        state = State.zeros(model.config, 1, torch.float32)
        model(ids[:, :5], position_ids=pos[:, :5], cache=state, use_cache=True)
        model(ids[:, 5:15], position_ids=pos[:, 5:15], cache=state, use_cache=True, rewind=True).rewind.apply(
            state, j
        )
        ref = State.zeros(model.config, 1, torch.float32)
        model(ids[:, : 5 + j], position_ids=pos[:, : 5 + j], cache=ref, use_cache=True)
        assert_same(state, ref)


def test_rewind_refuses_padding_and_bad_keep(model):
    state = fed(model, torch.randint(0, 97, (2, 4)), [4])
    with pytest.raises(ValueError, match="padding"):
        model(
            torch.ones(2, 3, dtype=torch.long),
            attention_mask=torch.tensor([[0, 1, 1], [1, 1, 1]]),
            cache=state,
            rewind=True,
        )
    rec = model(torch.ones(2, 3, dtype=torch.long), cache=state, use_cache=True, rewind=True).rewind
    with pytest.raises(ValueError, match="keep"):
        rec.apply(state, 4)
