"""The generation core: slots and buckets, one batched sample per distinct sampler, per-row
generators, stop strings held back, finish reasons."""

import pytest
import torch

from rgemma.text import core
from rgemma.text.core import Decoder, Row, Slots, bucket_sizes, prefill, row_generator
from rgemma.text.output import TextStream
from rgemma.text.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0)
WARM = SamplingParams(temperature=1.2)
HOT = SamplingParams(temperature=2.0, top_k=30)


def finish(decoder: Decoder) -> dict:
    """Step until every row is done; per row tag, its TextSteps."""
    out = {}
    while decoder.live:
        for row, step in decoder.step():
            out.setdefault(row.tag, []).append(step)
    return out


def joined(model, prompts: list[list[int]], rows: list[Row], capacity: int = 8) -> dict:
    """Each row prefilled alone and joined into empty slots, as the server does."""
    decoder = Decoder(model, Slots.allocate(model.config, capacity, model.dtype, model.device))
    for ids, row in zip(prompts, rows):
        logits, state = prefill(model, torch.tensor([ids]))
        decoder.join(row, logits[0], state)
    return finish(decoder)


def test_bucket_sizes_are_powers_of_two_and_the_capacity():
    assert bucket_sizes(1) == [1]
    assert bucket_sizes(6) == [1, 2, 4, 6]
    assert bucket_sizes(32) == [1, 2, 4, 8, 16, 32]


def test_slot_views_are_cached_views_of_the_slot_tensors(model):
    slots = Slots.allocate(model.config, 5, model.dtype, "cpu")
    view = slots.view(2)
    assert slots.view(2) is view and slots.view(5) is slots.state
    for name, t in view.tensors().items():
        assert t.data_ptr() == slots.state.tensors()[name].data_ptr() and t.shape[0] == 2
    _, state = prefill(model, torch.randint(0, 97, (2, 7)))
    slots.load(3, state, 1)
    slots.move(3, 0)
    for name, t in slots.state.tensors().items():
        assert torch.equal(t[0], state.tensors()[name][1]), name


def test_joined_rows_equal_each_row_alone_whatever_the_batch(model):
    """Greedy and seeded rows give the same tokens alone and beside rows of other samplers;
    a row's draws come from its own generator only."""
    prompts = [[5, 6, 7], [9, 1], [3, 3, 3, 3], [40]]

    def rows():
        return [
            Row(WARM, 9, generator=row_generator(1, "cpu"), tag=0),
            Row(GREEDY, 7, tag=1),
            Row(WARM, 4, generator=row_generator(2, "cpu"), tag=2),
            Row(HOT, 12, frozenset({17}), generator=row_generator(3, "cpu"), tag=3),
        ]

    together = joined(model, prompts, rows())
    for i, row in enumerate(rows()):
        alone = joined(model, [prompts[i]], [row])
        assert [s.token_id for s in alone[i]] == [s.token_id for s in together[i]], i
    assert [len(together[i]) for i in range(3)] == [9, 7, 4]


def test_one_sample_call_per_distinct_sampler_per_step(model, monkeypatch):
    calls = []
    sample = core.sample

    def counted(logits, *args, **kwargs):
        calls.append(logits.shape[0])
        return sample(logits, *args, **kwargs)

    monkeypatch.setattr(core, "sample", counted)
    samplers = [WARM, HOT, WARM, HOT, WARM]
    rows = [Row(p, 3, generator=row_generator(i, "cpu"), tag=i) for i, p in enumerate(samplers)]
    joined(model, [[1, 2]] * 5, rows)
    assert sorted(calls) == [2, 2, 2, 3, 3, 3]  # three steps, one call for each sampler's rows


def test_finish_reasons_budget_and_eos(model):
    free = joined(model, [[4, 5, 6]], [Row(GREEDY, 8, tag=0)])[0]
    assert [s.finish_reason for s in free] == [None] * 7 + ["length"]
    eos = free[3].token_id
    stopped = joined(model, [[4, 5, 6]], [Row(GREEDY, 8, frozenset({eos}), tag=0)])[0]
    cut = [s.token_id for s in free].index(eos) + 1
    assert [s.token_id for s in stopped] == [s.token_id for s in free][:cut]
    assert stopped[-1].finish_reason == "stop" and stopped[-1].text == ""


def test_stop_strings_are_held_back_in_the_core(lm):
    """No step ever emits a character of the stop string, even one that might still turn
    out not to start it; the row ends with "stop" and its text is everything before."""
    model, tok = lm
    prompt = tok.encode("hello")

    def run(stop):
        row = Row(WARM, 60, generator=row_generator(5, "cpu"), text=TextStream(tok, stop, prompt), tag=0)
        return joined(model, [prompt], [row])[0]

    free = "".join(s.text for s in run(()))
    stop = free[20:23]
    steps = run((stop,))
    text = "".join(s.text for s in steps)
    assert text == free[: free.find(stop)] and steps[-1].finish_reason == "stop"
    emitted = ""
    for s in steps:
        emitted += s.text
        assert free.startswith(emitted) and len(emitted) <= free.find(stop)


def test_adopted_rows_stay_in_place_and_leave_no_copy(model):
    _, state = prefill(model, torch.randint(0, 97, (3, 4)))
    logits, ref = prefill(model, torch.randint(0, 97, (3, 4)))
    pointers = {n: t.data_ptr() for n, t in ref.tensors().items()}
    decoder = Decoder(model, Slots(ref), pack=False)
    decoder.adopt([Row(GREEDY, n, tag=i) for i, n in enumerate((5, 2, 3))], logits)
    seen = []

    class Spy:
        def decode_step(self, ids, active, view):
            seen.append(view.batch_size)
            return model.decode_step(ids, active, view)

    decoder.model = Spy()
    out = finish(decoder)
    assert [len(out[i]) for i in range(3)] == [5, 2, 3]
    assert seen == [3, 3, 1, 1]  # the first row alone is left: the bucket of one
    assert {n: t.data_ptr() for n, t in ref.tensors().items()} == pointers
    assert ref.count.tolist() == [8, 5, 6]  # the last token of a row is never fed
    with pytest.raises(ValueError, match="slots"):
        full = Decoder(model, Slots(state))
        full.adopt([Row(GREEDY, 1)] * 3, logits)
        full.join(Row(GREEDY, 1), logits[0], state)
