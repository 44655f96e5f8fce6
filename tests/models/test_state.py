"""The explicit state: chunked prefill, decode, padding, row operations, flat memory."""

import random

import pytest
import torch

import rgemma.models.griffin as model_module
from conftest import random_model, tiny_config
from rgemma import State

TOL = dict(rtol=0, atol=1e-4)


def run_chunks(model, ids, sizes, mask=None):
    """Feed ids in chunks of the given sizes through one cache; return all logits."""
    cache, logits, s = None, [], 0
    for n in sizes:
        m = None if mask is None else mask[:, s : s + n]
        out = model(ids[:, s : s + n], attention_mask=m, cache=cache, use_cache=True)
        cache, s = out.cache, s + n
        logits.append(out.logits)
    assert s == ids.shape[1]
    return torch.cat(logits, dim=1), cache


@pytest.mark.parametrize("seed", range(4))
def test_chunked_prefill_any_split_then_decode_far_past_window(model, seed):
    rng = random.Random(seed)
    T = 60  # ten windows
    ids = torch.randint(0, 97, (2, T))
    full = model(ids).logits
    sizes, left = [], 30
    while left:
        sizes.append(min(left, rng.choice([1, 2, 3, 5, 6, 7, 13])))
        left -= sizes[-1]
    sizes += [1] * 30  # then single-token decode steps
    logits, cache = run_chunks(model, ids, sizes)
    torch.testing.assert_close(logits, full, **TOL)
    assert cache.count.tolist() == [T, T] and cache.next_pos.tolist() == [T, T]


def test_chunked_prefill_with_packed_documents(model):
    ids = torch.randint(0, 97, (1, 30))
    pos = torch.cat([torch.arange(12), torch.arange(18)])[None]
    full = model(ids, position_ids=pos).logits
    cache, outs = None, []
    for s, e in [(0, 5), (5, 12), (12, 13), (13, 20), (20, 30)]:
        out = model(ids[:, s:e], position_ids=pos[:, s:e], cache=cache, use_cache=True)
        cache = out.cache
        outs.append(out.logits)
    torch.testing.assert_close(torch.cat(outs, 1), full, **TOL)


def left_pad(rows, pad_id=0):
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - len(r) :] = torch.tensor(r)
        mask[i, T - len(r) :] = 1
    return ids, mask


def test_left_padded_batch_equals_rows_alone(model):
    rows = [torch.randint(0, 97, (n,)).tolist() for n in (3, 17, 9, 1)]
    ids, mask = left_pad(rows, pad_id=5)
    batched = model(ids, attention_mask=mask).logits
    for i, r in enumerate(rows):
        alone = model(torch.tensor([r])).logits[0]
        torch.testing.assert_close(batched[i, -len(r) :], alone, **TOL)


def test_left_padded_chunks_and_continuations(model):
    """Pads in a later chunk (rows continuing with fewer new tokens) are skipped too."""
    first = [torch.randint(0, 97, (n,)).tolist() for n in (4, 9)]
    second = [torch.randint(0, 97, (n,)).tolist() for n in (8, 2)]
    ids1, m1 = left_pad(first)
    ids2, m2 = left_pad(second)
    cache = model(ids1, attention_mask=m1, use_cache=True).cache
    out = model(ids2, attention_mask=m2, cache=cache, use_cache=True).logits
    for i in range(2):
        alone = model(torch.tensor([first[i] + second[i]])).logits[0, -len(second[i]) :]
        torch.testing.assert_close(out[i, -len(second[i]) :], alone, **TOL)


def test_greedy_generation_of_padded_batch_equals_rows_alone(model):
    rows = [torch.randint(0, 97, (n,)).tolist() for n in (2, 11, 6)]
    ids, mask = left_pad(rows)
    batched = model.generate(ids, attention_mask=mask, max_new_tokens=15, eos_token_id=[])
    for i, r in enumerate(rows):
        alone = model.generate(torch.tensor([r]), max_new_tokens=15, eos_token_id=[])
        assert batched[i, -15:].tolist() == alone[0, -15:].tolist()


def test_state_is_by_value_interleaved_generations(model):
    a, b = torch.randint(0, 97, (1, 12)), torch.randint(0, 97, (1, 7))
    ca = model(a[:, :6], use_cache=True).cache
    cb = model(b[:, :3], use_cache=True).cache
    la = model(a[:, 6:], cache=ca, use_cache=True).logits
    lb = model(b[:, 3:], cache=cb, use_cache=True).logits
    torch.testing.assert_close(la, model(a).logits[:, 6:], **TOL)
    torch.testing.assert_close(lb, model(b).logits[:, 3:], **TOL)
    assert not any(
        isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == 1
        for m in model.modules()
        for v in vars(m).values()
    )


def test_clone_select_cat_and_nbytes(model, config):
    ids = torch.randint(0, 97, (3, 10))
    cache = model(ids, use_cache=True).cache
    snap = cache.clone()
    nxt = torch.randint(0, 97, (3, 1))
    l1 = model(nxt, cache=cache, use_cache=True).logits
    l2 = model(nxt, cache=snap.clone(), use_cache=True).logits
    torch.testing.assert_close(l1, l2, rtol=0, atol=0)
    picked = snap.select([2, 0])
    l3 = model(nxt[[2, 0]], cache=picked, use_cache=True).logits
    torch.testing.assert_close(l3, l1[[2, 0]], **TOL)
    both = State.cat([snap.select([1]), snap.select([2])])
    torch.testing.assert_close(model(nxt[[1, 2]], cache=both, use_cache=True).logits, l1[[1, 2]], **TOL)
    per_row = snap.select([0]).nbytes()
    assert snap.nbytes() == 3 * per_row
    W, E, K = config.attention_window_size, config.lru_width, config.conv1d_width
    kinds = config.layers_block_type
    expect = (
        kinds.count("recurrent") * ((K - 1) * E * 4 + E * 4)
        + kinds.count("attention") * 2 * W * config.head_dim * 4
        + 3 * 8
    )
    assert per_row == expect
    with pytest.raises(ValueError, match="row index"):
        snap.select([3])


def test_state_size_is_fixed_whatever_the_length(model):
    short = model(torch.randint(0, 97, (1, 3)), use_cache=True).cache
    long = model(torch.randint(0, 97, (1, 300)), use_cache=True).cache
    assert short.nbytes() == long.nbytes()


def test_two_b_state_is_about_16_5_mib():
    from rgemma import RecurrentGemmaConfig

    cfg = RecurrentGemmaConfig.from_preset("recurrentgemma-2b")
    with torch.device("meta"):
        state = State.zeros(cfg, 1, torch.bfloat16)
    assert 16.0 < state.nbytes() / 2**20 < 17.0  # about 16.5 MiB per sequence


def test_attention_memory_is_linear_in_length(monkeypatch):
    """No T x T mask: every attention call sees at most block + W + 1 keys."""
    model = random_model(tiny_config(attention_window_size=16))
    seen = []

    def spy(q, k, v, mask, scale):
        seen.append(mask.shape)
        return model_module.attend_sdpa(q, k, v, mask, scale)

    for layer in model.modules():
        if isinstance(layer, model_module.LocalAttention):
            layer.attend = spy
    monkeypatch.setattr(model_module, "ATTENTION_BLOCK", 32)
    ids = torch.randint(0, 97, (1, 1000))
    with torch.no_grad():
        logits = model(ids).logits
    assert max(s[-1] for s in seen) <= 32 + 16 + 1
    monkeypatch.setattr(model_module, "ATTENTION_BLOCK", 4096)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, logits, **TOL)


def test_32k_prompt_runs(model):
    ids = torch.randint(0, 97, (1, 32768))
    with torch.no_grad():
        out = model(ids, use_cache=True, logits_to_keep=1)
    assert out.logits.shape == (1, 1, 97) and torch.isfinite(out.logits).all()
    assert out.cache.count.item() == 32768


def test_gradients_fast_scan_equal_reference():
    from rgemma.ops.scan import rnn_scan_fast, rnn_scan_ref

    grads = {}
    ids = torch.randint(0, 97, (2, 20))
    pos = torch.cat([torch.arange(8), torch.arange(12)]).repeat(2, 1)
    for impl, scan in (("ref", rnn_scan_ref), ("fast", rnn_scan_fast)):
        model = random_model()
        for layer in model.modules():
            if isinstance(layer, model_module.RGLRU):
                layer.scan = scan  # the model's own extension point
        model.train()
        out = model(ids, position_ids=pos, labels=ids)
        out.loss.backward()
        grads[impl] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for name, g in grads["ref"].items():
        torch.testing.assert_close(grads["fast"][name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_from_tensors_inverts_tensors_and_to_keeps_h_float32():
    config = tiny_config()
    state = State.zeros(config, 2, torch.float32)
    for t in state.tensors().values():
        t.copy_(torch.randint(0, 9, t.shape))
    again = State.from_tensors(state.tensors(), config)
    assert again.fingerprint == state.fingerprint
    assert all(torch.equal(a, b) for a, b in zip(again.tensors().values(), state.tensors().values()))
    half = again.to(dtype=torch.bfloat16)
    kinds = {name.rsplit(".", 1)[-1]: t.dtype for name, t in half.tensors().items()}
    assert kinds == {
        "count": torch.long,
        "doc_start": torch.long,
        "next_pos": torch.long,
        "conv": torch.bfloat16,
        "h": torch.float32,
        "k": torch.bfloat16,
        "v": torch.bfloat16,
    }
