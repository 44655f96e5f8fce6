"""Logits equal the reference implementations on the same weights (float32, within 2e-4).

DeepMind's `recurrentgemma` (torch) is the truth; transformers agrees within the window and,
once built with window W+1, beyond it too.
"""

import pytest
import torch

from conftest import random_model, tiny_config
from oracles import deepmind_pair, dm_logits, transformers_lm

TOL = dict(rtol=0, atol=2e-4)


def test_one_document_longer_than_the_window():
    dm, ours = deepmind_pair(tiny_config())
    ids = torch.randint(0, 97, (2, 40))
    pos = torch.arange(40).repeat(2, 1)
    torch.testing.assert_close(ours(ids).logits, dm_logits(dm, ids, pos), **TOL)


def test_packed_documents_reset_everything():
    dm, ours = deepmind_pair(tiny_config())
    ids = torch.randint(0, 97, (2, 30))
    pos = torch.arange(30).repeat(2, 1)
    pos[0, 11:] = torch.arange(19)
    pos[1, 2:] = torch.arange(28)
    pos[1, 20:] = torch.arange(10)
    ref = dm_logits(dm, ids, pos)
    torch.testing.assert_close(ours(ids, position_ids=pos).logits, ref, **TOL)
    # and a packed document equals the same document alone
    alone = ours(ids[0:1, 11:]).logits
    torch.testing.assert_close(ours(ids, position_ids=pos).logits[0:1, 11:], alone, **TOL)


def test_left_padded_row_equals_bare_row():
    dm, ours = deepmind_pair(tiny_config())
    ids = torch.randint(0, 97, (1, 15))
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), ids], dim=1)
    pos = torch.cat([torch.full((1, 5), -1), torch.arange(15)[None]], dim=1)
    ref = dm_logits(dm, padded, pos)[:, 5:]
    torch.testing.assert_close(dm_logits(dm, ids, torch.arange(15)[None]), ref, **TOL)
    mask = (pos >= 0).long()
    torch.testing.assert_close(ours(padded, attention_mask=mask).logits[:, 5:], ref, **TOL)
    torch.testing.assert_close(ours(padded, position_ids=pos).logits[:, 5:], ref, **TOL)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(lru_width=48),
        dict(lru_width=24, num_hidden_layers=5),
        dict(block_types=("recurrent",), logits_soft_cap=0.0, embeddings_scale_by_sqrt_dim=False),
        dict(block_types=("attention", "recurrent"), attention_window_size=3),
    ],
)
def test_layouts(overrides):
    config = tiny_config(**overrides)
    dm, ours = deepmind_pair(config)
    ids = torch.randint(0, 97, (2, 23))
    pos = torch.arange(23).repeat(2, 1)
    pos[1, 9:] = torch.arange(14)
    torch.testing.assert_close(ours(ids, position_ids=pos).logits, dm_logits(dm, ids, pos), **TOL)


def transformers_copy(model, tmp_path, window=None):
    model.save_pretrained(tmp_path)
    kwargs = {} if window is None else {"attention_window_size": window}
    return transformers_lm().from_pretrained(tmp_path, dtype=torch.float32, **kwargs).eval()


def test_transformers_within_window(tmp_path):
    model = random_model(tiny_config(lru_width=32))  # transformers needs lru_width == hidden
    tf = transformers_copy(model, tmp_path)
    ids = torch.randint(0, 97, (3, 6))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, tf(ids, use_cache=False).logits, **TOL)


def test_transformers_beyond_window_with_w_plus_1(tmp_path):
    model = random_model(tiny_config(lru_width=32))
    ids = torch.randint(0, 97, (2, 30))
    tf = transformers_copy(model, tmp_path, window=model.config.attention_window_size + 1)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, tf(ids, use_cache=False).logits, **TOL)
    short = transformers_copy(model, tmp_path / "w")  # transformers' own window: one key short
    with torch.no_grad():
        assert (model(ids).logits - short(ids, use_cache=False).logits).abs().max() > 1e-2
