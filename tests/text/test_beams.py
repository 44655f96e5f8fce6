"""Beam search: exact against a brute force that rescores every hypothesis with a full forward,
and against transformers' own beam search driving the same model, past the attention window."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import random_model, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WINDOW = 8
PROMPT, NEW = 6, 14  # prompt + new tokens run well past the window of 8


@pytest.fixture(scope="module")
def beam_model():
    return random_model(tiny_config(attention_window_size=WINDOW), seed=3, scale=0.3)


def frequent_tokens(model, prompt, k: int) -> list[int]:
    """Tokens greedy decoding emits, so that using them as EOS ends hypotheses early."""
    free = model.generate(prompt, max_new_tokens=NEW, eos_token_id=[])[:, PROMPT:]
    counts = torch.bincount(free.flatten(), minlength=97)
    return counts.topk(k).indices.tolist()


def brute_force(model, prompt: list[int], nb: int, new: int, eos: list[int], lp: float, es, R: int):
    """Beam search by its definition (transformers' semantics), every score from a full
    forward over prompt + hypothesis; no state is carried between steps."""
    running = [(0.0, [])] + [(-1e9, [])] * (nb - 1)
    done: list[tuple[float, list[int]]] = []
    improvable = True
    for n in range(new):
        cands = []
        for score, tokens in running:
            with torch.no_grad():
                logits = model(torch.tensor([prompt + tokens]), use_cache=False).logits[0, -1]
            logp = logits.float().log_softmax(-1).tolist()
            cands += [(score + lp_t, tokens + [t]) for t, lp_t in enumerate(logp)]
        cands.sort(key=lambda c: -c[0])
        cands = cands[: max(2, 1 + len(eos)) * nb]
        ends = [c[1][-1] in eos or n + 1 >= new for c in cands]
        full = len(done) == nb and es is True
        if improvable and not full:
            done += [(s / (n + 1) ** lp, t) for (s, t), e in list(zip(cands, ends))[:nb] if e]
            done = sorted(done, key=lambda d: -d[0])[:nb]
        running = [c for c, e in zip(cands, ends) if not e][:nb]
        length = new if es == "never" and lp > 0 else n + 1
        if len(done) == nb and running and running[0][0] / length**lp <= done[-1][0]:
            improvable = False
        if not running or (not improvable) or (len(done) == nb and es is True):
            break
    return done[:R]


@pytest.mark.parametrize("early_stopping", [False, True, "never"])
@pytest.mark.parametrize("length_penalty", [1.0, 0.0, -0.7])
def test_beam_search_equals_brute_force_past_the_window(beam_model, early_stopping, length_penalty):
    torch.manual_seed(1)
    prompt = torch.randint(1, 97, (1, PROMPT))
    eos = frequent_tokens(beam_model, prompt, 2)
    out = beam_model.generate(
        prompt,
        num_beams=3,
        num_return_sequences=2,
        max_new_tokens=NEW,
        eos_token_id=eos,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        return_dict_in_generate=True,
        output_scores=True,
    )
    want = brute_force(beam_model, prompt[0].tolist(), 3, NEW, eos, length_penalty, early_stopping, 2)
    for i, (score, tokens) in enumerate(want):
        assert out.sequences[i, PROMPT : PROMPT + len(tokens)].tolist() == tokens
        assert (out.beam_indices[i, len(tokens) :] == -1).all()
        assert math.isclose(float(out.sequences_scores[i]), score, rel_tol=1e-4, abs_tol=1e-4)


# --------------------------------------------------------------------------- transformers
def transformers_driver(model):
    """transformers' generate() over our model, recomputing each step from scratch (use_cache
    False): its beam search and processors with our logits, no state involved."""
    tf = pytest.importorskip("transformers")
    from transformers.modeling_outputs import CausalLMOutputWithPast

    class Driver(tf.PreTrainedModel, tf.GenerationMixin):
        config_class = tf.PretrainedConfig

        def __init__(self, inner):
            super().__init__(tf.PretrainedConfig(vocab_size=inner.config.vocab_size))
            self.inner = inner

        def forward(self, input_ids=None, attention_mask=None, **kwargs):
            out = self.inner(input_ids, attention_mask=attention_mask, use_cache=False)
            return CausalLMOutputWithPast(logits=out.logits)

    return Driver(model).eval()


def same_up_to_fill(ours: torch.Tensor, theirs: torch.Tensor, beam_indices: torch.Tensor) -> bool:
    """Equal where a hypothesis has tokens (transformers 5.25 fills the rest with EOS when the
    pad id is 0, a falsy-zero quirk; rgemma fills with the pad id)."""
    live = torch.cat([torch.ones_like(ours[:, :PROMPT]), (beam_indices >= 0).long()], dim=1).bool()
    return ours.shape == theirs.shape and torch.equal(ours[live], theirs[live])


BEAM_CASES = [
    dict(early_stopping=False, length_penalty=1.0),
    dict(early_stopping=True, length_penalty=0.0),
    dict(early_stopping="never", length_penalty=2.0),
    dict(early_stopping=False, length_penalty=-0.5, no_repeat_ngram_size=2, min_new_tokens=4),
    dict(early_stopping=True, length_penalty=1.0, repetition_penalty=1.3, bad_words_ids=[[5], [7, 9]]),
]


@pytest.mark.parametrize("case", BEAM_CASES)
def test_beam_search_equals_transformers(beam_model, case):
    driver = transformers_driver(beam_model)
    torch.manual_seed(2)
    prompt = torch.randint(1, 97, (2, PROMPT))
    kw = dict(
        num_beams=4,
        num_return_sequences=3,
        max_new_tokens=NEW,
        eos_token_id=frequent_tokens(beam_model, prompt, 2),
        pad_token_id=0,
        return_dict_in_generate=True,
        output_scores=True,
        output_logits=True,
        **case,
    )
    theirs = driver.generate(prompt, use_cache=False, do_sample=False, **kw)
    ours = beam_model.generate(prompt, **kw)
    assert torch.equal(ours.beam_indices, theirs.beam_indices)
    assert same_up_to_fill(ours.sequences, theirs.sequences, ours.beam_indices)
    torch.testing.assert_close(ours.sequences_scores, theirs.sequences_scores, rtol=1e-4, atol=1e-4)
    assert len(ours.scores) == len(theirs.scores) == len(ours.logits)
    for a, b in zip(ours.logits + ours.scores, theirs.logits + theirs.scores):
        torch.testing.assert_close(a.clamp(min=-1e4), b.clamp(min=-1e4), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "case",
    [
        dict(),
        dict(no_repeat_ngram_size=2, min_new_tokens=6),
        dict(repetition_penalty=1.5, bad_words_ids=[[3], [11, 12]], min_length=PROMPT + 3),
    ],
)
def test_greedy_processors_and_scores_equal_transformers(beam_model, case):
    driver = transformers_driver(beam_model)
    torch.manual_seed(4)
    prompt = torch.randint(1, 97, (3, PROMPT))
    eos = frequent_tokens(beam_model, prompt, 1)
    kw = dict(max_new_tokens=NEW, eos_token_id=eos, pad_token_id=0, **case)
    kw.update(return_dict_in_generate=True, output_scores=True, output_logits=True)
    theirs = driver.generate(prompt, use_cache=False, do_sample=False, **kw)
    ours = beam_model.generate(prompt, **kw)
    assert torch.equal(ours.sequences, theirs.sequences)
    live = ours.sequences[:, PROMPT:] != 0  # a finished row's later steps are not compared
    for step, (a, b) in enumerate(zip(ours.scores, theirs.scores)):
        rows = live[:, step]
        torch.testing.assert_close(a[rows].clamp(min=-1e4), b[rows].clamp(min=-1e4), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours.logits[step][rows], theirs.logits[step][rows], rtol=1e-4, atol=1e-4)


def test_beam_search_reorders_a_batch_of_prompts_independently(beam_model):
    torch.manual_seed(5)
    prompts = torch.randint(1, 97, (3, PROMPT))
    kw = dict(num_beams=3, num_return_sequences=2, max_new_tokens=10, eos_token_id=[])
    batch = beam_model.generate(prompts, **kw)
    for i in range(3):
        assert torch.equal(batch[2 * i : 2 * i + 2], beam_model.generate(prompts[i : i + 1], **kw))


def test_beam_arguments_are_checked(beam_model):
    prompt = torch.randint(1, 97, (1, 4))
    with pytest.raises(ValueError, match="num_return_sequences"):
        beam_model.generate(prompt, num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError, match="beam sampling"):
        beam_model.generate(prompt, num_beams=2, do_sample=True)
    with pytest.raises(ValueError, match="early_stopping"):
        beam_model.generate(prompt, num_beams=2, early_stopping="sometimes")
