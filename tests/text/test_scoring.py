"""Scores: prompt logprobs equal transformers' log-softmax; chunked, batched and padded scoring
equal one pass; a generated token's logprob equals a forward pass over the finished sequence."""

import math

import pytest
import torch

from conftest import random_model, tiny_config
from oracles import transformers_lm
from rgemma.text import scoring
from rgemma.text.core import Decoder, Row, Slots, prefill
from rgemma.text.engine import GenerationConfig, complete, stream
from rgemma.text.logprobs import token_logprobs
from rgemma.text.sampling import SamplingParams
from rgemma.text.scoring import ChunkScorer, document_perplexity, score_ids, score_texts

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOL = dict(rtol=0, atol=1e-4)


def full_logprobs(model, ids: list[int]) -> torch.Tensor:
    """log P(ids[t] | ids[:t]) for t >= 1 from one forward pass, (T-1,)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    return logits.log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


def test_prompt_logprobs_equal_transformers_within_the_window(tmp_path):
    model = random_model(tiny_config(lru_width=32))  # transformers needs lru_width == hidden
    model.save_pretrained(tmp_path)
    tf = transformers_lm().from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = torch.randint(0, 97, (3, 6))  # the window is 6
    with torch.no_grad():
        expected = tf(ids, use_cache=False).logits.float().log_softmax(-1)
    for row, want, scored in zip(ids.tolist(), expected, score_ids(model, ids.tolist(), top_n=5)):
        assert scored.scores[0] is None
        got = torch.tensor(scored.logprobs[1:])
        ref = want[:-1].gather(1, torch.tensor(row[1:])[:, None])[:, 0]
        torch.testing.assert_close(got, ref, **TOL)
        for t, s in enumerate(scored.scores[1:]):
            top = want[t].topk(5)
            assert [i for i, _ in s.top] == top.indices.tolist()
            torch.testing.assert_close(torch.tensor([v for _, v in s.top]), top.values, **TOL)
            assert s.greedy == (row[t + 1] == top.indices[0].item())


def test_chunked_scores_equal_one_pass_far_beyond_the_window(monkeypatch):
    model = random_model()
    ids = torch.randint(0, 97, (40,)).tolist()
    monkeypatch.setattr(scoring, "HEAD_TOKENS", 3)  # the LM head runs on pieces of the chunk
    for chunk in (1, 5, 7, 40):
        scored = score_ids(model, [ids], chunk_size=chunk)[0]
        torch.testing.assert_close(torch.tensor(scored.logprobs[1:]), full_logprobs(model, ids), **TOL)


def test_batched_left_padded_scores_equal_each_alone():
    model = random_model()
    rows = [torch.randint(0, 97, (n,)).tolist() for n in (3, 17, 9, 1, 12)]
    batched = score_ids(model, rows, batch_size=3, chunk_size=4)
    for row, scored in zip(rows, batched):
        assert scored.token_ids == row and len(scored.scores) == len(row)
        alone = full_logprobs(model, row) if len(row) > 1 else torch.empty(0)
        torch.testing.assert_close(torch.tensor(scored.logprobs[1:]), alone, **TOL)
        assert math.isclose(scored.total, alone.sum().item(), abs_tol=1e-4)


def test_start_scores_only_the_continuation_and_is_greedy_follows_the_argmax():
    model = random_model()
    context = torch.randint(0, 97, (8,)).tolist()
    greedy = complete_greedy(model, context, 4)
    other = [(t + 1) % 97 for t in greedy]
    scored = score_ids(model, [context + greedy, context + other], start=[8, 8])
    assert all(s is None for s in scored[0].scores[:8]) and scored[0].count == 4
    assert scored[0].is_greedy and not scored[1].is_greedy
    assert scored[0].total > scored[1].total
    torch.testing.assert_close(
        torch.tensor(scored[0].logprobs[8:]), full_logprobs(model, context + greedy)[7:], **TOL
    )


def complete_greedy(model, ids, n):
    logits, state = prefill(model, torch.tensor([ids]))
    decoder = Decoder(model, Slots(state), pack=False)
    decoder.adopt([Row(SamplingParams(temperature=0), n)], logits)
    out = []
    while decoder.live:
        out += [step.token_id for _, step in decoder.step()]
    return out


def test_scorer_logits_equal_prefill():
    model = random_model()
    ids = torch.randint(0, 97, (2, 11))
    scorer = ChunkScorer(model, batch=2)
    scorer.feed(ids[:, :4])
    logits = scorer.feed(ids[:, 4:])
    torch.testing.assert_close(logits, prefill(model, ids)[0], **TOL)


def test_generated_logprobs_equal_a_forward_pass_over_the_finished_sequence(lm):
    model, tok = lm
    prompt = tok.encode("Once upon a time")
    config = GenerationConfig(
        max_new_tokens=12,
        sampling=SamplingParams(temperature=1.5, top_k=20, repetition_penalty=1.3),
        seed=3,
        top_logprobs=4,
        eos_ids=[],
    )
    steps = list(stream(model, tok, prompt, config))
    ids = prompt + [s.token_id for s in steps]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, len(prompt) - 1 : -1].float()
    expected = token_logprobs(logits, torch.tensor(ids[len(prompt) :]), 4)
    for step, want in zip(steps, expected):
        assert step.scores.token_id == step.token_id
        assert math.isclose(step.scores.logprob, want.logprob, abs_tol=1e-4)
        assert [i for i, _ in step.scores.top] == [i for i, _ in want.top]
        assert step.scores.greedy == want.greedy
    # complete() keeps them too, and rows that do not ask get none
    done = complete(model, tok, [prompt], config)[0]
    assert [s.logprob for s in done.scores] == [s.scores.logprob for s in steps]
    plain = list(stream(model, tok, prompt, GenerationConfig(max_new_tokens=3)))
    assert all(s.scores is None for s in plain)


def test_rows_ask_for_their_own_number_of_alternatives():
    model = random_model()
    slots = Slots.allocate(model.config, 4, model.dtype, model.device)
    decoder = Decoder(model, slots)
    for n, top in enumerate((None, 0, 3)):
        logits, state = prefill(model, torch.randint(0, 97, (1, 5 + n)))
        decoder.join(Row(SamplingParams(temperature=0), 3, top_logprobs=top, tag=top), logits[0], state)
    seen = {}
    while decoder.live:
        for row, step in decoder.step():
            seen.setdefault(row.tag, []).append(step.scores)
    assert all(s is None for s in seen[None])
    assert all(s.top == () and s.greedy for s in seen[0])
    assert all(len(s.top) == 3 and s.top[0][0] == s.token_id for s in seen[3])


def test_score_texts_and_perplexity(lm):
    model, tok = lm
    texts = ["The cat sat", "A dog"]
    conts = [" on the mat", " barked"]
    scored = score_texts(model, tok, texts, conts)
    for text, cont, s in zip(texts, conts, scored):
        ctx = tok.encode(text)
        assert s.token_ids == ctx + tok.encode(cont, add_bos=False)
        assert s.count == len(s.token_ids) - len(ctx)
        whole = full_logprobs(model, s.token_ids)[len(ctx) - 1 :].sum().item()
        assert math.isclose(s.total, whole, abs_tol=1e-4)
    result = document_perplexity(model, tok, texts)
    ids = [tok.encode(t) + [tok.eos_id] for t in texts]
    nll = -sum(full_logprobs(model, i).sum().item() for i in ids)
    count = sum(len(i) - 1 for i in ids)
    assert result["tokens"] == count
    assert math.isclose(result["perplexity"], math.exp(nll / count), rel_tol=1e-5)
