"""`rgemma convert`: DeepMind torch / Flax (.npz) / HF sources give models whose logits equal
DeepMind's forward; bad sources fail with one line naming the key and leave nothing behind;
tokenizer.json encodes like the SentencePiece model; int8 weights dequantize within scale/2.
"""

import argparse
import io
import json
import random
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open

from conftest import tiny_config
from oracles import deepmind_pair, dm_logits, transformers_lm
from rgemma import RecurrentGemmaForCausalLM
from rgemma.accel.quantize import Int8Linear, dequantize_weight, quantize_model
from rgemma.cli.convert import add_convert_arguments, run_convert
from rgemma.convert.pipeline import convert
from rgemma.convert.sources import detect_format
from rgemma.convert.tokenizer import read_sentencepiece

TOL = dict(rtol=0, atol=2e-4)
TEXTS = [
    "Hello world, the café is naïve!",
    "  leading   and trailing spaces  ",
    "emoji 🦊🐕 and 中文 text",
    "ÅÉÎÕÜ ﬁ ligature ① ＡＢＣ",
    "new\nline\ttab 12345",
    "x<start_of_turn>user\nhi<end_of_turn>",
    "",
]


# --------------------------------------------------------------------------- helpers
def flags(config) -> dict:
    """What a DeepMind checkpoint cannot say about `config`."""
    return dict(
        attention_window_size=config.attention_window_size,
        logits_soft_cap=config.logits_soft_cap,
        embedding_scale=None if config.embeddings_scale_by_sqrt_dim else False,
    )


def save_pt(dm, path, dtype=None):
    state = {k: v if dtype is None else v.to(dtype) for k, v in dm.state_dict().items()}
    torch.save(state, path)
    return path


def flax_tree(state: dict) -> dict:
    """DeepMind's Flax parameter names, flattened with ".": Dense layers hold `kernel` [in, out]
    where torch holds `weight` [out, in]; everything else has the same name and layout."""
    tree = {}
    for key, t in state.items():
        if key.endswith(".weight") and t.ndim == 2:
            key, t = key.removesuffix(".weight") + ".kernel", t.t()
        tree[key] = t.contiguous()
    return tree


def save_npz(tree: dict, path, bf16: bool = False):
    def array(t):
        if bf16:  # ml_dtypes' bfloat16 as numpy sees it without ml_dtypes: 2-byte void
            return t.to(torch.bfloat16).view(torch.uint16).numpy().view("V2")
        return t.detach().numpy()

    np.savez(path, **{k: array(t) for k, t in tree.items()})
    return path


def packed_positions(T):
    pos = torch.arange(T).repeat(2, 1)
    pos[0, 11:] = torch.arange(T - 11)
    pos[1, 3:] = torch.arange(T - 3)
    pos[1, 20:] = torch.arange(T - 20)
    return pos


def assert_matches_deepmind(out_dir, dm, T=30):
    ours = RecurrentGemmaForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    ids = torch.randint(0, ours.config.vocab_size, (2, T))
    pos = packed_positions(T)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, dm_logits(dm, ids, torch.arange(T).repeat(2, 1)), **TOL)
        torch.testing.assert_close(ours(ids, position_ids=pos).logits, dm_logits(dm, ids, pos), **TOL)
    return ours


def nothing_left(tmp_path, name="out"):
    return not (tmp_path / name).exists() and not [
        p for p in tmp_path.iterdir() if p.name.startswith(f".{name}.")
    ]


def train_sentencepiece(path, kind="bpe"):
    import sentencepiece as spm

    random.seed(0)
    words = "the quick brown fox jumps over lazy dog café naïve résumé über straße 12345 hello".split()
    lines = [" ".join(random.choice(words) for _ in range(12)) for _ in range(300)]
    gemma = dict(
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        split_digits=True,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
    )
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type=kind,
        vocab_size=300,
        hard_vocab_limit=False,
        byte_fallback=True,
        minloglevel=2,
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
        **(gemma if kind == "bpe" else {}),
    )
    path.write_bytes(model.getvalue())
    return path


@pytest.fixture(scope="module")
def griffin(tmp_path_factory):
    """A random DeepMind Griffin (tiny, lru_width != width) saved as a .pt."""
    config = tiny_config()
    dm, _ = deepmind_pair(config)
    path = save_pt(dm, tmp_path_factory.mktemp("dm") / "griffin.pt")
    return config, dm, path


# --------------------------------------------------------------------------- DeepMind torch
@pytest.mark.parametrize(
    "overrides",
    [
        dict(lru_width=32, vocab_size=300),  # RecurrentGemma
        dict(lru_width=48, logits_soft_cap=0.0, embeddings_scale_by_sqrt_dim=False),  # Griffin paper
        dict(block_types=("recurrent",), logits_soft_cap=0.0, embeddings_scale_by_sqrt_dim=False),  # Hawk
        dict(block_types=("attention", "recurrent"), attention_window_size=3),  # attention first
    ],
    ids=["recurrentgemma", "griffin-paper", "hawk", "attention-first"],
)
def test_deepmind_torch_layouts(tmp_path, overrides):
    config = tiny_config(**overrides)
    dm, _ = deepmind_pair(config)
    out = convert(save_pt(dm, tmp_path / "dm.pt"), tmp_path / "out", progress=False, **flags(config))
    ours = assert_matches_deepmind(out, dm)
    for field in (
        "hidden_size",
        "lru_width",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "layers_block_type",
        "vocab_size",
        "logits_soft_cap",
        "embeddings_scale_by_sqrt_dim",
        "attention_window_size",
    ):
        assert getattr(ours.config, field) == getattr(config, field), field


def test_sharded_output_and_dtype(tmp_path, griffin):
    config, dm, pt = griffin
    out = convert(pt, tmp_path / "out", max_shard_size="20KB", progress=False, **flags(config))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and all((out / f).is_file() for f in files)
    with safe_open(out / files[0], framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
    assert_matches_deepmind(out, dm)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["torch_dtype"] == "float32" and cfg["model_type"] == "recurrent_gemma"
    assert json.loads((out / "generation_config.json").read_text())["bos_token_id"] == 2

    bf16 = convert(pt, tmp_path / "bf16", dtype="bfloat16", progress=False, **flags(config))
    assert (bf16 / "model.safetensors").is_file()
    with safe_open(bf16 / "model.safetensors", framework="pt") as f:
        assert f.get_tensor("model.embed_tokens.weight").dtype == torch.bfloat16


def test_missing_flags_and_preset_mismatch(tmp_path, griffin):
    _, _, pt = griffin
    with pytest.raises(ValueError, match="--preset .*--attention-window-size and --logits-soft-cap"):
        convert(pt, tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="does not match preset 'recurrentgemma-2b': its hidden_size is 32"):
        convert(pt, tmp_path / "out", preset="recurrentgemma-2b", progress=False)
    assert nothing_left(tmp_path)


# --------------------------------------------------------------------------- DeepMind Flax
def test_flax_npz_matches_deepmind(tmp_path, griffin):
    config, dm, _ = griffin
    tree = flax_tree(dm.state_dict())
    assert tuple(tree["blocks.0.mlp_block.ffw_up.w"].shape) == (2, 32, 48)
    assert tuple(tree["blocks.0.recurrent_block.conv_1d.w"].shape) == (4, 48)
    assert tuple(tree["blocks.0.recurrent_block.linear_x.kernel"].shape) == (32, 48)
    assert tuple(tree["blocks.2.attention_block.proj_k.kernel"].shape) == (32, 8)
    npz = save_npz({"params." + k: v for k, v in tree.items()}, tmp_path / "params.npz")
    assert detect_format(npz) == "deepmind-flax"
    assert_matches_deepmind(convert(npz, tmp_path / "out", progress=False, **flags(config)), dm)


def test_flax_bf16_equals_torch_bf16(tmp_path, griffin):
    config, dm, _ = griffin
    npz = save_npz(flax_tree(dm.state_dict()), tmp_path / "p.npz", bf16=True)
    pt = save_pt(dm, tmp_path / "p.pt", dtype=torch.bfloat16)
    a = convert(npz, tmp_path / "a", progress=False, **flags(config))
    b = convert(pt, tmp_path / "b", progress=False, **flags(config))
    with (
        safe_open(a / "model.safetensors", framework="pt") as fa,
        safe_open(b / "model.safetensors", framework="pt") as fb,
    ):
        assert sorted(fa.keys()) == sorted(fb.keys())
        for k in fa.keys():
            assert fa.get_tensor(k).dtype == torch.bfloat16
            assert torch.equal(fa.get_tensor(k), fb.get_tensor(k)), k


def test_orbax_needs_the_flax_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "orbax", None)  # as if not installed: import fails
    monkeypatch.setitem(sys.modules, "orbax.checkpoint", None)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "_METADATA").write_text("{}")
    assert detect_format(ckpt) == "deepmind-flax"
    with pytest.raises(ImportError, match=re.escape("rgemma[flax]")):
        convert(ckpt, tmp_path / "out", preset="recurrentgemma-2b", progress=False)
    assert nothing_left(tmp_path)


def save_orbax(tree: dict, path, outer: bool = True):
    """The flat Flax tree nested as DeepMind's Orbax checkpoint holds it: top-level groups
    `embedder`, `blocks.N`, `final_norm` (optionally under `params`), then one dict a level."""
    ocp = pytest.importorskip("orbax.checkpoint")
    nested: dict = {}
    for key, t in tree.items():
        parts = key.split(".")
        group, rest = (".".join(parts[:2]), parts[2:]) if parts[0] == "blocks" else (parts[0], parts[1:])
        node = nested.setdefault(group, {})
        for part in rest[:-1]:
            node = node.setdefault(part, {})
        node[rest[-1]] = t.detach().numpy()
    ocp.PyTreeCheckpointer().save(path.absolute(), {"params": nested} if outer else nested)
    return path


@pytest.fixture(scope="module")
def orbax_ckpt(tmp_path_factory, griffin):
    _, dm, _ = griffin
    return save_orbax(flax_tree(dm.state_dict()), tmp_path_factory.mktemp("orbax") / "ckpt")


def test_orbax_matches_deepmind(tmp_path, griffin, orbax_ckpt):
    config, dm, _ = griffin
    assert detect_format(orbax_ckpt) == "deepmind-flax"
    assert_matches_deepmind(convert(orbax_ckpt, tmp_path / "out", progress=False, **flags(config)), dm)
    bare = save_orbax(flax_tree(dm.state_dict()), tmp_path / "bare", outer=False)  # no `params`
    assert_matches_deepmind(convert(bare, tmp_path / "out2", progress=False, **flags(config)), dm)


def _damage_orbax(src, dst, damage):
    shutil.copytree(src, dst)
    if damage == "no metadata":
        (dst / "_METADATA").unlink()
    elif damage == "garbage metadata":
        (dst / "_METADATA").write_text("{not json")
    else:  # the array data (the large files of the OCDBT store) cut in half; metadata intact
        for f in (dst / "ocdbt.process_0" / "d").iterdir():
            if f.stat().st_size > 4096:
                f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return dst


@pytest.mark.parametrize("damage", ["no metadata", "garbage metadata", "truncated arrays"])
def test_corrupt_orbax_is_one_line(tmp_path, griffin, orbax_ckpt, damage, capfd):
    config, _, _ = griffin
    bad = _damage_orbax(orbax_ckpt, tmp_path / "bad", damage)
    with pytest.raises(ValueError, match=r"bad: (not a readable|cannot restore)") as err:
        convert(bad, tmp_path / "out", progress=False, **flags(config))
    assert "\n" not in str(err.value) and nothing_left(tmp_path)
    assert "Traceback" not in capfd.readouterr().err


def test_truncated_orbax_arrays_print_one_line_in_a_real_process(tmp_path, orbax_ckpt):
    """Orbax's background reads used to print "Event loop is closed" tracebacks after the error."""
    bad = _damage_orbax(orbax_ckpt, tmp_path / "bad", "truncated arrays")
    argv = ["convert", str(bad), str(tmp_path / "out"), "--from", "deepmind-flax"]
    argv += ["--attention-window-size", "6", "--logits-soft-cap", "30"]
    code = (
        f"import sys, time; sys.path[:] = {sys.path!r}; from rgemma.cli import main; "
        f"rc = main({argv!r}); time.sleep(0.5); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    err = proc.stderr.replace("\r", "\n").splitlines()
    lines = [line for line in err if line.strip() and not line.startswith("converting")]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "bad: cannot restore '" in lines[0]


def test_orphaned_orbax_read_errors_are_dropped_and_others_still_logged():
    """A read error left in a future nobody awaits is logged by asyncio when the future is
    collected, at a time the real-process test above cannot pin down; this forces it."""
    code = f"""
import asyncio, gc, sys
sys.path[:] = {sys.path!r}
from rgemma.convert.sources import _drop_closed_loop_noise
_drop_closed_loop_noise()
loop = asyncio.new_event_loop()
for text in ["OUT_OF_RANGE: Requested byte range [1, 2) is not valid", "a genuine bug"]:
    future = loop.create_future()
    future.set_exception(ValueError(text))
    del future
    gc.collect()
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "a genuine bug" in proc.stderr and "OUT_OF_RANGE" not in proc.stderr


# --------------------------------------------------------------------------- transformers
def test_transformers_loads_the_output(tmp_path):
    config = tiny_config(lru_width=32)  # transformers needs lru_width == hidden_size
    dm, _ = deepmind_pair(config)
    out = convert(save_pt(dm, tmp_path / "dm.pt"), tmp_path / "out", progress=False, **flags(config))
    tf = transformers_lm().from_pretrained(out, dtype=torch.float32).eval()
    ours = RecurrentGemmaForCausalLM.from_pretrained(out)
    ids = torch.randint(0, 97, (2, config.attention_window_size))
    with torch.no_grad():
        torch.testing.assert_close(tf(ids, use_cache=False).logits, ours(ids).logits, **TOL)


# --------------------------------------------------------------------------- failures
def _bad_state(state, case):
    state = dict(state)
    if case == "unknown":
        state["blocks.0.recurrent_block.extra.w"] = torch.zeros(3)
        return state, "blocks.0.recurrent_block.extra.w"
    if case == "shape":
        state["blocks.1.recurrent_block.linear_x.bias"] = torch.zeros(5)
        return state, "blocks.1.recurrent_block.linear_x.bias"
    del state["blocks.3.recurrent_block.rg_lru.input_gate.b"]
    return state, "blocks.3.recurrent_block.rg_lru.input_gate.b"


@pytest.mark.parametrize("case", ["unknown", "shape", "missing"])
def test_bad_keys_name_the_key(tmp_path, griffin, case):
    config, dm, _ = griffin
    state, key = _bad_state(dm.state_dict(), case)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=re.escape(repr(key))) as err:
        convert(tmp_path / "bad.pt", tmp_path / "out", progress=False, **flags(config))
    assert "\n" not in str(err.value)
    assert nothing_left(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_pt(tmp_path, griffin, damage):
    config, _, pt = griffin
    data = pt.read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else bytes(random.randbytes(4096)))
    with pytest.raises(ValueError, match=r"bad\.pt: truncated or corrupt") as err:
        convert(bad, tmp_path / "out", progress=False, **flags(config))
    assert "\n" not in str(err.value)
    assert nothing_left(tmp_path)


class _RunsCode:
    """Unpickling this would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_unsafe_pickle_is_refused_as_unsafe_not_corrupt(tmp_path, griffin):
    config, dm, _ = griffin
    marker = tmp_path / "ran"
    torch.save({**dm.state_dict(), "payload": _RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"evil\.pt: refused: .*unsafe pickle.*posix\.system") as err:
        convert(tmp_path / "evil.pt", tmp_path / "out", progress=False, **flags(config))
    message = str(err.value)
    assert "\n" not in message and "weights_only" not in message and "corrupt" not in message
    assert not marker.exists() and nothing_left(tmp_path, "out")
    data = (tmp_path / "evil.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.pt: truncated or corrupt") as err:
        convert(tmp_path / "cut.pt", tmp_path / "out", progress=False, **flags(config))
    reason = str(err.value).split("cut.pt: ", 1)[1]
    assert "unsafe" not in reason and "weights_only" not in reason


def test_failure_while_writing_leaves_nothing(tmp_path, griffin):
    config, _, pt = griffin
    (tmp_path / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        convert(pt, tmp_path / "out", tokenizer=tmp_path / "tokenizer.model", progress=False, **flags(config))
    assert nothing_left(tmp_path)


def test_existing_destination_needs_force(tmp_path, griffin):
    config, dm, pt = griffin
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with pytest.raises(FileExistsError, match="--force"):
        convert(pt, out, progress=False, **flags(config))
    assert (out / "stale.txt").is_file()
    convert(pt, out, force=True, progress=False, **flags(config))
    assert not (out / "stale.txt").exists()
    assert_matches_deepmind(out, dm)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_detect_format(tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    (tmp_path / "x.pth").write_bytes(b"")
    assert detect_format(tmp_path / "hf") == "hf"
    assert detect_format(tmp_path / "x.pth") == "deepmind-torch"
    with pytest.raises(ValueError, match="pass --from"):
        detect_format(tmp_path)
    with pytest.raises(FileNotFoundError):
        detect_format(tmp_path / "nope")


# --------------------------------------------------------------------------- tokenizer
@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_tokenizer_json_encodes_like_sentencepiece(tmp_path, griffin, kind):
    import sentencepiece as spm
    from tokenizers import Tokenizer as HFTokenizer

    from rgemma.text.tokenizer import Tokenizer

    config, _, pt = griffin
    model = train_sentencepiece(tmp_path / "tokenizer.model", kind)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    big = tiny_config(vocab_size=sp.get_piece_size())
    dm, _ = deepmind_pair(big)
    out = convert(
        save_pt(dm, tmp_path / "dm.pt"), tmp_path / "out", tokenizer=model, progress=False, **flags(big)
    )
    assert (out / "tokenizer.model").read_bytes() == model.read_bytes()
    tok = HFTokenizer.from_file(str(out / "tokenizer.json"))
    for text in TEXTS:
        assert tok.encode(text, add_special_tokens=False).ids == sp.encode(text), text
        assert tok.decode(sp.encode(text), skip_special_tokens=False) == sp.decode(sp.encode(text)), text
    assert tok.encode("hello").ids[0] == sp.bos_id()
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_config["add_bos_token"] is True
    assert tok_config["bos_token"] == sp.id_to_piece(sp.bos_id())
    special = json.loads((out / "special_tokens_map.json").read_text())
    assert special["eos_token"]["content"] == sp.id_to_piece(sp.eos_id())
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (sp.bos_id(), sp.eos_id())
    assert Tokenizer.from_dir(out).encode("hello café") == [sp.bos_id(), *sp.encode("hello café")]
    assert read_sentencepiece(model).model_type == (2 if kind == "bpe" else 1)

    small = tiny_config(vocab_size=100)  # a tokenizer larger than the embedding is refused
    dm, _ = deepmind_pair(small)
    with pytest.raises(ValueError, match="tokenizer has"):
        convert(
            save_pt(dm, tmp_path / "s.pt"), tmp_path / "s", tokenizer=model, progress=False, **flags(small)
        )
    assert nothing_left(tmp_path, "s")


# --------------------------------------------------------------------------- HF source, int8
def test_hf_reshard_keeps_tokenizer_and_values(tmp_path, griffin):
    config, dm, pt = griffin
    model = train_sentencepiece(tmp_path / "tokenizer.model")
    # vocab 97 < the tokenizer's: pass the tokenizer directory to an HF copy by hand instead
    first = convert(pt, tmp_path / "first", progress=False, **flags(config))
    (first / "tokenizer.model").write_bytes(model.read_bytes())
    out = convert(
        first,
        tmp_path / "out",
        dtype="bfloat16",
        max_shard_size="30KB",
        attention_window_size=7,
        progress=False,
    )
    assert (out / "tokenizer.model").is_file() and (out / "model.safetensors.index.json").is_file()
    a = RecurrentGemmaForCausalLM.from_pretrained(first)
    b = RecurrentGemmaForCausalLM.from_pretrained(out)
    assert b.config.attention_window_size == 7 and b.dtype == torch.bfloat16
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x.to(torch.bfloat16), y), name
    with pytest.raises(ValueError, match="--preset is for DeepMind"):
        convert(first, tmp_path / "p", preset="recurrentgemma-2b", progress=False)


def test_int8_layout_and_error_bound(tmp_path, griffin):
    config, dm, pt = griffin
    full = convert(pt, tmp_path / "full", progress=False, **flags(config))
    out = convert(full, tmp_path / "int8", quantize="int8", progress=False)
    cfg = json.loads((out / "config.json").read_text())
    quant = cfg["quantization"]
    assert quant["method"] == "int8-weight-only" and quant["group_size"] is None
    assert "model.layers.0.temporal_block.linear_x" in quant["modules"]
    assert "model.layers.2.temporal_block.q_proj" in quant["modules"]
    assert "lm_head" not in quant["modules"] and len(quant["modules"]) == 3 * 3 + 1 * 4 + 4 * 3
    with safe_open(full / "model.safetensors", framework="pt") as f:
        original = {k: f.get_tensor(k) for k in f.keys()}
    with safe_open(out / "model.safetensors", framework="pt") as f:
        written = {k: f.get_tensor(k) for k in f.keys()}
    for module in quant["modules"]:
        q, scale = written[module + ".weight"], written[module + ".weight_scale"]
        w = original[module + ".weight"]
        assert q.dtype == torch.int8 and q.shape == w.shape and scale.shape == w.shape[:1]
        err = (dequantize_weight(q, scale) - w.float()).abs()
        assert (err <= scale.float()[:, None] / 2 + 1e-6).all(), module
    for key in (
        "model.embed_tokens.weight",
        "model.layers.0.temporal_block.linear_x.bias",
        "model.layers.0.temporal_block.rg_lru.recurrent_param",
        "model.layers.0.temporal_block.conv_1d.weight",
        "model.final_norm.weight",
    ):
        assert torch.equal(written[key], original[key]), key
    with pytest.raises(ValueError, match="already quantized"):
        convert(out, tmp_path / "again", quantize="int8", progress=False)


def int8_layers(model) -> dict:
    return {n: (m.weight, m.weight_scale) for n, m in model.named_modules() if isinstance(m, Int8Linear)}


def test_convert_int8_equals_int8_at_load(tmp_path, griffin):
    """`rgemma convert --quantize int8` and `--quantize int8` at load: one quantizer, same bytes."""
    config, _, pt = griffin
    full = convert(pt, tmp_path / "full", dtype="bfloat16", progress=False, **flags(config))
    exported = RecurrentGemmaForCausalLM.from_pretrained(
        convert(full, tmp_path / "int8", quantize="int8", progress=False)
    )
    at_load = quantize_model(RecurrentGemmaForCausalLM.from_pretrained(full))
    ours, theirs = int8_layers(exported), int8_layers(at_load)
    assert ours and set(ours) == set(theirs) - {"lm_head"}
    for name, (q, scale) in ours.items():
        assert scale.dtype == torch.bfloat16, name
        assert torch.equal(q, theirs[name][0]) and torch.equal(scale, theirs[name][1]), name
    ids = torch.randint(0, config.vocab_size, (1, 9))
    with torch.no_grad():
        assert torch.isfinite(exported(ids).logits).all()


def test_int8_exports_with_float32_scales_still_load(tmp_path, griffin):
    """Exports made before the quantizer was shared store float32 scales."""
    from safetensors.torch import save_file

    config, _, pt = griffin
    out = convert(pt, tmp_path / "int8", quantize="int8", dtype="bfloat16", progress=False, **flags(config))
    with safe_open(out / "model.safetensors", framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    old = {k: v.float() if k.endswith("_scale") else v for k, v in tensors.items()}
    save_file(old, str(out / "model.safetensors"), metadata={"format": "pt"})
    model = RecurrentGemmaForCausalLM.from_pretrained(out)
    for name, (q, scale) in int8_layers(model).items():
        assert torch.equal(q, tensors[f"{name}.weight"]), name
        assert torch.equal(scale, tensors[f"{name}.weight_scale"]), name


# --------------------------------------------------------------------------- CLI
def parser():
    p = argparse.ArgumentParser(prog="rgemma convert")
    return add_convert_arguments(p)


def test_cli_runs_and_reports_errors_in_one_line(tmp_path, griffin, capsys):
    config, _, pt = griffin
    text = parser().format_help()
    assert "examples:" in text and "--no-embedding-scale" in text and "rgemma[flax]" in text
    args = parser().parse_args(
        [
            str(pt),
            str(tmp_path / "out"),
            "--attention-window-size",
            "6",
            "--logits-soft-cap",
            "30",
            "--dtype",
            "bfloat16",
        ]
    )
    assert run_convert(args) == 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    capsys.readouterr()
    assert run_convert(args) == 1  # DST exists now
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err and err.startswith("rgemma convert: error:")
    args = parser().parse_args([str(pt), str(tmp_path / "x"), "--no-embedding-scale"])
    assert args.embedding_scale is False and run_convert(args) == 1
    assert "--logits-soft-cap" in capsys.readouterr().err
