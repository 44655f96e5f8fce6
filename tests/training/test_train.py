"""`rgemma train`: packing, exactness, schedule, resume (also after SIGKILL), LoRA, torchrun;
refusals (no target tokens, a damaged or hostile trainer state) and leftovers of killed saves.

Every run is a tiny model on a small synthetic story corpus with its own small tokenizer, so the
whole file takes well under a minute on two CPU cores (the torchrun test is the slow one).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import random_model, tiny_config
from rgemma import RecurrentGemmaForCausalLM
from rgemma.bundled.corpus import write_corpus
from rgemma.bundled.tokenizer_train import train_tokenizer
from rgemma.cli.train import add_train_arguments
from rgemma.text.tokenizer import Tokenizer
from rgemma.training.data import IGNORE, pack, tokenize_chat, tokenize_text
from rgemma.training.trainer import STATE_FILE, TrainConfig, lr_factor, merged_weights, param_groups, train

VOCAB = 512
MODEL = dict(
    num_hidden_layers=3,
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=96,
    num_attention_heads=4,
    num_key_value_heads=1,
    attention_window_size=16,
)
SRC = str(Path(__file__).resolve().parents[2] / "src")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A story corpus, its tokenizer, a from-scratch config, and a 'pretrained' model dir."""
    root = tmp_path_factory.mktemp("train")
    write_corpus(root / "train.jsonl", 120, seed=0)
    train_tokenizer(root / "train.jsonl", root / "tok", vocab_size=VOCAB)
    (root / "config.json").write_text(json.dumps(MODEL))
    torch.manual_seed(0)
    model = RecurrentGemmaForCausalLM(tiny_config(**MODEL))
    model.save_pretrained(root / "base")
    for f in (root / "tok").iterdir():
        shutil.copy(f, root / "base" / f.name)
    return root


def scratch(work: Path, out: Path, data: Path | None = None, **kw) -> dict:
    args = dict(
        steps=6,
        batch_size=4,
        seq_len=64,
        lr=3e-3,
        warmup_steps=2,
        progress=False,
        init_config=work / "config.json",
        tokenizer=work / "tok",
    )
    return train(None, [data or work / "train.jsonl"], out, **{**args, **kw})


def metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def losses(path: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in metrics(path) if "loss" in r}


def env() -> dict:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # as in this process (see one_thread)
        "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }


# --------------------------------------------------------------------------- data
def test_packing_restarts_positions_and_masks_cross_document_labels():
    docs = [([2, 10, 11, 1], [2, 10, 11, 1]), ([2, 20, 21, 22, 23, 24, 1], [2] + [IGNORE] * 3 + [23, 24, 1])]
    rows = pack(docs, seq_len=5, pad_id=0)
    assert rows.input_ids.tolist() == [[2, 10, 11, 1, 2], [20, 21, 22, 23, 24], [1, 0, 0, 0, 0]]
    # doc 1 | doc 2 cut at the row boundary: its pieces restart at 0 | the pads are a document
    assert rows.position_ids.tolist() == [[0, 1, 2, 3, 0], [0, 1, 2, 3, 4], [0, 0, 1, 2, 3]]
    assert rows.labels.tolist() == [
        [IGNORE, 10, 11, 1, IGNORE],
        [IGNORE, IGNORE, IGNORE, 23, 24],
        [IGNORE] * 5,
    ]


def test_text_gets_bos_and_eos_and_chat_trains_only_the_assistant(work):
    tok = Tokenizer.from_dir(work / "tok")
    ids, labels = tokenize_text(tok, "Once upon a time.")
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and labels == ids
    chat = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How are you?"},
        {"role": "user", "content": "Good."},
        {"role": "assistant", "content": "Nice."},
    ]
    ids, labels = tokenize_chat(tok, chat)
    assert ids == tok.encode_chat(chat, add_generation_prompt=False)
    spans, cur = [], []
    for i, label in zip(ids, labels):
        if label != IGNORE:
            assert label == i
            cur.append(i)
        elif cur:
            spans, cur = spans + [cur], []
    spans += [cur] if cur else []
    assert [tok.decode(s, skip_special_tokens=False) for s in spans] == [
        "Hello! How are you?<end_of_turn>\n",
        "Nice.<end_of_turn>\n",
    ]


def test_packed_rows_are_exact():
    """Per-token losses of a packed row equal those of each document (piece) run alone."""
    torch.manual_seed(1)
    model = random_model(tiny_config())  # window 6: documents cross it
    docs = [torch.randint(4, 97, (n,)).tolist() for n in (9, 14, 3, 20)]
    rows = pack([(d, d) for d in docs], seq_len=24, pad_id=0)  # the third is cut in two
    with torch.no_grad():
        logits = model(rows.input_ids, position_ids=rows.position_ids).logits
    packed = F.cross_entropy(
        logits[:, :-1].transpose(1, 2), rows.labels[:, 1:], ignore_index=IGNORE, reduction="none"
    )
    mask = rows.labels[:, 1:] != IGNORE
    alone_sum, n_alone = 0.0, 0
    for r in range(len(rows)):
        starts = (rows.position_ids[r] == 0).nonzero().flatten().tolist() + [rows.seq_len]
        for s, e in zip(starts, starts[1:]):
            piece = rows.input_ids[r, s:e]
            if (rows.labels[r, s + 1 : e] == IGNORE).all():
                continue  # padding
            with torch.no_grad():
                logits = model(piece[None]).logits[0, :-1]
            alone = F.cross_entropy(logits, piece[1:], reduction="none")
            torch.testing.assert_close(packed[r, s : e - 1], alone, rtol=1e-5, atol=1e-6)
            alone_sum, n_alone = alone_sum + float(alone.sum()), n_alone + len(alone)
    assert n_alone == int(mask.sum())
    mean_packed = float(packed[mask].mean())
    assert mean_packed == pytest.approx(alone_sum / n_alone, rel=1e-5)
    full = model(rows.input_ids, position_ids=rows.position_ids, labels=rows.labels).loss
    assert float(full.detach()) == pytest.approx(mean_packed, rel=1e-5)


# --------------------------------------------------------------------------- optimizer
def test_weight_decay_skips_rg_lru_embeddings_biases_and_norms():
    model = random_model()
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "model.layers.0.temporal_block.linear_x.weight" in decayed
    assert "model.layers.0.temporal_block.conv_1d.weight" in decayed
    for name in decayed:
        assert not any(s in name for s in ("rg_lru", "embed_tokens", "norm", "bias")), name
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_schedule_warms_up_linearly_then_follows_a_cosine():
    f = [lr_factor(s, 4, 20) for s in range(20)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert f[4 + 8] == pytest.approx(0.5)  # half way through the cosine
    assert all(a >= b for a, b in zip(f[3:], f[4:])) and 0 < f[-1] < 0.05


# --------------------------------------------------------------------------- training
def test_loss_falls_on_the_toy_corpus(work, tmp_path):
    out = scratch(
        work,
        tmp_path / "run",
        steps=30,
        batch_size=8,
        seq_len=128,
        lr=2e-2,
        warmup_steps=3,
        eval_fraction=0.1,
        metrics=tmp_path / "m.jsonl",
    )
    first, last = out["losses"][0], sum(out["losses"][-5:]) / 5
    assert last < 0.7 * first, (first, last)  # at least 30% lower after 30 steps
    assert out["eval_ppl"] == pytest.approx(math.exp(out["eval_loss"]))
    records = metrics(tmp_path / "m.jsonl")
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 31))
    assert {"lr", "tokens_per_s", "grad_norm"} <= set(records[0])
    assert records[-1]["eval_loss"] == out["eval_loss"]


def test_same_seed_same_losses_and_resume_continues_exactly(work, tmp_path):
    a = scratch(work, tmp_path / "a", save_every=3, metrics=tmp_path / "a.jsonl")
    b = scratch(work, tmp_path / "b")
    assert a["losses"] == b["losses"]
    state = torch.load(tmp_path / "a" / "checkpoint-3" / "trainer_state.pt", weights_only=True)
    assert state["step"] == 3 and state["data"]["rows_seen"] == 12
    c = scratch(work, tmp_path / "c", resume=tmp_path / "a" / "checkpoint-3")
    assert c["start_step"] == 3 and c["losses"] == a["losses"][3:]
    assert scratch(work, tmp_path / "d", steps=1, seed=1)["losses"][0] != a["losses"][0]


def test_grad_accumulation_equals_the_larger_batch(work, tmp_path):
    big = scratch(work, tmp_path / "big", steps=3, batch_size=4)
    accum = scratch(work, tmp_path / "acc", steps=3, batch_size=2, grad_accum=2)
    assert accum["losses"] == pytest.approx(big["losses"], rel=1e-5)
    low = scratch(work, tmp_path / "low", steps=2, bf16=True, grad_checkpointing=True)
    assert all(math.isfinite(x) for x in low["losses"])


def test_resume_after_sigkill_matches_an_uninterrupted_run(work, tmp_path):
    args = [
        "--init-config",
        str(work / "config.json"),
        "--tokenizer",
        str(work / "tok"),
        "--data",
        str(work / "train.jsonl"),
        "--steps",
        "40",
        "--batch-size",
        "4",
        "--seq-len",
        "64",
        "--lr",
        "3e-3",
        "--warmup-steps",
        "2",
        "--no-progress",
    ]
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "rgemma",
        "train",
        *args,
        "--out",
        str(out),
        "--save-every",
        "4",
        "--metrics",
        str(tmp_path / "k.jsonl"),
    ]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (out / "checkpoint-8").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert 8 <= done < 40
    resumed = subprocess.run(cmd + ["--resume", str(out)], env=env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["start_step"] == done
    clean = scratch(work, tmp_path / "clean", steps=40, metrics=tmp_path / "c.jsonl")
    got = losses(tmp_path / "k.jsonl")
    assert sorted(got) == list(range(1, 41))
    assert [got[s] for s in range(1, 41)] == pytest.approx(clean["losses"], rel=1e-6)


# --------------------------------------------------------------------------- LoRA
def test_lora_trains_only_adapters_and_merges_exactly(work, tmp_path):
    pytest.importorskip("peft")
    from rgemma.training.trainer import ADAPTER_FILE, add_lora, load_adapter

    args = dict(
        steps=12,
        batch_size=4,
        seq_len=64,
        lr=5e-2,
        warmup_steps=1,
        lora=True,
        lora_rank=4,
        merge=True,
        progress=False,
    )
    out = train(work / "base", [work / "train.jsonl"], tmp_path / "lora", save_every=6, **args)
    assert sum(out["losses"][-3:]) / 3 < 0.97 * out["losses"][0]  # a random base model
    again = train(
        work / "base",
        [work / "train.jsonl"],
        tmp_path / "again",
        resume=tmp_path / "lora" / "checkpoint-6",
        **args,
    )
    assert again["losses"] == out["losses"][6:]
    ckpt = Path(out["checkpoint"])
    base = RecurrentGemmaForCausalLM.from_pretrained(work / "base")
    adapted, _ = add_lora(RecurrentGemmaForCausalLM.from_pretrained(work / "base"), 4, 8.0)
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(trainable) == 2 * 19  # A and B of 6 + 6 + 7 linears (two recurrent, one attention)
    load_adapter(adapted, ckpt / ADAPTER_FILE)
    base_state = base.state_dict()
    for name, value in adapted.state_dict().items():  # the base weights did not move
        if ".lora_" not in name:
            assert torch.equal(value, base_state[name.replace(".base_layer.", ".")]), name
    merged = RecurrentGemmaForCausalLM.from_pretrained(ckpt)  # --merge: full weights, loadable
    ids = torch.randint(4, VOCAB, (2, 40))
    with torch.no_grad():
        want, got = adapted(ids).logits, merged(ids).logits
        assert not torch.allclose(base(ids).logits, want, atol=1e-3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert json.loads((ckpt / "adapter_config.json").read_text())["r"] == 4


def test_merged_weights_fold_each_update_into_its_linear():
    w, a, b = torch.randn(3, 5), torch.randn(2, 5), torch.randn(3, 2)
    state = {
        "l.base_layer.weight": w,
        "l.base_layer.bias": torch.ones(3),
        "l.lora_A.default.weight": a,
        "l.lora_B.default.weight": b,
        "n.weight": torch.zeros(2),
    }
    out = merged_weights(state, 0.5)
    assert set(out) == {"l.weight", "l.bias", "n.weight"}
    torch.testing.assert_close(out["l.weight"], w + 0.5 * b @ a)


# --------------------------------------------------------------------------- torchrun
def test_torchrun_two_processes_match_one(work, tmp_path):
    single = scratch(work, tmp_path / "one", steps=5, metrics=tmp_path / "one.jsonl", eval_fraction=0.1)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "rgemma",
        "train",
        "--init-config",
        str(work / "config.json"),
        "--tokenizer",
        str(work / "tok"),
        "--data",
        str(work / "train.jsonl"),
        "--out",
        str(tmp_path / "two"),
        "--steps",
        "5",
        "--batch-size",
        "4",
        "--seq-len",
        "64",
        "--lr",
        "3e-3",
        "--warmup-steps",
        "2",
        "--eval-fraction",
        "0.1",
        "--metrics",
        str(tmp_path / "two.jsonl"),
        "--no-progress",
    ]
    run = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    two = metrics(tmp_path / "two.jsonl")
    assert [r["loss"] for r in two if "loss" in r] == pytest.approx(single["losses"], rel=1e-5)
    assert two[-1]["eval_loss"] == pytest.approx(single["eval_loss"], rel=1e-5)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["checkpoint-5"]
    a = RecurrentGemmaForCausalLM.from_pretrained(tmp_path / "two" / "checkpoint-5")
    b = RecurrentGemmaForCausalLM.from_pretrained(tmp_path / "one" / "checkpoint-5")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6, msg=name)


# --------------------------------------------------------------------------- CLI
def test_cli_flags_reach_train(tmp_path):
    import argparse

    args = add_train_arguments(argparse.ArgumentParser()).parse_args(
        [
            "--data",
            "a.jsonl",
            "b.txt",
            "--out",
            "o",
            "--lora",
            "--lora-rank",
            "16",
            "--merge",
            "--bf16",
            "--grad-accum",
            "4",
            "--eval-every",
            "50",
            "--init-config",
            "recurrentgemma-2b",
        ]
    )
    assert args.data == ["a.jsonl", "b.txt"] and args.lora_rank == 16 and args.merge
    assert args.grad_accum == 4 and args.bf16 and args.progress and args.model is None


def test_every_train_option_is_a_flag_with_the_config_default():
    import argparse
    import dataclasses

    args = add_train_arguments(argparse.ArgumentParser()).parse_args(["--out", "o"])
    options = [
        f for f in dataclasses.fields(TrainConfig) if f.name not in ("model_dir", "data_files", "out_dir")
    ]
    assert len(options) == 24
    for f in options:
        assert getattr(args, f.name) == f.default, f.name


# --------------------------------------------------------------------------- refusals
def chat_only_user(path: Path) -> Path:
    turns = [{"role": "user", "content": "Hi there"}]
    path.write_text("".join(json.dumps({"messages": turns}) + "\n" for _ in range(3)))
    return path


# --------------------------------------------------------------------------- no targets
def test_data_without_target_tokens_is_refused(work, tmp_path):
    chats = chat_only_user(tmp_path / "users.jsonl")
    with pytest.raises(ValueError, match=r"no target tokens in .*users\.jsonl: no assistant turns"):
        scratch(work, tmp_path / "a", data=chats)
    assert not (tmp_path / "a").exists()  # no checkpoint of nothing
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match=r"empty\.txt: no documents"):
        scratch(work, tmp_path / "b", data=tmp_path / "empty.txt")
    with pytest.raises(ValueError, match=r"no held-out target tokens in .*users\.jsonl"):
        scratch(work, tmp_path / "c", eval_data=[chats])


def test_no_target_reason_names_the_degenerate_input():
    from rgemma.training.data import no_target_reason

    assert "no documents" in no_target_reason([])
    assert "shorter than 2 tokens" in no_target_reason([([2], [2]), ([5], [5])])
    assert "no assistant turns" in no_target_reason([([2, 5, 6], [IGNORE] * 3)])


# --------------------------------------------------------------------------- resume
class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_damaged_or_hostile_trainer_state_is_refused_in_one_line(work, tmp_path):
    from rgemma.training.trainer import read_trainer_state

    good = scratch(work, tmp_path / "run", steps=1)["checkpoint"]
    state = Path(good) / STATE_FILE
    assert read_trainer_state(state)["step"] == 1
    data = state.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "random": os.urandom(512),
    }
    # garbage read as an old-style pickle fails in many ways (KeyError, IndexError, ...)
    cases.update({f"random-{seed}": random.Random(seed).randbytes(512) for seed in range(40)})
    for name, content in cases.items():
        bad = tmp_path / f"{name}.pt"
        bad.write_bytes(content)
        with pytest.raises(ValueError, match="cannot read") as err:
            read_trainer_state(bad)
        assert "\n" not in str(err.value) and "weights_only" not in str(err.value), name
    torch.save({"step": 1, "data": Evil(tmp_path / "PWNED")}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refusing .*posix.system") as err:
        read_trainer_state(tmp_path / "evil.pt")
    assert "weights_only" not in str(err.value) and not (tmp_path / "PWNED").exists()
    torch.save({"step": 1, "data": {"rows_seen": 4}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a trainer state .*optimizer.*data.n_rows"):
        read_trainer_state(tmp_path / "other.pt")
    state.write_bytes(data[:100])  # through train(resume=...) as well
    with pytest.raises(ValueError, match="damaged or truncated"):
        scratch(work, tmp_path / "resumed", steps=2, resume=good)


# --------------------------------------------------------------------------- leftovers
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_new_run_removes_temp_checkpoints_of_killed_runs(work, tmp_path):
    from rgemma.training.trainer import remove_stale_saves

    out = tmp_path / "run"
    out.mkdir()
    stale = out / f".checkpoint-999.tmp-{dead_pid()}-abc"
    (stale / "sub").mkdir(parents=True)
    live = out / f".checkpoint-998.tmp-{os.getpid()}-abc"  # a writer still at work: kept
    live.mkdir()
    scratch(work, out, steps=1)
    assert not stale.exists() and live.exists()
    live.rmdir()
    remove_stale_saves(out)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-1"]


def temps(out: Path) -> list[Path]:
    return [p for p in out.glob(".*") if ".tmp-" in p.name]


def mid_save(out: Path) -> bool:
    """A save under way, after one that completed (so there is a checkpoint to resume)."""
    return out.exists() and bool(temps(out)) and any(out.glob("checkpoint-*"))


def test_sigkill_mid_save_then_rerun_leaves_no_temp(work, tmp_path):
    """Kill `rgemma train` at the first sight of a temp checkpoint, run it again: no temp
    directory is left, and the resumed run still finishes."""
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "rgemma",
        "train",
        "--init-config",
        str(work / "config.json"),
        "--tokenizer",
        str(work / "tok"),
        "--data",
        str(work / "train.jsonl"),
        "--out",
        str(out),
        "--steps",
        "8",
        "--batch-size",
        "2",
        "--seq-len",
        "32",
        "--save-every",
        "1",
        "--no-progress",
    ]
    for _ in range(3):  # the kill may land just after a rename; then try again
        proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline and not mid_save(out):
            time.sleep(0.001)
        assert proc.poll() is None, "the run ended before a save could be caught"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if temps(out):
            break
    assert temps(out), "no temp checkpoint caught mid-save"
    done = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    again = subprocess.run(cmd + ["--resume", str(out)], env=env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["start_step"] == done and temps(out) == []
