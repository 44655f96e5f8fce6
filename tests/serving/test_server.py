"""`rgemma serve`: OpenAI compatibility, continuous batching without cross-talk, limits and
errors, disconnects, shutdown, metrics. A tiny random model; real servers bind 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from live import live_server  # noqa: E402
from rgemma.cli.serve import add_serve_arguments, run_serve  # noqa: E402
from rgemma.serving.api import Limits, create_app, serve  # noqa: E402
from rgemma.serving.scheduler import BatchEngine, Delta, Done, RequestParams, bench_server_decode  # noqa: E402
from rgemma.text.engine import GenerationConfig, complete  # noqa: E402
from rgemma.text.sampling import SamplingParams  # noqa: E402

GREEDY = SamplingParams(temperature=0)
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def live(lm):
    """A real server shared by the network tests: (base_url, service)."""
    model, tok = lm
    app = create_app(
        model, tok, model_name="tiny", limits=Limits(max_batch=32, max_queue=512, max_tokens=256)
    )
    with live_server(app) as url:
        yield url, app.state.service


@pytest.fixture
def client(lm):
    model, tok = lm
    app = create_app(
        model,
        tok,
        model_name="tiny",
        limits=Limits(max_batch=8, max_queue=8, max_tokens=8, max_prompt_tokens=64),
    )
    with TestClient(app) as c:
        yield c


def wait_idle(engine: BatchEngine, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not (engine.idle and engine.active_rows == 0):
        assert time.monotonic() < deadline, "engine did not become idle"
        time.sleep(0.01)


def reference(model, tok, ids, max_tokens, stop=(), sampling=GREEDY, seed=None):
    """The same request run alone by the text engine."""
    config = GenerationConfig(
        max_new_tokens=max_tokens, sampling=sampling, stop=stop, seed=seed, prefill_chunk=256
    )
    c = complete(model, tok, [ids], config)[0]
    return c.text, c.finish_reason, len(c.token_ids)


async def stream_sse(http, path, body):
    """POST a streaming request; the parsed chunks, ending with the string "[DONE]"."""
    chunks = []
    async with http.stream("POST", path, json=body) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                chunks.append(data if data == "[DONE]" else json.loads(data))
    return chunks


def joined(chunks, chat: bool, choices: int = 1):
    """Texts, finish reasons and usage from a list of SSE chunks."""
    texts, reasons, usage = [""] * choices, [None] * choices, None
    for c in chunks[:-1]:
        usage = c.get("usage") or usage
        for ch in c["choices"]:
            piece = ch["delta"].get("content") if chat else ch["text"]
            texts[ch["index"]] += piece or ""
            reasons[ch["index"]] = ch["finish_reason"] or reasons[ch["index"]]
    return texts, reasons, usage


# --------------------------------------------------------------------------- OpenAI client
def test_openai_client_completes_and_streams_chat_and_text(live, lm):
    openai = pytest.importorskip("openai")
    url, _ = live
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)
    assert [m.id for m in client.models.list()] == ["tiny"]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]

    chat = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0)
    assert chat.id.startswith("chatcmpl-") and chat.object == "chat.completion" and chat.model == "tiny"
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].finish_reason in ("stop", "length")
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=messages,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == chat.choices[0].message.content
    )
    assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens

    text = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=10, temperature=0)
    assert text.id.startswith("cmpl-") and text.object == "text_completion"
    streamed = list(
        client.completions.create(
            model="tiny", prompt="Once upon a time", max_tokens=10, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in streamed) == text.choices[0].text
    assert streamed[-1].choices[0].finish_reason == text.choices[0].finish_reason

    model, tok = lm
    assert text.choices[0].text == reference(model, tok, tok.encode("Once upon a time"), 10)[0]
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="other", prompt="x", max_tokens=2)


# --------------------------------------------------------------------------- batching
def _load_requests(tok, count):
    """Varied requests: chat and text, greedy and seeded, stop strings, n=2."""
    requests = []
    for i in range(count):
        body = {
            "max_tokens": 6 + i % 11,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if i % 5 == 3:
            body.update(temperature=0.9, top_k=20, seed=100 + i, n=2)
        if i % 7 == 2:
            body["stop"] = ["e", "a"]
        if i % 2:
            body["messages"] = [{"role": "user", "content": f"question {i}: " + "why " * (i % 4)}]
            ids = tok.encode_chat(body["messages"])
        else:
            body["prompt"] = f"story {i} begins " + "and then " * (i % 5)
            ids = tok.encode(body["prompt"])
        requests.append((body, ids))
    return requests


def test_concurrent_streams_equal_each_request_run_alone(live, lm):
    model, tok = lm
    url, service = live
    requests = _load_requests(tok, 36)  # 36 clients, 43 rows: more than the batch of 32

    async def run():
        async with httpx.AsyncClient(
            base_url=url, timeout=60, limits=httpx.Limits(max_connections=64)
        ) as http:
            return await asyncio.gather(
                *(stream_sse(http, CHAT if "messages" in b else COMPLETIONS, b) for b, _ in requests)
            )

    results = asyncio.run(run())
    for (body, ids), chunks in zip(requests, results):
        assert chunks[-1] == "[DONE]"
        n = body.get("n", 1)
        texts, reasons, usage = joined(chunks, "messages" in body, n)
        total = 0
        for j in range(n):
            sampling = SamplingParams(temperature=body["temperature"], top_k=body.get("top_k", 0))
            seed = body["seed"] + j if "seed" in body else None
            text, reason, count = reference(
                model, tok, ids, body["max_tokens"], body.get("stop", ()), sampling, seed
            )
            assert (texts[j], reasons[j]) == (text, reason), body
            total += count
        assert usage == {
            "prompt_tokens": len(ids),
            "completion_tokens": total,
            "total_tokens": len(ids) + total,
        }
    wait_idle(service.engine)


def test_long_prompt_is_prefilled_in_chunks_while_others_decode(lm):
    model, tok = lm
    loop = asyncio.new_event_loop()
    engine = BatchEngine(model, tok, max_batch=4, prefill_chunk=16)
    engine.submit([tok.encode("hi")], RequestParams(max_tokens=40, ignore_eos=True), loop)
    engine.step()
    long_ids = tok.encode("a long prompt with many words " * 8)
    assert len(long_ids) > 4 * 16
    long = engine.submit([long_ids], RequestParams(max_tokens=6), loop)
    for k in range(1, 4):
        generated = engine.decoder.live[0].generated
        engine.step()
        assert engine._prefilling[0].fed == 16 * k  # one chunk per iteration...
        assert engine.decoder.live[0].generated == generated + 1  # ...while the other row decodes
    while not engine.idle:
        engine.step()
    loop.run_until_complete(asyncio.sleep(0))
    events = [long.queue.get_nowait() for _ in range(long.queue.qsize())]
    text = "".join(e.text for e in events if isinstance(e, Delta))
    config = GenerationConfig(max_new_tokens=6, sampling=GREEDY, prefill_chunk=16)
    assert text == complete(model, tok, [long_ids], config)[0].text
    assert isinstance(events[-1], Done) and not engine.decoder.live and engine.stats.state_bytes == 0
    loop.close()


def test_memory_stays_bounded_over_200_requests_in_waves(live, monkeypatch):
    url, service = live
    engine = service.engine
    submitted = weakref.WeakSet()

    def submit(*args, **kwargs):
        job = BatchEngine.submit(engine, *args, **kwargs)
        submitted.add(job)
        return job

    monkeypatch.setattr(engine, "submit", submit)
    jobs = [
        json.dumps(
            {
                "prompt": f"wave request {i}",
                "max_tokens": 5,
                "temperature": 0.7,
                "seed": i,
                "stream": bool(i % 2),
            }
        )
        for i in range(40)
    ]

    async def wave(http):
        rs = await asyncio.gather(
            *(http.post(COMPLETIONS, content=j, headers={"content-type": "application/json"}) for j in jobs)
        )
        assert all(r.status_code == 200 for r in rs)

    async def run():
        sizes = []
        async with httpx.AsyncClient(
            base_url=url, timeout=60, limits=httpx.Limits(max_connections=64)
        ) as http:
            for _ in range(5):
                await wave(http)
                wait_idle(engine)
                assert not engine.decoder.live and engine.stats.state_bytes == 0 and engine.queue_depth == 0
                sizes.append(_rss_bytes())
        return sizes

    sizes = asyncio.run(run())
    assert sizes[-1] - sizes[0] < 64 * 2**20, sizes
    gc.collect()
    assert len(submitted) == 0  # no request is kept alive


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- disconnects
def test_disconnect_frees_rows_at_once(live):
    url, service = live
    engine = service.engine
    wait_idle(engine)
    before = engine.stats.completion_tokens

    async def run():
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            body = {"prompt": "never ending", "max_tokens": 250, "ignore_eos": True, "stream": True}
            async with http.stream("POST", COMPLETIONS, json=body) as r:
                lines = r.aiter_lines()  # held: dropping it would close the stream
                for _ in range(3):
                    await lines.__anext__()
                metrics = (await http.get("/metrics")).text
            return metrics

    metrics = asyncio.run(run())
    assert "rgemma_active_sequences 1\n" in metrics
    state_bytes = _metric(metrics, "rgemma_state_bytes")
    assert state_bytes > 0
    wait_idle(engine, timeout=5)
    assert engine.stats.completion_tokens - before < 250  # it stopped, not ran to the end
    assert not engine.decoder.live


def _metric(text: str, name: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


# --------------------------------------------------------------------------- errors and limits
BAD_REQUESTS = [
    (COMPLETIONS, b"{not json", None),
    (COMPLETIONS, b'"just a string"', None),
    (COMPLETIONS, {"prompt": 5}, "prompt"),
    (COMPLETIONS, {"prompt": "x", "max_tokens": "5"}, "max_tokens"),
    (COMPLETIONS, {"prompt": "x", "max_tokens": -1}, "max_tokens"),
    (COMPLETIONS, {"prompt": "x", "max_tokens": 10**12}, "max_tokens"),
    (COMPLETIONS, {"prompt": "x", "temperature": -0.5}, "temperature"),
    (COMPLETIONS, {"prompt": "x", "model": "gpt-4"}, "model"),
    (COMPLETIONS, {"prompt": "word " * 200}, "prompt"),  # over max_prompt_tokens
    (COMPLETIONS, {"prompt": [[1, 2], [10**9]]}, "prompt"),
    (COMPLETIONS, {"prompt": []}, "prompt"),
    (COMPLETIONS, {"prompt": "x", "n": 9, "max_tokens": 2}, "n"),
    (COMPLETIONS, {"prompt": "x", "frequency_penalty": 0.5}, "frequency_penalty"),
    (COMPLETIONS, {"prompt": "x", "logprobs": 21}, "logprobs"),  # OpenAI's limit of 20
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, "top_logprobs"),
    (COMPLETIONS, {"prompt": "x", "stream": "yes"}, "stream"),
    (CHAT, {"messages": []}, "messages"),
    (CHAT, {"messages": [{"role": "user"}]}, "messages.0.content"),
    (CHAT, {"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    (CHAT, {"messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
    (CHAT, {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, "tools"),
    (
        CHAT,
        {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0},
        "max_completion_tokens",
    ),
    # lone surrogates: JSON can carry them, no tokenizer takes them
    (COMPLETIONS, {"prompt": "hi \ud800"}, "prompt"),
    (COMPLETIONS, {"prompt": ["ok", "x\udfff"]}, "prompt.1"),
    (CHAT, {"messages": [{"role": "user", "content": "\ud800"}]}, "messages.0.content"),
    (
        CHAT,
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "a\ud800"}]}]},
        "messages.0.content",
    ),
    # limits, whatever the framing
    (COMPLETIONS, {"prompt": "x", "max_tokens": 2, "stop": "s" * 257}, "stop"),
    (COMPLETIONS, {"prompt": "x", "max_tokens": 2, "stop": ["ok", "s" * 257]}, "stop.1"),
    (COMPLETIONS, {"prompt": "x", "max_tokens": 2, "stop": ["s"] * 17}, "stop"),
    (COMPLETIONS, {"prompt": ["a"] * 9}, "n"),
    (COMPLETIONS, {"prompt": [[5]] * 9}, "n"),
    (COMPLETIONS, {"prompt": [[5] * 65]}, "prompt"),
    (CHAT, {"messages": [{"role": "user", "content": ""}] * 65}, "messages"),
    (CHAT, {"messages": [{"role": "user", "content": "word " * 1000}]}, "messages"),
]


@pytest.mark.parametrize("path, body, param", BAD_REQUESTS)
def test_bad_requests_get_400_with_openai_error_body(client, path, body, param):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post(path, content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == param and error["message"]


@pytest.mark.parametrize(
    "path, body",
    [
        (COMPLETIONS, {"prompt": "word " * 10_000}),
        (COMPLETIONS, {"prompt": ["a"] * 9}),
        (COMPLETIONS, {"prompt": ["a"] * 4, "n": 3}),
        (CHAT, {"messages": [{"role": "user", "content": "word " * 10_000}]}),
        (CHAT, {"messages": [{"role": "user", "content": "a"}] * 65}),
    ],
)
def test_limits_are_checked_before_tokenizing(client, monkeypatch, path, body):
    """A request past a limit is refused without tokenizing anything: bounded work and memory."""
    tok = client.app.state.service.tokenizer

    def refuse(*args, **kwargs):
        raise AssertionError("tokenized a request past a limit")

    monkeypatch.setattr(tok, "encode", refuse)
    monkeypatch.setattr(tok, "encode_chat", refuse)
    r = client.post(path, json=body)
    assert r.status_code == 400 and r.json()["error"]["code"] in ("context_length_exceeded", "invalid_value")


def test_valid_edge_requests(client):
    r = client.post(
        COMPLETIONS,
        json={
            "prompt": [[5, 6], [7]],
            "max_tokens": 3,
            "n": 2,
            "temperature": 0,
            "stop": "zz",
            "user": "u",
            "unknown_field": 1,
        },
    )
    assert r.status_code == 200 and [c["index"] for c in r.json()["choices"]] == [0, 1, 2, 3]
    assert r.json()["usage"]["prompt_tokens"] == 3
    content = [{"type": "text", "text": "Hi"}]
    r = client.post(
        CHAT,
        json={
            "messages": [{"role": "developer", "content": "Be kind."}, {"role": "user", "content": content}],
            "max_tokens": 2,
        },
    )
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"
    form = {"content-type": "application/x-www-form-urlencoded"}  # what `curl -d` sends
    assert (
        client.post(COMPLETIONS, content=b'{"prompt": "a", "max_tokens": 1}', headers=form).status_code == 200
    )


def test_an_engine_failure_ends_requests_with_an_error_not_a_hang(client, monkeypatch):
    engine = client.app.state.service.engine

    def broken():
        raise RuntimeError("simulated device failure")

    monkeypatch.setattr(engine, "_decode", broken)
    r = client.post(COMPLETIONS, json={"prompt": "x", "max_tokens": 3})
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    r = client.post(COMPLETIONS, json={"prompt": "x", "max_tokens": 3, "stream": True})
    lines = [line for line in r.text.splitlines() if line.startswith("data: ")]
    assert json.loads(lines[-2][6:])["error"]["code"] == "internal_error" and lines[-1] == "data: [DONE]"
    monkeypatch.undo()
    assert client.get("/health").status_code == 200 and not engine.decoder.live
    assert client.post(COMPLETIONS, json={"prompt": "x", "max_tokens": 3}).status_code == 200


def _greedy_streams(tok, count):
    bodies = [
        {"prompt": f"steady stream {i}", "max_tokens": 12 + i, "temperature": 0, "stream": True}
        for i in range(count)
    ]
    return bodies, [tok.encode(b["prompt"]) for b in bodies]


def _check_streams(model, tok, bodies, ids, results):
    for body, prompt, chunks in zip(bodies, ids, results):
        assert chunks[-1] == "[DONE]"
        texts, reasons, _ = joined(chunks, chat=False)
        assert (texts[0], reasons[0]) == reference(model, tok, prompt, body["max_tokens"])[:2]


def test_extreme_sampling_values_are_answered_and_others_stream_on(live, lm):
    """The reported crash: temperature or repetition_penalty 1e-300 made non-finite
    probabilities, ended every request in flight and never answered the request itself."""
    model, tok = lm
    url, service = live
    bodies, ids = _greedy_streams(tok, 3)
    extreme = [
        {"prompt": "hi", "temperature": 1e-300, "max_tokens": 4},
        {"prompt": "hi", "repetition_penalty": 1e-300, "max_tokens": 4},
        {"prompt": "hi", "repetition_penalty": 100, "temperature": 1e-300, "max_tokens": 4, "stream": True},
        {"prompt": [[5, 5, 5]], "repetition_penalty": 1e-300, "top_p": 1e-300, "max_tokens": 4},
    ]

    async def run():
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            streams = [asyncio.create_task(stream_sse(http, COMPLETIONS, b)) for b in bodies]
            answers = await asyncio.gather(*(http.post(COMPLETIONS, json=b) for b in extreme))
            return answers, await asyncio.gather(*streams)

    answers, results = asyncio.run(run())
    assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
    _check_streams(model, tok, bodies, ids, results)
    wait_idle(service.engine)


def test_a_request_failing_in_the_engine_gets_its_own_error_and_others_stream_on(live, lm, monkeypatch):
    """A fault while sampling one request (streamed or not): a 500, or an SSE error event, for
    it alone; the streams beside it give the text they give alone."""
    from rgemma.text import core

    model, tok = lm
    url, service = live
    faulty = tok.encode("a faulty request")
    real = core._sample_group

    def sample_group(logits, rows, u):
        out = real(logits, rows, u)
        if any(isinstance(r.tag, tuple) and r.tag[0].prompts[0] == faulty for r in rows):  # not reference()
            raise RuntimeError("injected sampling fault")
        return out

    monkeypatch.setattr(core, "_sample_group", sample_group)
    bodies, ids = _greedy_streams(tok, 3)
    body = {"prompt": faulty, "max_tokens": 20, "temperature": 0}

    async def run():
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            streams = [asyncio.create_task(stream_sse(http, COMPLETIONS, b)) for b in bodies]
            plain = await http.post(COMPLETIONS, json=body)
            streamed = await stream_sse(http, COMPLETIONS, dict(body, stream=True))
            return plain, streamed, await asyncio.gather(*streams)

    plain, streamed, results = asyncio.run(run())
    assert plain.status_code == 500 and plain.json()["error"]["code"] == "internal_error"
    assert "injected sampling fault" in plain.json()["error"]["message"]
    assert streamed[-1] == "[DONE]" and streamed[-2]["error"]["code"] == "internal_error"
    _check_streams(model, tok, bodies, ids, results)
    wait_idle(service.engine)
    assert service.engine.alive


def test_a_dead_engine_loop_turns_health_to_503(client, monkeypatch):
    engine = client.app.state.service.engine

    def broken():
        raise RuntimeError("a bug outside any request")

    monkeypatch.setattr(engine, "step", broken)
    r = client.post(COMPLETIONS, json={"prompt": "x", "max_tokens": 3})
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    engine._thread.join(5)
    r = client.get("/health")
    assert r.status_code == 503 and r.json()["status"] == "error"
    r = client.post(COMPLETIONS, json={"prompt": "x", "max_tokens": 3})
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_stopped"


def test_api_key_is_required_when_set(lm):
    model, tok = lm
    with TestClient(create_app(model, tok, api_key="s3cret")) as c:
        assert c.get("/health").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = c.get("/v1/models", headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = c.post(COMPLETIONS, content=b"{bad", headers={"content-type": "application/json"})
        assert r.status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_a_non_ascii_api_key_works_over_http(lm):
    """The header's bytes are compared with the key's UTF-8 bytes (once decoded as latin-1
    and re-encoded as UTF-8, a non-ASCII key could never match)."""
    model, tok = lm
    key = "clé-ключ-🔑"
    app = create_app(model, tok, api_key=key)
    with live_server(app) as url:
        ok = httpx.get(url + "/v1/models", headers={"Authorization": b"Bearer " + key.encode()})
        assert ok.status_code == 200, ok.text
        for wrong in ("Bearer " + key[:-1]).encode(), b"Bearer " + "clé".encode("latin-1"), key.encode():
            r = httpx.get(url + "/v1/models", headers={"Authorization": wrong})
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        body = {"prompt": "x", "max_tokens": 2}
        r = httpx.post(url + COMPLETIONS, json=body, headers={"Authorization": b"Bearer " + key.encode()})
        assert r.status_code == 200


def _send_chunked(url: str, path: str, chunk: bytes, most: int) -> tuple[int, bytes, int]:
    """POST `{"prompt": "` and then chunks of `chunk`, chunked, up to `most` bytes, over a raw
    socket, stopping as soon as the server answers: (status, response body, bytes sent)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    sock.sendall(head.encode() + b"Transfer-Encoding: chunked\r\n\r\n" + _frame(b'{"prompt": "'))
    sent, frame = 0, _frame(chunk)
    try:
        while sent < most and not select.select([sock], [], [], 0)[0]:
            sock.sendall(frame)
            sent += len(chunk)
        if sent >= most:
            sock.sendall(_frame(b'"}') + _frame(b""))
    except (BrokenPipeError, ConnectionResetError):
        pass
    response = b""
    while b"\r\n\r\n" not in response or len(response.partition(b"\r\n\r\n")[2]) < _length(response):
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        response += data
    sock.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body, sent


def _frame(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _length(response: bytes) -> int:
    for line in response.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 1 << 30


def test_a_chunked_body_is_cut_off_at_the_limit(live):
    """Without a Content-Length the limit holds while reading: the answer is a 413 after about
    the limit, not after the whole 256 MiB, and memory stays flat."""
    url, service = live
    limit = service.limits.max_body_bytes
    before = _rss_bytes()
    status, body, sent = _send_chunked(url, COMPLETIONS, b"a" * 65536, 256 << 20)
    assert status == 413 and json.loads(body)["error"]["code"] == "body_too_large"
    assert sent < limit + (32 << 20), sent  # the limit plus what the socket buffers hold
    assert _rss_bytes() - before < 64 << 20
    status, body, _ = _send_chunked(url, COMPLETIONS, b"a " * 500, 10_000)  # under the limit
    assert status == 200 and json.loads(body)["choices"]


def test_full_queue_gets_429(lm):
    model, tok = lm
    app = create_app(model, tok, limits=Limits(max_batch=1, max_queue=1, max_tokens=10**6))
    long = {"prompt": "a", "max_tokens": 10**6, "ignore_eos": True, "stream": True}

    async def run(url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            async with http.stream("POST", COMPLETIONS, json=long) as running:
                lines = running.aiter_lines()  # held: dropping it would close the stream
                await lines.__anext__()
                async with http.stream("POST", COMPLETIONS, json=long) as queued:
                    assert queued.status_code == 200
                    return await http.post(COMPLETIONS, json={"prompt": "a", "max_tokens": 1})

    with live_server(app) as url:
        r = asyncio.run(run(url))
        assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full"
        wait_idle(app.state.service.engine, timeout=5)


def test_health_is_503_until_the_model_is_loaded(lm):
    release = threading.Event()

    def loader():
        release.wait(10)
        return lm

    with TestClient(create_app(loader=loader)) as c:
        assert c.get("/health").status_code == 503
        r = c.post(COMPLETIONS, json={"prompt": "x"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading"
        release.set()
        deadline = time.monotonic() + 10
        while c.get("/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert c.post(COMPLETIONS, json={"prompt": "x", "max_tokens": 2}).status_code == 200


def test_draining_server_refuses_new_requests(client):
    client.app.state.service.begin_shutdown()
    r = client.post(COMPLETIONS, json={"prompt": "x"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "shutdown"
    assert client.get("/health").status_code == 503


# --------------------------------------------------------------------------- metrics, schema
def test_metrics_count_requests_tokens_and_state(client):
    usage = client.post(COMPLETIONS, json={"prompt": "hello", "max_tokens": 4}).json()["usage"]
    client.post(COMPLETIONS, json={"prompt": "hello", "max_tokens": -4})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'rgemma_requests_total{endpoint="/v1/completions",status="200"} 1' in text
    assert 'rgemma_requests_total{endpoint="/v1/completions",status="400"} 1' in text
    assert _metric(text, "rgemma_prompt_tokens_total") == usage["prompt_tokens"]
    assert _metric(text, "rgemma_generation_tokens_total") == usage["completion_tokens"]
    assert _metric(text, "rgemma_generation_tokens_per_second") > 0
    for gauge in ("rgemma_queue_depth", "rgemma_active_sequences", "rgemma_state_bytes"):
        assert _metric(text, gauge) == 0
        assert f"# TYPE {gauge} gauge" in text


def test_openapi_schema_documents_the_endpoints(client):
    schema = client.get("/openapi.json").json()
    assert {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health"} <= set(schema["paths"])
    props = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert {"messages", "max_completion_tokens", "top_k", "min_p", "seed", "n", "stop"} <= set(props)


# --------------------------------------------------------------------------- CLI, serve, shutdown
def test_cli_arguments_and_api_key_from_env(monkeypatch):
    import argparse
    import dataclasses

    import rgemma.cli.serve as server

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    assert "examples:" in parser.epilog and "curl" in parser.epilog
    seen = {}
    monkeypatch.setattr(server, "serve", lambda **kw: seen.update(kw))
    monkeypatch.setenv("RGEMMA_API_KEY", "from-env")
    assert run_serve(parser.parse_args(["--max-batch", "4", "--prefill-chunk", "64"])) == 0
    assert seen["api_key"] == "from-env" and seen["host"] == "127.0.0.1" and seen["port"] == 8080
    assert seen["limits"] == Limits(max_batch=4, prefill_chunk=64) and seen["model"] is None
    defaults = parser.parse_args([])
    assert all(getattr(defaults, f.name) == f.default for f in dataclasses.fields(Limits))
    assert seen["compile"] is False
    run_serve(parser.parse_args(["--compile"]))
    assert seen["compile"] is True
    with pytest.raises(FileNotFoundError):
        serve(model="/no/such/model/dir")


def test_sigterm_drains_in_flight_streams_and_exits(lm_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (
        "import argparse, sys; from rgemma.cli.serve import add_serve_arguments, run_serve; "
        "p = argparse.ArgumentParser(); add_serve_arguments(p); sys.exit(run_serve(p.parse_args()))"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "--model",
            str(lm_dir),
            "--port",
            str(port),
            "--shutdown-grace",
            "2",
            "--max-tokens",
            "100000",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        results = asyncio.run(_streams_across_sigterm(url, proc))
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    short, endless = results
    assert short[-1] == "[DONE]" and joined(short, chat=False)[1] == ["length"]
    assert endless[-1] == "[DONE]" and endless[-2]["error"]["code"] == "shutdown"


def _wait_healthy(url, proc):
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.stdout.read().decode()
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not become healthy"
        time.sleep(0.1)


async def _streams_across_sigterm(url, proc):
    """A short request and an endless one in flight when SIGTERM arrives."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        endless = asyncio.create_task(
            stream_sse(
                http, COMPLETIONS, {"prompt": "x", "max_tokens": 100000, "ignore_eos": True, "stream": True}
            )
        )
        short = asyncio.create_task(
            stream_sse(
                http, COMPLETIONS, {"prompt": "y", "max_tokens": 40, "ignore_eos": True, "stream": True}
            )
        )
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        return await short, await endless


# --------------------------------------------------------------------------- bench
def test_bench_server_decode_reports_aggregate_tokens_per_second(lm):
    rates = bench_server_decode(loaded=lm, concurrency=(1, 4), max_tokens=8)
    assert set(rates) == {1, 4} and all(r > 0 for r in rates.values())
