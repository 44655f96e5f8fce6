"""lm-evaluation-harness end to end on tasks stored here (lm_eval_tasks/: a multiple_choice, a
loglikelihood_rolling and a generate_until task over local JSONL), both ways: in process
(`rgemma eval`, the "rgemma" lm-eval model) and through the server (lm-eval's
local-completions, tokenizing through /tokenize). Each number lm-eval reports is checked
against the bundled model's own scores computed here. Nothing may reach the network."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import tempfile
from pathlib import Path

import pytest

os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="rgemma-lm-eval-"))
lm_eval = pytest.importorskip("lm_eval")

from rgemma.cli import main  # noqa: E402
from rgemma.text.engine import GenerationConfig, complete  # noqa: E402
from rgemma.text.sampling import SamplingParams  # noqa: E402
from rgemma.text.scoring import score_ids  # noqa: E402

TASKS = Path(__file__).parent / "lm_eval_tasks"
NAMES = ["rgemma_mc", "rgemma_ppl", "rgemma_gen"]
TOL = 1e-4
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (TASKS / "data" / f"{name}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def bundled():
    from rgemma.pretrained.loading import load

    return load(None)


@pytest.fixture
def offline(monkeypatch):
    """Run from the task folder (the YAMLs name their data relative to it) with every
    connection outside 127.0.0.1 refused."""
    monkeypatch.chdir(TASKS)
    connect = socket.socket.connect

    def local_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (
            "127.0.0.1",
            "localhost",
            "::1",
        ):
            raise AssertionError(f"lm-eval tried the network: {address}")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)


# --------------------------------------------------------------------------- direct scores
def expected(model, tok, bos: bool) -> dict[str, float]:
    """The three tasks' metrics from the model's own scores; `bos`: strings tokenized with BOS
    (in process) or without (lm-eval's remote tokenizer)."""
    enc = lambda s: tok.encode(s, add_bos=bos)  # noqa: E731
    correct = 0
    for doc in rows("mc"):
        context = enc(doc["question"])
        whole = [enc(doc["question"] + " " + c) for c in doc["choices"]]
        scored = score_ids(model, whole, [len(context)] * len(whole))
        correct += max(range(len(whole)), key=lambda i: scored[i].total) == doc["label"]
    texts = [doc["text"] for doc in rows("ppl")]
    docs = score_ids(model, [[tok.bos_id] + tok.encode(t, add_bos=False) for t in texts])
    words = sum(len(re.split(r"\s+", t)) for t in texts)
    config = GenerationConfig(max_new_tokens=12, sampling=SamplingParams(temperature=0), stop=["."])
    gen = rows("gen")
    outs = complete(model, tok, [enc(d["question"]) for d in gen], config)
    return {
        "acc": correct / len(rows("mc")),
        "word_perplexity": math.exp(-sum(d.total for d in docs) / words),
        "exact_match": sum(o.text == d["answer"] for o, d in zip(outs, gen)) / len(gen),
    }


def reported(results: dict) -> dict[str, float]:
    r = results["results"]
    return {
        "acc": r["rgemma_mc"]["acc,none"],
        "word_perplexity": r["rgemma_ppl"]["word_perplexity,none"],
        "exact_match": r["rgemma_gen"]["exact_match,none"],
    }


def check(got: dict, want: dict) -> None:
    assert got["acc"] == want["acc"] and got["exact_match"] == want["exact_match"]
    assert math.isclose(got["word_perplexity"], want["word_perplexity"], rel_tol=TOL)


# --------------------------------------------------------------------------- both ways
def test_rgemma_eval_in_process_equals_direct_scoring(bundled, offline, capsys, tmp_path):
    out = tmp_path / "results.json"
    argv = ["eval", "--tasks", ",".join(NAMES), "--include-path", str(TASKS), "--no-builtin-tasks"]
    assert main(argv + ["--output-path", str(out)]) == 0
    assert "rgemma_mc" in capsys.readouterr().out  # the table
    got = reported(json.loads(out.read_text()))
    want = expected(*bundled, bos=True)
    check(got, want)
    assert got["acc"] >= 0.5  # the bundled model knows its stories


def test_lm_eval_local_completions_through_the_server_equals_direct_scoring(bundled, offline):
    from lm_eval.tasks import TaskManager

    from live import live_server
    from rgemma.serving.api import create_app

    model, tok = bundled
    with live_server(create_app(model, tok, model_name="rgemma-tiny")) as url:
        results = lm_eval.simple_evaluate(
            model="local-completions",
            model_args={"model": "rgemma-tiny", "base_url": f"{url}/v1/completions", "batch_size": 4},
            tasks=NAMES,
            task_manager=TaskManager(include_path=str(TASKS), include_defaults=False),
        )
    check(reported(results), expected(model, tok, bos=False))
