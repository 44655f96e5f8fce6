"""State snapshots: the fingerprint covers every weight, and every loaded tensor is checked."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import random_model
from rgemma.pretrained.snapshot import load_state, model_fingerprint, save_state


@pytest.fixture
def saved(model, tmp_path):
    """(model, path) of a snapshot of one row after 9 tokens, with tokens and logits."""
    ids = torch.randint(0, 97, (1, 9), generator=torch.Generator().manual_seed(0))
    out = model(ids, use_cache=True)
    path = tmp_path / "s.state"
    save_state(path, out.cache, model, tokens=ids[0].tolist(), logits=out.logits[:, -1])
    return model, path


def tamper(path, edit_tensors=None, edit_meta=None):
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    if edit_tensors:
        edit_tensors(tensors)
    if edit_meta:
        edit_meta(meta)
    save_file(tensors, str(path), metadata=meta)


def refused(model, path, needle):
    with pytest.raises(ValueError, match=needle) as err:
        load_state(path, model)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- fingerprint
def test_a_fine_tune_of_the_same_base_is_refused(saved):
    model, path = saved
    tuned = random_model()
    with torch.no_grad():  # flat index 1: between the old fingerprint's strided samples
        tuned.model.embed_tokens.weight.view(-1)[1] += 0.5
    refused(tuned, path, "different model")
    load_state(path, random_model())  # the same weights load


def test_fingerprint_follows_weight_changes_after_caching(model):
    first = model_fingerprint(model)
    assert model_fingerprint(model) == first  # cached
    model.load_state_dict(random_model(seed=3).state_dict())
    second = model_fingerprint(model)
    assert second != first
    with torch.no_grad():
        model.model.final_norm.weight.data = model.model.final_norm.weight + 1
    assert model_fingerprint(model) not in (first, second)


def test_fingerprint_is_cached(model, monkeypatch):
    import rgemma.pretrained.snapshot_checks as checks

    first = model_fingerprint(model)
    monkeypatch.setattr(checks, "_weights_digest", lambda *a: pytest.fail("hashed again"))
    assert model_fingerprint(model) == first


def test_fingerprint_is_dtype_independent_and_hashes_in_pieces(monkeypatch):
    import rgemma.pretrained.snapshot_checks as checks

    monkeypatch.setattr(checks, "HASH_CHUNK", 100)  # many pieces per tensor
    assert model_fingerprint(random_model().to(torch.bfloat16)) == model_fingerprint(random_model())
    assert model_fingerprint(random_model(seed=1)) != model_fingerprint(random_model())


# --------------------------------------------------------------------------- tensor checks
def _set(name, value):
    def edit(tensors):
        tensors[name] = value(tensors[name]) if callable(value) else value

    return edit


def _nan(t):
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


CASES = {
    "nan h": (_set("layers.0.h", _nan), r"'layers\.0\.h' has NaN or Inf"),
    "h not float32": (
        _set("layers.0.h", lambda t: t.half()),
        r"'layers\.0\.h' is torch\.float16, expected torch\.float32",
    ),
    "inf k": (_set("layers.2.k", lambda t: t.fill_(float("inf"))), r"'layers\.2\.k' has NaN or Inf"),
    "int conv": (
        _set("layers.1.conv", lambda t: t.long()),
        r"'layers\.1\.conv' is torch\.int64, expected a floating-point",
    ),
    "nan logits": (_set("logits", _nan), r"'logits' has NaN or Inf"),
    "logits shape": (_set("logits", lambda t: t[:, :5]), r"'logits' has shape \(1, 5\), expected \(1, 97\)"),
    "v shape": (_set("layers.2.v", lambda t: t[:, :3]), r"'layers\.2\.v' has shape"),
    "negative count": (_set("count", lambda t: -t), r"'count' has negative values"),
    "float count": (_set("count", lambda t: t.float()), r"'count' is torch\.float32, expected an integer"),
    "doc_start past count": (_set("doc_start", lambda t: t + 100), r"'doc_start' is past 'count'"),
    "missing conv": (lambda t: t.pop("layers.1.conv"), r"missing tensor 'layers\.1\.conv'"),
    "unexpected": (_set("layers.0.k", torch.zeros(1)), r"unexpected tensor 'layers\.0\.k'"),
    "token ids": (_set("tokens", lambda t: t + 1000), r"'tokens' holds ids outside the vocabulary"),
    "token count": (_set("tokens", lambda t: t[:4]), r"'tokens' has 4 ids but the state read 9"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_tensor_is_named(saved, case):
    model, path = saved
    edit, needle = CASES[case]
    tamper(path, edit_tensors=edit)
    refused(model, path, needle)


def test_swapped_layer_kinds_are_named(saved):
    model, path = saved

    def swap(meta):
        kinds = json.loads(meta["kinds"])
        kinds[0], kinds[2] = kinds[2], kinds[0]
        meta["kinds"] = json.dumps(kinds)

    tamper(path, edit_meta=swap)
    refused(model, path, r"layer 0 is 'attention' in the snapshot but 'recurrent' in the model")


def test_bad_metadata_is_named(saved):
    model, path = saved
    tamper(path, edit_meta=lambda meta: meta.update(extra="{oops"))
    refused(model, path, "metadata 'kinds' or 'extra'")


def test_padded_batch_snapshot_round_trips(model, tmp_path):
    ids = torch.randint(0, 97, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :3] = 0
    state = model(ids, attention_mask=mask, use_cache=True).cache
    save_state(tmp_path / "b.state", state, model)
    back = load_state(tmp_path / "b.state", model).state
    assert back.count.tolist() == [7, 4] and torch.equal(back.layers[0].h, state.layers[0].h)


def test_old_version_is_refused_by_version(saved):
    model, path = saved
    tamper(path, edit_meta=lambda meta: meta.update(version="1"))
    refused(model, path, "a version 1 snapshot; this rgemma reads version 2")
