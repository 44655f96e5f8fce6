"""Speculative decoding (rgemma.text.speculative): greedy output equals decoding without it
token for token, and sampled output follows the model's distribution exactly."""

import itertools

import pytest
import torch
from scipy.stats import chisquare

from conftest import random_model, tiny_config
from rgemma.text.speculative import DraftLength, PromptLookup, Speculation, speedup

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def target():
    return random_model(tiny_config(attention_window_size=6), seed=0)


@pytest.fixture(scope="module")
def draft():
    """Another random model on the same vocabulary: it agrees with the target only sometimes."""
    return random_model(tiny_config(num_hidden_layers=2, hidden_size=16, lru_width=16), seed=1)


def repetitive_prompt(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    piece = torch.randint(3, 97, (1, 8), generator=g)
    return torch.cat([piece, torch.randint(3, 97, (1, 4), generator=g), piece], 1)[:, :n]


@pytest.mark.parametrize("k", [None, 1, 3, 8])
def test_greedy_prompt_lookup_equals_plain_decoding(target, k):
    prompt = repetitive_prompt()
    plain = target.generate(prompt, max_new_tokens=40, eos_token_id=[])
    spec = target.generate(prompt, max_new_tokens=40, eos_token_id=[], prompt_lookup_num_tokens=k or 4)
    assert torch.equal(spec, plain)


@pytest.mark.parametrize("k", [None, 2, 5])
def test_greedy_draft_model_equals_plain_decoding(target, draft, k):
    prompt = torch.randint(0, 97, (1, 9))
    plain = target.generate(prompt, max_new_tokens=40, eos_token_id=[])
    spec = target.generate(
        prompt, max_new_tokens=40, eos_token_id=[], assistant_model=draft, num_assistant_tokens=k
    )
    assert torch.equal(spec, plain)


def test_self_draft_accepts_everything_and_stops_like_plain(target):
    prompt = torch.randint(0, 97, (1, 7))
    plain = target.generate(prompt, max_new_tokens=30, eos_token_id=[])
    eos = int(plain[0, 7 + 17])
    stopped = target.generate(prompt, max_new_tokens=30, eos_token_id=[eos])
    spec = target.generate(prompt, max_new_tokens=30, eos_token_id=[eos], assistant_model=target)
    assert torch.equal(spec, stopped)


def test_decoder_reports_acceptance_and_rewinds_the_state(target, draft):
    """After speculating, the state equals the state of plain decoding: it read the prompt
    and every new token but the last."""
    from rgemma.text.core import Row, Slots, prefill
    from rgemma.text.sampling import SamplingParams
    from rgemma.text.speculative import SpeculativeDecoder

    prompt = torch.randint(0, 97, (1, 9))
    logits, state = prefill(target, prompt)
    decoder = SpeculativeDecoder(target, Slots(state), Speculation(draft_model=draft), prompt[0].tolist())
    row = Row(SamplingParams(temperature=0), 25)
    decoder.adopt([row], logits)
    tokens = []
    while decoder.live:
        tokens += [step.token_id for _, step in decoder.step()]
    assert len(tokens) == 25 and decoder.rounds > 0 and 0 <= decoder.acceptance <= 1
    _, ref = prefill(target, torch.cat([prompt, torch.tensor([tokens[:-1]])], 1))
    for name, t in ref.tensors().items():
        torch.testing.assert_close(state.tensors()[name], t, rtol=1e-5, atol=1e-5, msg=name)


def test_generate_refuses_what_it_cannot_speculate(target, draft):
    prompt = torch.randint(0, 97, (2, 4))
    with pytest.raises(ValueError, match="one sequence"):
        target.generate(prompt, prompt_lookup_num_tokens=3)
    with pytest.raises(ValueError, match="not both"):
        target.generate(prompt[:1], prompt_lookup_num_tokens=3, assistant_model=draft)
    with pytest.raises(ValueError, match="vocabulary"):
        target.generate(prompt[:1], assistant_model=random_model(tiny_config(vocab_size=50)))


def test_prompt_lookup_proposes_latest_match():
    lookup = PromptLookup(ngram=2)
    tokens = [1, 2, 3, 9, 1, 2, 4, 5, 1, 2]
    assert lookup.propose(tokens, 3, None)[0] == [4, 5, 1]  # the latest "1 2" before the end
    assert lookup.propose(tokens + [7], 3, None)[0] == []  # no earlier 7
    assert PromptLookup(2).propose([1, 2, 3, 1], 2, None)[0] == [2, 3]  # falls back to one token
    assert PromptLookup(2).propose([5, 1, 2, 1, 2], 5, None)[0] == [1, 2, 1, 2, 1]  # a repeating tail


def test_draft_length_follows_acceptance():
    length = DraftLength(None, k_max=8)
    for _ in range(30):
        length.update(length.k(), length.k())  # everything accepted
    assert length.k() == 8
    for _ in range(30):
        length.update(length.k(), 0)  # nothing accepted
    assert length.k() == 1
    assert DraftLength(3).k() == 3
    assert speedup(0.0, 4, 0.1) < 1 < speedup(0.9, 4, 0.1)


def _climb(length: DraftLength, seconds_per_round, rounds: int = 300) -> list[int]:
    """Feed `length` timed rounds (one token per draft plus one) at the K it asks for."""
    chosen = []
    for _ in range(rounds):
        k = length.k()
        chosen.append(k)
        length.observe(k, k + 1, seconds_per_round(k))
    return chosen


def test_draft_length_climbs_to_the_measured_fastest_k():
    """Every draft accepted. With checks that cost 1 + 0.1 K seconds the most drafts are
    fastest; with checks that cost 1 + 3 K, a plain step (K = 0), whatever the cost model
    guessed first; with every K alike, it stays within range."""
    fast = DraftLength(None, k_max=6)
    start = fast.k()  # the model's guess
    _climb(fast, lambda k: 1.0 + 0.1 * k)
    assert fast.current == 6 and fast.k() in (5, 6) and start < 6
    expensive = DraftLength(None, k_max=6)
    _climb(expensive, lambda k: 1.0 + 3.0 * k)  # (k + 1) / (1 + 3k) tokens/s: best at K = 0
    assert expensive.current == 0 and set(_climb(expensive, lambda k: 1.0 + 3.0 * k, 40)) <= {0, 1}
    alike = _climb(DraftLength(None, k_max=6), lambda k: 1.0 + k)
    assert all(0 <= k <= 6 for k in alike)


def test_a_fixed_k_is_never_moved_by_timings():
    length = DraftLength(3)
    _climb(length, lambda k: 1.0 + 5.0 * k, 50)
    assert length.k() == 3 and length.current is None


def test_the_decoder_times_its_rounds_and_keeps_the_output(monkeypatch):
    """Each round is reported to DraftLength at the K it chose, with the tokens it made; the
    text is what decoding without speculation gives, K = 0 (plain steps) included."""
    from conftest import random_model

    model, draft = random_model(seed=0), random_model(seed=1)
    ids = torch.tensor([[5, 6, 7, 5, 6, 7, 5, 6]])
    plain = model.generate(ids, max_new_tokens=30, do_sample=False)
    seen = []
    real = DraftLength.observe
    monkeypatch.setattr(
        DraftLength, "observe", lambda self, k, n, sec: seen.append((k, n)) or real(self, k, n, sec)
    )
    assert torch.equal(model.generate(ids, max_new_tokens=30, do_sample=False, assistant_model=draft), plain)
    assert seen and all(0 <= k <= 8 and 1 <= n <= k + 1 for k, n in seen)
    assert sum(n for _, n in seen) <= 30
    monkeypatch.setattr(DraftLength, "k", lambda self: 0)  # every round a plain step
    assert torch.equal(model.generate(ids, max_new_tokens=30, do_sample=False, assistant_model=draft), plain)


# --------------------------------------------------------------------------- sampling is exact
V, NEW, N = 6, 4, 600


def check_frequencies(observed: torch.Tensor, probs: torch.Tensor) -> None:
    """Chi-square goodness of fit; cells expecting fewer than 5 are pooled."""
    n = observed.sum()
    keep = probs * n >= 5
    expected = torch.cat([probs[keep], probs[~keep].sum(0, keepdim=True)]) * n
    seen = torch.cat([observed[keep], observed[~keep].sum(0, keepdim=True)])
    seen, expected = seen[expected > 0], expected[expected > 0]
    assert chisquare(seen.numpy(), expected.numpy() * float(seen.sum() / expected.sum())).pvalue > 1e-3


@pytest.mark.parametrize("point_mass", [False, True])
def test_accept_or_resample_draws_from_p(point_mass):
    """One position of the rule: d ~ q, keep it with min(1, p/q), else draw norm(max(p-q, 0))."""
    from rgemma.text.core import Row
    from rgemma.text.sampling import SamplingParams, draw
    from rgemma.text.speculative import _accept, _correction

    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.3, 0.0, 0.25, 0.05, 0.4, 0.0], dtype=torch.float64)
    q = torch.tensor([0.1, 0.2, 0.5, 0.0, 0.1, 0.1], dtype=torch.float64)
    row = Row(SamplingParams(), 1, generator=g)
    counts = torch.zeros(len(p))
    for _ in range(20000):
        d = 2 if point_mass else int(draw(q[None], torch.rand(1, generator=g, dtype=torch.float64))[0])
        qd = None if point_mass else q
        counts[d if _accept(p, qd, d, row) else _correction(p, qd, d, row)] += 1
    assert counts[p == 0].sum() == 0
    check_frequencies(counts, p.float())


@pytest.fixture(scope="module")
def small_vocab():
    target = random_model(tiny_config(vocab_size=V, attention_window_size=3), seed=2, scale=0.5)
    draft = random_model(tiny_config(vocab_size=V, num_hidden_layers=1), seed=3, scale=0.5)
    return target, draft


def exact_joint(model, prompt, temperature):
    """P(new tokens) of every sequence of NEW tokens, from one batched forward."""
    seqs = torch.tensor(list(itertools.product(range(V), repeat=NEW)))
    ids = torch.cat([prompt.expand(len(seqs), -1), seqs], 1)
    logp = (model(ids).logits[:, prompt.shape[1] - 1 : -1].float() / temperature).log_softmax(-1)
    return logp.gather(2, seqs[..., None]).squeeze(-1).sum(1).exp()


def speculate(model, logits, state, prompt, speculation, seed):
    from rgemma.text.core import Row, Slots, row_generator
    from rgemma.text.sampling import SamplingParams
    from rgemma.text.speculative import SpeculativeDecoder

    decoder = SpeculativeDecoder(model, Slots(state.clone()), speculation, prompt)
    decoder.adopt([Row(SamplingParams(temperature=0.9), NEW, generator=row_generator(seed, "cpu"))], logits)
    tokens = []
    while decoder.live:
        tokens += [step.token_id for _, step in decoder.step()]
    return tokens


@pytest.mark.parametrize("drafter", ["lookup", "draft"])
def test_sampling_follows_the_model_distribution(small_vocab, drafter):
    """NEW sampled tokens over N seeds against the model's exact joint distribution: each
    token's marginal and the last two (drawn in verification rounds) jointly."""
    from rgemma.text.core import prefill

    target, draft = small_vocab
    prompt = torch.tensor([[1, 2, 3, 1, 2, 3, 1, 2]])
    spec = Speculation(prompt_lookup=True) if drafter == "lookup" else Speculation(draft_model=draft)
    counts = torch.zeros([V] * NEW)
    with torch.no_grad():
        logits, state = prefill(target, prompt)
        for seed in range(N):
            counts[tuple(speculate(target, logits, state, prompt[0].tolist(), spec, seed))] += 1
        p = exact_joint(target, prompt, 0.9).view([V] * NEW)
    check_frequencies(counts.sum((0, 1)).flatten(), p.sum((0, 1)).flatten())
    for i in range(NEW):
        others = [d for d in range(NEW) if d != i]
        check_frequencies(counts.sum(others), p.sum(others))
