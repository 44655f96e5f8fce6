"""Logprobs over HTTP: legacy echo + logprobs (what lm-eval's local-completions reads), chat
logprobs, max_tokens 0, token-id prompts as given, the tokenizer routes, and the openai client."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from live import live_server  # noqa: E402
from rgemma.serving.api import Limits, create_app  # noqa: E402
from rgemma.text.scoring import score_ids  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOL = 1e-4


@pytest.fixture(scope="module")
def client(lm):
    model, tok = lm
    with TestClient(create_app(model, tok, model_name="tiny", limits=Limits(prefill_chunk=4))) as c:
        yield c


def forward_logprobs(model, ids):
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    return logits.log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()


def sse(response) -> list[dict]:
    return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]


def test_echo_logprobs_score_the_prompt_and_the_generated_token(client, lm):
    model, tok = lm
    ids = tok.encode("the quick brown fox", add_bos=False)
    body = {"prompt": ids, "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0}
    choice = client.post("/v1/completions", json=body).json()["choices"][0]
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"]) == len(ids) + 1
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None  # no BOS added
    full = forward_logprobs(model, ids + [tok.encode(choice["text"][-10:], add_bos=False)[-1]])
    assert all(math.isclose(a, b, abs_tol=TOL) for a, b in zip(lp["token_logprobs"][1:-1], full))
    # lm-eval's parse: sum(token_logprobs[ctxlen:-1]); is_greedy from top_logprobs
    ctxlen = 2
    scored = score_ids(model, [ids], start=[ctxlen])[0]
    assert math.isclose(sum(lp["token_logprobs"][ctxlen:-1]), scored.total, abs_tol=TOL)
    greedy = all(
        t == max(top.values())
        for t, top in zip(lp["token_logprobs"][ctxlen:-1], lp["top_logprobs"][ctxlen:-1])
    )
    assert greedy == scored.is_greedy
    assert lp["token_logprobs"][-1] == max(lp["top_logprobs"][-1].values())  # temperature 0 took the argmax


def test_max_tokens_zero_with_echo_scores_the_prompt_only(client, lm):
    model, tok = lm
    text = "hello world, a long prompt that crosses the prefill chunks"
    out = client.post(
        "/v1/completions", json={"prompt": text, "max_tokens": 0, "echo": True, "logprobs": 3}
    ).json()
    choice = out["choices"][0]
    ids = tok.encode(text)  # a string prompt gets the usual BOS
    assert choice["text"] == text and out["usage"]["completion_tokens"] == 0
    assert choice["logprobs"]["tokens"][0] == "<bos>"
    assert all(len(t) >= 3 for t in choice["logprobs"]["top_logprobs"][1:])
    full = forward_logprobs(model, ids)
    assert all(
        math.isclose(a, b, abs_tol=TOL) for a, b in zip(choice["logprobs"]["token_logprobs"][1:], full)
    )
    offsets = choice["logprobs"]["text_offset"]
    assert offsets == sorted(offsets) and offsets[0] == 0


def test_streamed_logprobs_equal_the_plain_response(client):
    body = {"prompt": ["one two", "three"], "max_tokens": 4, "echo": True, "logprobs": 2, "n": 2, "seed": 1}
    plain = client.post("/v1/completions", json=body).json()["choices"]
    with client.stream("POST", "/v1/completions", json=dict(body, stream=True)) as r:
        chunks = sse(r)
    for choice in plain:
        parts = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == choice["index"]]
        assert "".join(p["text"] for p in parts) == choice["text"]
        tokens = [t for p in parts if p["logprobs"] for t in p["logprobs"]["token_logprobs"]]
        assert tokens == choice["logprobs"]["token_logprobs"]
        assert sum(p["logprobs"] is not None for p in parts) >= 5  # the prompt, then a block per token


def test_logprobs_without_echo_cover_the_generated_tokens(client):
    out = client.post("/v1/completions", json={"prompt": "hi there", "max_tokens": 3, "logprobs": 0}).json()
    lp = out["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == out["usage"]["completion_tokens"] == 3
    assert all(len(top) == 1 for top in lp["top_logprobs"])  # logprobs 0: the token itself
    assert lp["text_offset"][0] == len("hi there")


def test_chat_logprobs_streaming_and_not(client, lm):
    model, tok = lm
    messages = [{"role": "user", "content": "Say something"}]
    body = {"messages": messages, "max_tokens": 4, "logprobs": True, "top_logprobs": 3, "temperature": 0}
    out = client.post("/v1/chat/completions", json=body).json()
    content = out["choices"][0]["logprobs"]["content"]
    assert len(content) == out["usage"]["completion_tokens"]
    for entry in content:
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"} and len(entry["top_logprobs"]) == 3
        assert entry["logprob"] == entry["top_logprobs"][0]["logprob"]  # greedy
        assert entry["bytes"] == list(entry["token"].encode()) or entry["token"].startswith("bytes:")
    prompt = tok.encode_chat(messages)
    ids = prompt + [tok.token_to_id(e["token"]) or 0 for e in content]
    with client.stream("POST", "/v1/chat/completions", json=dict(body, stream=True)) as r:
        streamed = [
            e for c in sse(r) for ch in c["choices"] if ch["logprobs"] for e in ch["logprobs"]["content"]
        ]
    assert streamed == content
    assert len(ids) == len(prompt) + len(content)
    assert client.post("/v1/chat/completions", json=dict(body, logprobs=False)).status_code == 400
    assert client.post("/v1/chat/completions", json=dict(body, top_logprobs=21)).status_code == 400


def test_limits_and_refusals(client):
    assert client.post("/v1/completions", json={"prompt": "a", "logprobs": 21}).status_code == 400
    assert client.post("/v1/completions", json={"prompt": "a", "max_tokens": -1}).status_code == 400
    out = client.post("/v1/completions", json={"prompt": "a", "max_tokens": 0}).json()
    assert out["choices"][0]["text"] == "" and out["choices"][0]["logprobs"] is None


def test_tokenizer_routes_and_model_card(client, lm):
    tok = lm[1]
    info = client.get("/tokenizer_info").json()
    assert info["eos_token"] == "<eos>" and info["bos_token_id"] == tok.bos_id and info["chat_template"]
    ids = client.post("/tokenize", json={"prompt": "hello world"}).json()
    assert ids["tokens"] == tok.encode("hello world") and ids["count"] == len(ids["tokens"])
    bare = client.post("/tokenize", json={"prompt": "<eos>", "add_special_tokens": False}).json()
    assert bare["tokens"] == [tok.eos_id]  # how lm-eval's remote tokenizer finds the EOS id
    chat = client.post("/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}).json()
    assert chat["tokens"] == tok.encode_chat([{"role": "user", "content": "hi"}])
    assert client.post("/detokenize", json={"tokens": ids["tokens"]}).json() == {"prompt": "hello world"}
    assert client.post("/detokenize", json={"tokens": [10**6]}).status_code == 400
    assert client.get("/v1/models/tiny").json()["id"] == "tiny"
    assert client.get("/v1/models/other").status_code == 404


def test_openai_client_echo_and_chat_logprobs(lm):
    openai = pytest.importorskip("openai")
    model, tok = lm
    with live_server(create_app(model, tok, model_name="tiny")) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        done = client.completions.create(
            model="tiny", prompt=[5, 6, 7, 8], max_tokens=1, echo=True, logprobs=1, temperature=0
        )
        lp = done.choices[0].logprobs
        assert lp.token_logprobs[0] is None and len(lp.tokens) == 5 and lp.top_logprobs[1]
        assert client.models.retrieve("tiny").id == "tiny"
        chat = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=3,
            logprobs=True,
            top_logprobs=2,
        )
        content = chat.choices[0].logprobs.content
        assert len(content) == chat.usage.completion_tokens and len(content[0].top_logprobs) == 2
        stream = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=3,
            logprobs=True,
            stream=True,
        )
        entries = [e for c in stream for ch in c.choices if ch.logprobs for e in ch.logprobs.content]
        assert len(entries) == 3 and all(e.top_logprobs == [] for e in entries)
