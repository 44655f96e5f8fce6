"""float16 models: attention masks after the fp32 upcast, so the mask value never overflows."""

import pytest
import torch

from conftest import random_model
from rgemma.accel import configure
from rgemma.models.griffin import MIN_LOGIT, attend_ref


@pytest.mark.parametrize("impl", ["ref", "sdpa"])
def test_float16_model_decodes_like_float32(impl):
    ids = torch.randint(0, 97, (2, 5), generator=torch.Generator().manual_seed(0))
    want = configure(random_model(), attention=impl).generate(ids, max_new_tokens=12, eos_token_id=[])
    half = configure(random_model().to(torch.float16), attention=impl)
    got = half.generate(ids, max_new_tokens=12, eos_token_id=[])
    assert got.tolist() == want.tolist()
    logits = half(got[:, :-1], use_cache=True).logits
    assert torch.isfinite(logits).all()


def test_attend_ref_float16_with_masked_and_empty_rows():
    q, k, v = (torch.randn(1, 3, 4, 8, dtype=torch.float16) for _ in range(3))
    k, v = k[:, :, :1], v[:, :, :1]
    mask = torch.tensor([[[True, False, False], [True, True, False], [False, False, False]]])
    out, probs = attend_ref(q, k, v, mask, 8**-0.5)
    assert torch.isfinite(out).all() and torch.isfinite(probs).all()
    assert probs[0, :, 0, 1:].eq(0).all()  # masked keys get nothing


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masking_after_upcast_is_bit_identical_for_bf16_and_fp32(dtype):
    """The old expression masked in the model dtype, then upcast; masking after the upcast
    must give the very same probabilities (empty rows included)."""
    scores = torch.randn(3, 4, 2, 9).mul(30).to(dtype)
    hidden = torch.rand(3, 4, 2, 9) < 0.5
    hidden[0, 0, 0] = True  # a row with no visible key
    old = torch.softmax(scores.masked_fill(hidden, MIN_LOGIT).float(), -1)
    new = torch.softmax(scores.float().masked_fill(hidden, MIN_LOGIT), -1)
    assert torch.equal(old, new)
