"""generate(): greedy equals the argmax of a full forward, rows stop independently."""

import pytest
import torch

from rgemma.text.core import Decoder, Row, Slots, prefill
from rgemma.text.sampling import SamplingParams


def test_greedy_equals_argmax_of_full_forward_at_every_step(model):
    prompt = torch.randint(0, 97, (1, 5))
    out = model.generate(prompt, max_new_tokens=20, eos_token_id=[])
    assert out.shape == (1, 25) and torch.equal(out[:, :5], prompt)
    logits = model(out).logits
    assert out[0, 5:].tolist() == logits[0, 4:-1].argmax(-1).tolist()


def test_rows_stop_independently_and_pad(model):
    prompt = torch.randint(0, 97, (3, 4))
    free = model.generate(prompt, max_new_tokens=12, eos_token_id=[])
    eos = int(free[1, 6])  # row 1 emits this token at its 3rd step
    out = model.generate(prompt, max_new_tokens=12, eos_token_id=[eos], pad_token_id=0)
    for row in range(3):
        new = free[row, 4:].tolist()
        stop = new.index(eos) + 1 if eos in new else len(new)
        assert out[row, 4 : 4 + stop].tolist() == new[:stop]
        assert (out[row, 4 + stop :] == 0).all()
    assert out.shape[1] <= 16


def test_max_length_and_defaults(model):
    prompt = torch.randint(0, 97, (2, 6))
    assert model.generate(prompt, max_length=10, eos_token_id=[]).shape == (2, 10)
    assert model.generate(prompt, eos_token_id=[]).shape == (2, 26)  # 20 new by default
    with pytest.raises(ValueError, match="max_length"):
        model.generate(prompt, max_length=6)
    with pytest.raises(ValueError, match="empty prompt"):
        model.generate(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="all padding"):
        model.generate(prompt, attention_mask=torch.tensor([[0] * 6, [1] * 6]))
    with pytest.raises(TypeError, match="num_beamz"):
        model.generate(prompt, num_beamz=4)
    with pytest.raises(ValueError, match="typical_p"):
        model.generate(prompt, typical_p=0.5)


def test_seeded_sampling_is_reproducible(model):
    prompt = torch.randint(0, 97, (2, 3))
    kw = dict(do_sample=True, temperature=1.5, top_k=0, max_new_tokens=30, eos_token_id=[])
    a = model.generate(prompt, seed=7, **kw)
    b = model.generate(prompt, seed=7, **kw)
    c = model.generate(prompt, seed=8, **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = torch.Generator().manual_seed(7)
    assert torch.equal(model.generate(prompt, generator=g, **kw), a)
    top1 = model.generate(prompt, do_sample=True, top_k=1, max_new_tokens=10, eos_token_id=[], seed=1)
    assert torch.equal(top1, model.generate(prompt, max_new_tokens=10, eos_token_id=[]))


def test_streamer_protocol(model):
    class Recorder:
        def __init__(self):
            self.calls = []

        def put(self, value):
            self.calls.append(value.tolist())

        def end(self):
            self.calls.append("end")

    rec = Recorder()
    prompt = torch.randint(0, 97, (1, 4))
    out = model.generate(prompt, max_new_tokens=5, eos_token_id=[], streamer=rec)
    assert rec.calls[0] == prompt.tolist() and rec.calls[-1] == "end"
    assert [c[0] for c in rec.calls[1:-1]] == out[0, 4:].tolist()


def test_long_prompt_is_prefilled_in_chunks(model):
    prompt = torch.randint(0, 97, (1, 50))
    logits, state = prefill(model, prompt, chunk_size=7)
    full = model(prompt).logits[:, -1]
    torch.testing.assert_close(logits, full, rtol=0, atol=1e-4)
    assert state.count.item() == 50
    decoder = Decoder(model, Slots(state))
    decoder.adopt([Row(SamplingParams(temperature=0), max_new_tokens=3)], logits)
    steps = []
    while decoder.live:
        steps += decoder.step()
    assert len(steps) == 3 and steps[-1][1].finish_reason == "length" and state.count.item() == 52


def test_repetition_penalty_sees_prompt_and_generated_tokens(model):
    """Each step penalises every id of the prompt and of the tokens generated so far."""
    from rgemma.text.sampling import apply_repetition_penalty

    prompt = torch.randint(0, 97, (1, 4))
    out = model.generate(prompt, max_new_tokens=10, eos_token_id=[], repetition_penalty=3.0)
    ids = prompt[0].tolist()
    for _ in range(10):
        logits = model(torch.tensor([ids])).logits[:, -1]
        ids.append(int(apply_repetition_penalty(logits, torch.tensor([ids]), 3.0).argmax()))
    assert out[0].tolist() == ids
    plain = model.generate(prompt, max_new_tokens=10, eos_token_id=[])
    assert not torch.equal(plain, out)
