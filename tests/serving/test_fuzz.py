"""Fuzzing the HTTP API: arbitrary bodies (near the schema, malformed JSON, wrong types, huge
numbers, NaN/Infinity, lone surrogates, nested junk, unknown fields) to both endpoints,
streamed and not, against a real server on 127.0.0.1 while greedy streams run beside them.
Nothing may answer 5xx or hang, and the greedy streams must give their text of a run alone.

RGEMMA_FUZZ_EXAMPLES sets the number of bodies (200 by default, about 10 s)."""

from __future__ import annotations

import asyncio
import json
import os
import threading

import pytest

hypothesis = pytest.importorskip("hypothesis")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from hypothesis import strategies as st  # noqa: E402
from test_server import CHAT, COMPLETIONS, joined, live_server, reference, stream_sse  # noqa: E402

from rgemma.serving.api import Limits, create_app  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLES = int(os.environ.get("RGEMMA_FUZZ_EXAMPLES", "200"))
LONE = st.sampled_from(["\ud800", "a \udfff b"])  # lone surrogates: JSON carries them, UTF-8 cannot
ODD = ["\ud800", "\udfff", "\x00", "é", "🔑", "\u202e", "\ufeff", "<end_of_turn>", "\\", '"']


def _text(size: int = 12):
    return st.text(max_size=size) | st.lists(st.sampled_from(ODD) | st.text(max_size=3), max_size=4).map(
        "".join
    )


def _junk():
    numbers = (
        st.integers(-(2**70), 2**70)
        | st.sampled_from([10**400, -(10**400), 2**63, 2**64, -(2**63) - 1])
        | st.floats()  # NaN and Infinity included: json.dumps writes them as literals
        | st.sampled_from([1e-300, 1e300, -0.0, 5e-324])
    )
    scalars = st.none() | st.booleans() | numbers | _text()
    return st.recursive(
        scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(_text(6), c, max_size=3), max_leaves=8
    )


def _bodies():
    """JSON values near the schema: each field a plausible value or any JSON at all."""
    anything = _junk()
    part = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]), "text": _text()})
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "developer", "tool", ""])},
        optional={"content": _text(20) | st.lists(part, max_size=2) | anything, "name": _text()},
    )
    unit = st.floats(-0.5, 1.5) | st.sampled_from([0.0, 1.0, 1e-300])
    fields = {
        "model": st.sampled_from(["rgemma", "tiny", "x", ""]),
        "prompt": _text(30)
        | st.lists(_text(), max_size=3)
        | st.lists(st.integers(-1, 300), max_size=4)
        | st.lists(st.lists(st.integers(-1, 300), max_size=3), max_size=3),
        "messages": st.lists(message, max_size=3),
        "max_tokens": st.integers(-2, 12),
        "max_completion_tokens": st.integers(-2, 12),
        "temperature": st.floats(-1, 3) | st.sampled_from([1e-300, 0.0, 2.0]),
        "top_p": unit,
        "top_k": st.integers(-2, 200) | st.just(2**31),
        "min_p": unit,
        "repetition_penalty": st.floats(-1, 3) | st.sampled_from([1e-300, 100.0]),
        "frequency_penalty": st.floats(-3, 3),
        "stop": _text(3) | st.lists(_text(3), max_size=3),
        "seed": st.integers(-(2**64), 2**65),
        "n": st.integers(-1, 10),
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}) | anything,
        "ignore_eos": st.booleans(),
        "logprobs": anything,
        "echo": st.booleans(),
        "response_format": anything,
    }
    known = st.fixed_dictionaries({}, optional={k: v | anything for k, v in fields.items()})
    unknown = st.dictionaries(_text(8), anything, max_size=2)
    return st.builds(lambda a, b: {**b, **a}, known, unknown) | anything


def _valid(chat: bool):
    """Bodies every field of which is acceptable (lone surrogates aside), so that the fuzz
    reaches tokenizing, sampling and streaming, not just validation."""
    ids = st.lists(st.integers(0, 90), min_size=1, max_size=4)
    fields = {
        "max_tokens": st.integers(1, 8),
        "temperature": st.floats(0, 2) | st.sampled_from([1e-300, 0.0]),
        "top_p": st.floats(0, 1, exclude_min=True) | st.just(1e-300),
        "top_k": st.integers(0, 200) | st.just(2**31),
        "min_p": st.floats(0, 1),
        "repetition_penalty": st.floats(1e-300, 100) | st.sampled_from([1e-300, 100.0]),
        "stop": _text(3) | st.lists(_text(3), max_size=3),
        "seed": st.integers(-(2**63), 2**64 - 1),
        "n": st.integers(1, 2),
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "ignore_eos": st.booleans(),
    }
    if chat:
        content = LONE | _text(20)
        message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": content})
        required = {"messages": st.lists(message, min_size=1, max_size=3)}
    else:
        required = {
            "prompt": LONE
            | _text(30)
            | st.lists(_text(8), min_size=1, max_size=2)
            | ids
            | st.lists(ids, min_size=1, max_size=2)
        }
    return st.fixed_dictionaries(required, optional=fields)


def _near_valid(chat: bool):
    """A valid body, perhaps with one field replaced by junk."""
    spoil = st.tuples(
        st.sampled_from(["prompt", "messages", "max_tokens", "temperature", "stop", "n", "seed"]), _junk()
    )
    return st.builds(lambda b, s: b if s is None else {**b, s[0]: s[1]}, _valid(chat), st.none() | spoil)


def _wire(body, how: str) -> bytes:
    """The body as bytes: JSON (ASCII, or UTF-8 with surrogates passed through as invalid
    bytes), or a truncated copy."""
    if how == "ascii":
        return json.dumps(body).encode()
    text = json.dumps(body, ensure_ascii=False)
    if how == "truncated":
        return text[: len(text) // 2].encode("utf-8", "surrogatepass")
    return text.encode("utf-8", "surrogatepass")


class GreedyTraffic:
    """Greedy streams run over and over on their own thread and event loop until `stop`."""

    def __init__(self, url: str, bodies: list[dict]):
        self.url, self.bodies, self.results = url, bodies, [[] for _ in bodies]
        self.done = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as http:
            await asyncio.gather(*(self._repeat(http, i) for i in range(len(self.bodies))))

    async def _repeat(self, http, i: int) -> None:
        while not self.done.is_set():
            self.results[i].append(await stream_sse(http, COMPLETIONS, self.bodies[i]))

    def stop(self) -> None:
        self.done.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "a greedy stream hung"


def test_fuzzed_bodies_never_get_a_5xx_nor_disturb_other_streams(lm):
    model, tok = lm
    limits = Limits(max_batch=16, max_queue=64, max_tokens=8, max_prompt_tokens=64)
    app = create_app(model, tok, model_name="tiny", limits=limits)
    greedy = [{"prompt": f"steady {i}", "max_tokens": 8, "temperature": 0, "stream": True} for i in range(3)]
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        traffic = GreedyTraffic(url, greedy)
        traffic.thread.start()

        @hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        @hypothesis.given(
            request=st.sampled_from([COMPLETIONS, CHAT]).flatmap(
                lambda path: st.tuples(st.just(path), _near_valid(path == CHAT) | _bodies())
            ),
            how=st.sampled_from(["ascii", "ascii", "utf-8", "truncated"]),
        )
        def check(request, how):
            path, body = request
            r = http.post(path, content=_wire(body, how), headers={"content-type": "application/json"})
            assert r.status_code < 500, (body, r.text)
            if r.status_code >= 400:
                assert set(r.json()["error"]) == {"message", "type", "param", "code"}, r.text
            elif r.headers["content-type"].startswith("text/event-stream"):
                assert r.text.endswith("data: [DONE]\n\n") and '"error"' not in r.text, r.text

        try:
            check()
        finally:
            traffic.stop()
        engine = app.state.service.engine
        assert engine.alive and (http.get("/health").status_code == 200)
    for body, runs in zip(greedy, traffic.results):
        expected = reference(model, tok, tok.encode(body["prompt"]), body["max_tokens"])[:2]
        assert runs, "no greedy stream completed"
        for chunks in runs:
            assert chunks[-1] == "[DONE]"
            texts, reasons, _ = joined(chunks, chat=False)
            assert (texts[0], reasons[0]) == expected
