"""The text engine: greedy = argmax, seeds, stop strings, streaming, snapshots, chat."""

import pytest
import torch

from rgemma.pretrained.snapshot import load_state, model_fingerprint, save_state
from rgemma.text.core import prefill
from rgemma.text.engine import ChatSession, GenerationConfig, TextStream, complete, stream
from rgemma.text.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0)


def test_greedy_engine_equals_argmax_of_full_forward(lm):
    model, tok = lm
    prompt = tok.encode("hello world")
    steps = list(stream(model, tok, prompt, GenerationConfig(max_new_tokens=12, sampling=GREEDY, eos_ids=[])))
    ids = prompt + [s.token_id for s in steps]
    logits = model(torch.tensor([ids])).logits[0]
    assert [s.token_id for s in steps] == logits[len(prompt) - 1 : -1].argmax(-1).tolist()
    assert steps[-1].finish_reason == "length" and all(s.finish_reason is None for s in steps[:-1])
    logprobs = torch.log_softmax(logits[len(prompt) - 1 : -1].float(), -1)
    expect = logprobs.gather(1, torch.tensor([[s.token_id] for s in steps]))[:, 0]
    torch.testing.assert_close(torch.tensor([s.logprob for s in steps]), expect, rtol=0, atol=1e-4)


def test_streaming_text_equals_decode_of_all_tokens(lm):
    model, tok = lm
    config = GenerationConfig(max_new_tokens=40, sampling=SamplingParams(temperature=1.5), seed=3, eos_ids=[])
    prompt = tok.encode("café")
    steps = list(stream(model, tok, prompt, config))
    text = "".join(s.text for s in steps)
    assert tok.decode(prompt) + text == tok.decode(prompt + [s.token_id for s in steps])


def test_continuation_keeps_the_space_after_the_prompt(lm):
    """The stream continues the prompt's text: a new word after the prompt keeps its space."""
    model, tok = lm
    prompt = tok.encode("the quick brown")
    config = GenerationConfig(max_new_tokens=6, sampling=SamplingParams(temperature=1.0), seed=2, eos_ids=[])
    steps = list(stream(model, tok, prompt, config))
    ids = [s.token_id for s in steps]
    full, head = tok.decode(prompt + ids), tok.decode(prompt)
    assert "".join(s.text for s in steps) == full[len(head) :]
    word = tok.encode(" hello", add_bos=False)[:1]  # the first piece of a new word: "▁..."
    s = TextStream(tok, prompt=prompt)
    assert s.push(word[0])[0].startswith(" ")


def test_seeded_sampling_is_reproducible(lm):
    model, tok = lm
    config = GenerationConfig(
        max_new_tokens=20, sampling=SamplingParams(temperature=1.0), seed=11, eos_ids=[]
    )
    a = [s.token_id for s in stream(model, tok, tok.encode("the"), config)]
    b = [s.token_id for s in stream(model, tok, tok.encode("the"), config)]
    config.seed = 12
    c = [s.token_id for s in stream(model, tok, tok.encode("the"), config)]
    assert a == b and a != c


def test_text_stream_never_leaks_a_stop_string(lm):
    _, tok = lm
    ids = tok.encode("the quick brown fox jumps over the lazy dog", add_bos=False)
    for stop in ["fox", "o", "lazy d", "dog", "quick brown fox jumps over", "x y z"]:
        s = TextStream(tok, [stop, "zzz"])
        out, hit = "", False
        for i in ids:
            piece, hit = s.push(i)
            out += piece
            if hit:
                break
        out += s.finish()
        full = tok.decode(ids)
        expect = full[: full.find(stop)] if stop in full else full
        assert out == expect and hit == (stop in full)


def test_stop_strings_end_generation_and_never_leak(lm):
    model, tok = lm
    config = GenerationConfig(max_new_tokens=60, sampling=SamplingParams(temperature=1.5), seed=5, eos_ids=[])
    free = "".join(s.text for s in stream(model, tok, tok.encode("hello"), config))
    stop = free[10:13]
    assert len(stop) == 3
    config.stop = [stop]
    steps = list(stream(model, tok, tok.encode("hello"), config))
    text = "".join(s.text for s in steps)
    assert stop not in text and text == free[: free.find(stop)]
    assert steps[-1].finish_reason == "stop"


def test_batched_complete_equals_each_prompt_alone(lm):
    model, tok = lm
    prompts = [tok.encode(t) for t in ["hello", "the quick brown fox", "numbers like 123"]]
    config = GenerationConfig(max_new_tokens=10, sampling=GREEDY, eos_ids=[tok.encode("o", add_bos=False)[0]])
    batch = complete(model, tok, prompts, config)
    for p, c in zip(prompts, batch):
        alone = complete(model, tok, [p], config)[0]
        assert c.token_ids == alone.token_ids and c.text == alone.text
        assert c.finish_reason == alone.finish_reason


def test_prompt_of_any_length_is_never_cut(lm):
    model, tok = lm
    prompt = tok.encode("hello world " * 150)
    assert len(prompt) > 200
    config = GenerationConfig(max_new_tokens=3, sampling=GREEDY, eos_ids=[], prefill_chunk=64)
    ids = [s.token_id for s in stream(model, tok, prompt, config)]
    assert ids[0] == model(torch.tensor([prompt])).logits[0, -1].argmax().item()


def test_saved_state_continues_exactly(lm, tmp_path):
    model, tok = lm
    first, second = tok.encode("the quick brown"), tok.encode(" fox jumps", add_bos=False)
    config = GenerationConfig(max_new_tokens=15, sampling=GREEDY, eos_ids=[])
    uninterrupted = [s.token_id for s in stream(model, tok, first + second, config)]
    _, state = prefill(model, torch.tensor([first]))
    save_state(tmp_path / "s.state", state, model, tokens=first)
    snap = load_state(tmp_path / "s.state", model)
    assert snap.tokens == first and snap.state.count.item() == len(first) and snap.logits is None
    resumed = [s.token_id for s in stream(model, tok, second, config, snap.state)]
    assert resumed == uninterrupted


def test_snapshot_from_another_model_is_refused(lm, tmp_path):
    from conftest import random_model, tiny_config

    model, tok = lm
    _, state = prefill(model, torch.tensor([tok.encode("hello")]))
    save_state(tmp_path / "s.state", state, model)
    other = random_model(tiny_config(vocab_size=model.config.vocab_size), seed=9)
    assert model_fingerprint(other) != model_fingerprint(model)
    assert model_fingerprint(model.to(torch.bfloat16)) == model_fingerprint(model.to(torch.float32))
    with pytest.raises(ValueError, match="different model"):
        load_state(tmp_path / "s.state", other)
    (tmp_path / "junk.state").write_bytes(b"not a snapshot")
    with pytest.raises(ValueError, match="not a readable state snapshot"):
        load_state(tmp_path / "junk.state", model)


def test_chat_keeps_state_and_equals_rereading_the_transcript(lm):
    model, tok = lm
    config = GenerationConfig(max_new_tokens=8, sampling=GREEDY)
    session = ChatSession(model, tok, config, system="be kind")
    replies = []
    for msg in ["hello", "tell me about the fox", "and the dog?"]:
        replies.append([s.token_id for s in session.send(msg)])
        # the same turn from scratch: re-read the whole transcript
        ids = tok.encode_chat(session.messages[:-1], add_generation_prompt=True)
        fresh = [s.token_id for s in stream(model, tok, ids, config)]
        assert replies[-1] == fresh
    assert session.state.count.item() == len(session.fed)
