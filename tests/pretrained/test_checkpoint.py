"""save_pretrained / from_pretrained: round trips, shards, the HF cache, and clear errors."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import random_model, tiny_config
from oracles import transformers_lm
from rgemma import RecurrentGemmaForCausalLM, RecurrentGemmaModel, load


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_single_file(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    files = sorted(os.listdir(tmp_path / "m"))
    assert files == ["config.json", "generation_config.json", "model.safetensors"]
    assert "lm_head.weight" not in load_file(tmp_path / "m" / "model.safetensors")  # tied
    back = RecurrentGemmaForCausalLM.from_pretrained(tmp_path / "m")
    assert same_weights(model, back)
    assert back.lm_head.weight is back.model.embed_tokens.weight
    ids = torch.randint(0, 97, (2, 9))
    torch.testing.assert_close(back(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_round_trip_sharded_and_base_model(model, tmp_path):
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 3 and all((tmp_path / s).is_file() for s in shards)
    assert same_weights(model, RecurrentGemmaForCausalLM.from_pretrained(tmp_path))
    base = RecurrentGemmaModel.from_pretrained(tmp_path)
    assert same_weights(model.model, base)
    base.save_pretrained(tmp_path / "base")  # saved under the causal-LM key names
    assert same_weights(model, RecurrentGemmaForCausalLM.from_pretrained(tmp_path / "base"))


def test_loads_in_transformers_and_back(model, tmp_path):
    cfg_model = random_model(tiny_config(lru_width=32))
    cfg_model.save_pretrained(tmp_path / "ours")
    tf = transformers_lm().from_pretrained(tmp_path / "ours", dtype=torch.float32)
    tf.save_pretrained(tmp_path / "theirs")
    back = RecurrentGemmaForCausalLM.from_pretrained(tmp_path / "theirs")
    assert same_weights(cfg_model, back)


def test_dtype_and_device_options(model, tmp_path):
    model.save_pretrained(tmp_path)
    bf = RecurrentGemmaForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert bf.dtype == torch.bfloat16 and bf.device.type == "cpu"
    bf.save_pretrained(tmp_path / "bf")
    assert json.loads((tmp_path / "bf" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    kept = RecurrentGemmaForCausalLM.from_pretrained(tmp_path / "bf")  # dtype=None keeps bf16
    assert kept.dtype == torch.bfloat16
    assert load(tmp_path, dtype="float32").dtype == torch.float32


def test_repo_id_resolves_from_local_hf_cache(model, tmp_path, monkeypatch):
    snap = tmp_path / "hub" / "models--google--tiny-rg" / "snapshots" / "abc123"
    model.save_pretrained(snap)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert same_weights(model, RecurrentGemmaForCausalLM.from_pretrained("google/tiny-rg"))
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert same_weights(model, load("google/tiny-rg"))
    with pytest.raises(FileNotFoundError, match=r"not in the HF cache \(looked in: .*models--google--absent"):
        load("google/absent")


def test_missing_path_and_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load(tmp_path / "empty")


def corrupt(model, tmp_path, edit):
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    edit(tensors)
    save_file(tensors, tmp_path / "model.safetensors")


def test_missing_tensor_is_named(model, tmp_path):
    corrupt(model, tmp_path, lambda t: t.pop("model.layers.2.temporal_block.o_proj.bias"))
    with pytest.raises(ValueError, match=r"missing tensor 'model\.layers\.2\.temporal_block\.o_proj\.bias'"):
        load(tmp_path)


def test_unexpected_tensor_is_named(model, tmp_path):
    corrupt(model, tmp_path, lambda t: t.update(extra=torch.zeros(2)))
    with pytest.raises(ValueError, match="unexpected tensor 'extra'"):
        load(tmp_path)


def test_wrong_shape_names_both_shapes(model, tmp_path):
    corrupt(model, tmp_path, lambda t: t.update({"model.final_norm.weight": torch.zeros(31)}))
    with pytest.raises(ValueError, match=r"'model\.final_norm\.weight' has shape \(31,\), expected \(32,\)"):
        load(tmp_path)


def test_truncated_safetensors(model, tmp_path):
    model.save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load(tmp_path)


def test_pickle_only_checkpoint_is_refused(model, tmp_path):
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="safetensors"):
        load(tmp_path)


def test_save_is_atomic_and_keeps_other_files(model, tmp_path, monkeypatch):
    target = tmp_path / "out"
    model.save_pretrained(target)
    (target / "tokenizer.json").write_text("{}")
    before = (target / "model.safetensors").read_bytes()

    import rgemma.pretrained.checkpoint as ck

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ck, "write_shards", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        random_model(seed=1).save_pretrained(target)
    assert (target / "model.safetensors").read_bytes() == before  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp dirs left
    monkeypatch.undo()
    other = random_model(seed=1)
    other.save_pretrained(target)
    assert (target / "tokenizer.json").exists()
    assert same_weights(other, load(target))


def test_saved_files_get_ordinary_permissions(model, tmp_path):
    """Temp dirs are private (0700); the finished directory must not stay that way."""
    old = os.umask(0o022)
    try:
        model.save_pretrained(tmp_path / "m")
    finally:
        os.umask(old)
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "m" / "model.safetensors").stat().st_mode & 0o777 == 0o644


def test_one_writer_for_save_pretrained_and_trainer_checkpoints(model, tmp_path):
    """save_pretrained and the trainer (write_checkpoint of a state dict) write the same files."""
    from rgemma.pretrained.checkpoint import write_checkpoint

    model.save_pretrained(tmp_path / "a")
    (tmp_path / "b").mkdir()
    write_checkpoint(tmp_path / "b", dict(model.state_dict()), model.config)
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["torch_dtype"] == config["dtype"] == "float32" and "quantization" not in config
    assert same_weights(model, load(tmp_path / "b"))


def test_an_int8_model_saves_and_loads_as_int8(model, tmp_path):
    from rgemma.accel.quantize import Int8Linear, quantize_model

    quantized = quantize_model(random_model(seed=2))
    quantized.save_pretrained(tmp_path / "q")
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert "model.layers.0.temporal_block.linear_x" in config["quantization"]["modules"]
    assert "lm_head" not in config["quantization"]["modules"]  # the tied head is the embedding
    again = load(tmp_path / "q")
    assert isinstance(again.model.layers[0].temporal_block.linear_x, Int8Linear)
    ids = torch.randint(0, 97, (1, 8))
    with torch.no_grad():
        assert torch.isfinite(again(ids).logits).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(model, tmp_path, bad):
    def poison(t):
        t["model.layers.1.mlp_block.up_proj.weight"][3, 5] = bad

    corrupt(model, tmp_path, poison)
    with pytest.raises(
        ValueError, match=r"'model\.layers\.1\.mlp_block\.up_proj\.weight' has NaN or Inf"
    ) as err:
        load(tmp_path)
    assert "\n" not in str(err.value)


def test_weights_that_overflow_the_requested_dtype_are_refused(model, tmp_path):
    corrupt(model, tmp_path, lambda t: t["model.final_norm.weight"].fill_(1e6))
    with pytest.raises(ValueError, match=r"'model\.final_norm\.weight' overflows torch\.float16"):
        RecurrentGemmaForCausalLM.from_pretrained(tmp_path, dtype=torch.float16)
    RecurrentGemmaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)  # fine where it fits


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e6])
def test_int8_on_read_refuses_non_finite_weights_from_their_scales(model, tmp_path, bad):
    """Quantized as read, a linear's weight is checked through its scales (a NaN or Inf weight
    gives a NaN or Inf scale), with the messages of a plain load."""
    corrupt(model, tmp_path, lambda t: t["model.layers.1.mlp_block.up_proj.weight"][3, 5].fill_(bad))
    want = "overflows torch.float16" if bad == 1e6 else "has NaN or Inf values"
    with pytest.raises(ValueError, match=rf"'model\.layers\.1\.mlp_block\.up_proj\.weight' {want}"):
        RecurrentGemmaForCausalLM.from_pretrained(tmp_path, dtype=torch.float16, quantize="int8")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("tied", [True, False])
def test_int8_on_read_equals_quantizing_the_loaded_model(tmp_path, dtype, tied):
    """quantize="int8" at load gives the very bytes of loading and then quantize_model: every
    linear int8 (the tied head its own copy of the embedding), read shard by shard."""
    from rgemma.accel.quantize import Int8Linear, quantize_model

    random_model(tiny_config(tie_word_embeddings=tied)).to(dtype).save_pretrained(
        tmp_path, max_shard_size="20KB"
    )
    ref = quantize_model(RecurrentGemmaForCausalLM.from_pretrained(tmp_path))
    got = RecurrentGemmaForCausalLM.from_pretrained(tmp_path, quantize="int8")
    assert isinstance(got.lm_head, Int8Linear) and not any(type(m) is torch.nn.Linear for m in got.modules())
    want = ref.state_dict()
    assert set(got.state_dict()) == set(want)
    for k, v in got.state_dict().items():
        assert v.dtype == want[k].dtype and torch.equal(v, want[k]), k
    ids = torch.randint(0, 97, (1, 7))
    assert torch.equal(got(ids).logits, ref(ids).logits)


def test_int8_on_read_holds_a_few_float_linear_weights_at_most(tmp_path, monkeypatch):
    """quantize="int8" lets each linear's float weight go once it is quantized: whenever a
    tensor is read, at most three earlier float linear weights are still alive (the one being
    quantized, the one read ahead, and the one before it while the loader lets it go), and none
    once loading is done; the model holds no float copy of a linear."""
    import weakref

    from rgemma.pretrained import checkpoint

    config = tiny_config(num_hidden_layers=6)
    random_model(config).to(torch.bfloat16).save_pretrained(tmp_path, max_shard_size="20KB")
    linears = {n + ".weight" for n, m in random_model(config).named_modules() if type(m) is torch.nn.Linear}
    read, most = [], [0]

    def counting(path, *args):
        for key, tensor in checkpoint_read_tensors(path, *args):
            most[0] = max(most[0], sum(ref() is not None for ref in read))
            if key in linears:
                read.append(weakref.ref(tensor))
            yield key, tensor

    checkpoint_read_tensors = checkpoint.read_tensors
    monkeypatch.setattr(checkpoint, "read_tensors", counting)
    model = RecurrentGemmaForCausalLM.from_pretrained(tmp_path, quantize="int8")
    assert len(read) == len(linears) - 1 > 20  # every linear but the tied head was read
    assert most[0] <= 3 and all(ref() is None for ref in read)
    assert all(t.dtype == torch.int8 for k, t in model.state_dict().items() if k in linears)


def test_plain_reads_equal_safetensors_and_name_a_truncated_file(model, tmp_path):
    from rgemma.io.tensor_reader import read_tensors

    model.to(torch.bfloat16).save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    ours = dict(read_tensors(path))
    theirs = load_file(path)
    assert list(ours) != [] and set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) and ours[k].dtype == theirs[k].dtype for k in theirs)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        dict(read_tensors(path))
    path.write_bytes(b"\x05")
    with pytest.raises(ValueError, match="no header"):
        dict(read_tensors(path))
