"""`rgemma serve`: an OpenAI-compatible HTTP server with continuous batching.

Endpoints: `GET /health` (503 until the model is loaded), `GET /v1/models` and
`/v1/models/{id}`, `POST /v1/completions` and `POST /v1/chat/completions` (server-sent events
with `"stream": true`), vLLM's `POST /tokenize`, `POST /detokenize` and `GET /tokenizer_info`
(serving/tokenizer_routes.py), `GET /metrics` (Prometheus text) and FastAPI's `/openapi.json`
and `/docs`.
This module validates requests, turns the engine's events into OpenAI's JSON, and runs
uvicorn; the batching loop is serve_engine.py.

Request fields: `model`, `max_tokens` (chat also `max_completion_tokens`), `temperature`,
`top_p`, `stop`, `seed`, `n`, `stream`, `stream_options.include_usage`, `user`; extensions
`top_k`, `min_p`, `repetition_penalty` (CTRL's; 1 is off) and `ignore_eos`. Scores (see
serving/scores.py): completions take `logprobs` (0-20) and `echo` (the prompt, scored too;
`max_tokens: 0` scores the prompt alone), chat takes `logprobs` and `top_logprobs` (0-20).
A string prompt gets the tokenizer's usual BOS; token ids are used as given. Refused with 400
rather than ignored: non-zero `frequency_penalty`/`presence_penalty`, `best_of` > 1, `suffix`,
`logit_bias`, tools, and a `response_format` other than text. Other unknown fields are
ignored, as OpenAI's clients send some.

Every error is OpenAI's body `{"error": {"message", "type", "param", "code"}}`: 400 for a bad
request (bad JSON, wrong types, limits, unknown model), 401 for a bad API key, 429 when the
queue is full, 503 while loading or shutting down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

try:
    import uvicorn
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as err:  # the server is an extra
    raise ImportError(f"rgemma serve needs FastAPI and uvicorn: pip install 'rgemma[serve]' ({err})") from err

from rgemma.serving.limits import Limits
from rgemma.serving.scheduler import (
    BatchEngine,
    Delta,
    Done,
    PromptScored,
    QueueFull,
    RequestParams,
    ShuttingDown,
)
from rgemma.serving.scheduler import (
    Request as Job,
)
from rgemma.serving.scores import RequestLogprobs
from rgemma.serving.state_cache import metric_values as state_cache_metrics
from rgemma.serving.tokenizer_routes import TOKENIZER_ROUTES, tokenizer_routes
from rgemma.text.logprobs import MAX_TOP_LOGPROBS
from rgemma.text.sampling import SamplingParams

COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
CHARS_PER_TOKEN_BOUND = 32  # longer texts are refused before tokenizing them
MAX_STOP_STRINGS = 16  # OpenAI allows 4
MAX_STOP_CHARS = 256  # per stop string: held-back text is checked against each on every token


# --------------------------------------------------------------------------- request schema
class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    include_usage: bool = False


class _Sampling(BaseModel):
    """Fields shared by both endpoints."""

    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)

    model: str | None = Field(None, description="the served model's id (see /v1/models); optional")
    max_tokens: int | None = Field(None, ge=1, description="new tokens at most (server limit applies)")
    temperature: float | None = Field(None, ge=0, le=2, description="0 is greedy; default 1")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling; default 1")
    top_k: int | None = Field(
        None, ge=0, le=2**31, description="extension: keep the k likeliest tokens; 0 is off"
    )
    min_p: float | None = Field(
        None, ge=0, le=1, description="extension: drop tokens below min_p x the top probability"
    )
    repetition_penalty: float | None = Field(
        None, gt=0, le=100, description="extension: CTRL's penalty; 1 is off"
    )
    frequency_penalty: float | None = Field(None, ge=-2, le=2, description="unsupported: only 0 is accepted")
    presence_penalty: float | None = Field(None, ge=-2, le=2, description="unsupported: only 0 is accepted")
    stop: str | list[str] | None = Field(
        None,
        description=f"text that ends a choice; never included in the output "
        f"(at most {MAX_STOP_STRINGS} strings of {MAX_STOP_CHARS} characters)",
    )
    seed: int | None = Field(None, ge=-(2**63), lt=2**64, description="choice j samples with seed + j")
    n: int = Field(1, ge=1, le=1024, description="choices per prompt; each is its own batch row")
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, float] | None = Field(None, description="unsupported: must be empty")
    user: str | None = None
    ignore_eos: bool = Field(False, description="extension: keep going past end-of-sequence tokens")


TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class CompletionRequest(_Sampling):
    prompt: str | list[str] | TokenIds | list[TokenIds] = Field(
        description="a string (BOS added as the tokenizer does), a list of strings, or token ids "
        "(a list, or a list of lists; used as given)"
    )
    max_tokens: int | None = Field(
        None, ge=0, description="new tokens at most; 0 with echo scores the prompt"
    )
    echo: bool = Field(
        False, description="repeat the prompt before the completion (and score it with logprobs)"
    )
    logprobs: int | None = Field(
        None,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        description="each token's logprob and the N likeliest (legacy format)",
    )
    best_of: int | None = Field(None, description="unsupported: must be null or 1")
    suffix: str | None = Field(None, description="unsupported: must be null")


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="preferred over max_tokens")
    logprobs: bool | None = Field(None, description="each generated token's logprob")
    top_logprobs: int | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS, description="with logprobs: the N likeliest tokens at each step"
    )
    tools: list[Any] | None = Field(None, description="unsupported: must be empty")
    tool_choice: str | dict | None = Field(None, description="unsupported: must be null or none")
    response_format: dict | None = Field(None, description='only {"type": "text"}')


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES = {s: {"model": ErrorResponse} for s in (400, 401, 429, 503)}


# --------------------------------------------------------------------------- errors
class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code


UNAUTHORIZED = APIError(401, "invalid or missing API key (Authorization: Bearer KEY)", code="invalid_api_key")


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _error_response(err: APIError) -> JSONResponse:
    return JSONResponse(error_body(err.message, err.type, err.param, err.code), status_code=err.status)


def _bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none", "function-after", "function-plain"}


def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI answers 422; OpenAI answers 400 with its error body."""
    first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
    # Drop "body" and the union-member tags pydantic adds ("str", "list[int]", ...).
    loc = [
        str(x) for x in first.get("loc", ()) if x != "body" and str(x) not in _TYPE_TAGS and "[" not in str(x)
    ]
    if first.get("type") == "json_invalid":
        return _error_response(_bad(f"invalid JSON body: {first.get('msg')}", code="invalid_json"))
    param = ".".join(loc) or None
    message = f"{param}: {first['msg']}" if param else f"request body: {first['msg']}"
    return _error_response(_bad(message, param, "invalid_value"))


def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return JSONResponse(
        error_body(str(exc.detail), kind, None, code),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        error_body(f"internal error: {type(exc).__name__}", "server_error", None, "internal_error"),
        status_code=500,
    )


# --------------------------------------------------------------------------- the service
class Service:
    """What the handlers share: the engine (None while loading), tokenizer, limits, metrics."""

    def __init__(
        self, model_name: str, limits: Limits, api_key: str | None, loader: Callable[[], tuple[Any, Any]]
    ):
        self.model_name, self.limits, self.api_key, self.loader = model_name, limits, api_key, loader
        self.engine: BatchEngine | None = None
        self.tokenizer = None
        self.load_error: BaseException | None = None
        self.on_load_error: Callable[[], None] = lambda: None
        self.draining = False
        self.created = int(time.time())
        self.metrics = Metrics()

    def load(self) -> None:
        try:
            model, tokenizer = self.loader()
            engine = BatchEngine(
                model,
                tokenizer,
                self.limits.max_batch,
                self.limits.max_queue,
                self.limits.prefill_chunk,
                state_cache_mb=self.limits.state_cache_mb,
            )
            engine.start()
            self.tokenizer, self.engine = tokenizer, engine
        except Exception as err:
            print(f"rgemma serve: error: could not load the model: {err}", file=sys.stderr)
            self.load_error = err
            self.on_load_error()

    def begin_shutdown(self) -> None:
        """SIGTERM: refuse new requests, give those in flight `shutdown_grace` seconds."""
        self.draining = True
        if self.engine is not None:
            self.engine.drain(self.limits.shutdown_grace)

    def authorized(self, authorization: bytes) -> bool:
        """The raw `Authorization` header carries the key: its bytes are compared, in constant
        time, with the key's UTF-8 bytes, so a non-ASCII key works (no latin-1 round trip)."""
        if self.api_key is None:
            return True
        scheme, _, token = authorization.partition(b" ")
        given = token.strip() if scheme.lower() == b"bearer" else b""
        return hmac.compare_digest(given, self.api_key.encode("utf-8"))

    def ready(self) -> BatchEngine:
        if self.draining:
            raise APIError(503, "the server is shutting down", "server_error", code="shutdown")
        if self.engine is None:
            raise APIError(503, "the model is still loading", "server_error", code="model_loading")
        if not self.engine.alive:
            raise APIError(
                503, "the engine loop has stopped; see the server log", "server_error", code="engine_stopped"
            )
        return self.engine

    # ------------------------------------------------------------------ request -> engine
    def params(
        self, body: _Sampling, max_tokens: int | None, default_max: int, prompts: int
    ) -> RequestParams:
        _refuse_unsupported(body)
        if body.model not in (None, self.model_name):
            raise APIError(
                400,
                f"model {body.model!r} is not served here; use {self.model_name!r}",
                param="model",
                code="model_not_found",
            )
        max_tokens = default_max if max_tokens is None else max_tokens
        if max_tokens > self.limits.max_tokens:
            raise _bad(
                f"max_tokens is {max_tokens}; this server allows at most {self.limits.max_tokens}",
                "max_tokens",
                "invalid_value",
            )
        self._check_rows(prompts, body.n)
        sampling = SamplingParams(
            temperature=1.0 if body.temperature is None else body.temperature,
            top_k=body.top_k or 0,
            top_p=1.0 if body.top_p is None else body.top_p,
            min_p=body.min_p or 0.0,
            repetition_penalty=1.0 if body.repetition_penalty is None else body.repetition_penalty,
        )
        stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
        _check_stop(stop, isinstance(body.stop, str))
        return RequestParams(
            max_tokens, sampling, stop, body.seed, body.n, body.ignore_eos, *requested_logprobs(body)
        )

    def completion_prompts(self, body: CompletionRequest) -> list[list[int]]:
        """Token ids per prompt. Every limit that can be checked before tokenizing is: the
        number of prompts, then each one's characters."""
        prompt = body.prompt
        if isinstance(prompt, str):
            return [self._encode(prompt, "prompt")]
        if not prompt:
            raise _bad("prompt must not be empty", "prompt", "invalid_value")
        self._check_rows(1 if isinstance(prompt[0], int) else len(prompt), body.n)
        if isinstance(prompt[0], str):
            return [self._encode(p, f"prompt.{i}") for i, p in enumerate(prompt)]
        rows = [prompt] if isinstance(prompt[0], int) else prompt
        vocab = self.tokenizer.vocab_size
        for ids in rows:
            if max(ids) >= vocab:
                raise _bad(
                    f"token id {max(ids)} is outside the vocabulary of {vocab}", "prompt", "invalid_value"
                )
            self._check_length(len(ids), "prompt")
        return [list(ids) for ids in rows]

    def chat_prompt(self, body: ChatCompletionRequest) -> list[list[int]]:
        if len(body.messages) > self.limits.max_prompt_tokens:  # each costs tokens: refuse unrendered
            raise _bad(
                f"{len(body.messages)} messages exceed the prompt limit of "
                f"{self.limits.max_prompt_tokens} tokens",
                "messages",
                "context_length_exceeded",
            )
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in body.messages
        ]
        self._check_chars(sum(len(m["content"]) for m in messages), "messages")
        for i, m in enumerate(messages):
            _check_unicode(m["content"], f"messages.{i}.content")
        try:
            ids = self.tokenizer.encode_chat(messages, add_generation_prompt=True)
        except ValueError as err:
            raise _bad(str(err), "messages", "invalid_value") from None
        self._check_length(len(ids), "messages")
        return [ids]

    def _encode(self, text: str, param: str) -> list[int]:
        self._check_chars(len(text), param)
        _check_unicode(text, param)
        ids = self.tokenizer.encode(text)
        if not ids:
            raise _bad("the prompt is empty (no tokens)", param, "invalid_value")
        self._check_length(len(ids), param)
        return ids

    def _check_chars(self, chars: int, param: str) -> None:
        if chars > CHARS_PER_TOKEN_BOUND * self.limits.max_prompt_tokens:
            raise _bad(
                f"the prompt has {chars} characters, far over the limit of "
                f"{self.limits.max_prompt_tokens} tokens",
                param,
                "context_length_exceeded",
            )

    def _check_rows(self, prompts: int, n: int) -> None:
        if prompts * n > self.limits.max_batch:
            raise _bad(
                f"{prompts} prompt(s) x n={n} sequences exceed the batch of {self.limits.max_batch}",
                "n",
                "invalid_value",
            )

    def _check_length(self, tokens: int, param: str) -> None:
        if tokens > self.limits.max_prompt_tokens:
            raise _bad(
                f"the prompt has {tokens} tokens; this server allows at most {self.limits.max_prompt_tokens}",
                param,
                "context_length_exceeded",
            )

    def model_card(self) -> dict:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "rgemma"}

    def echo_texts(self, body: CompletionRequest, prompts: list[list[int]]) -> list[str]:
        """Each prompt's text: as given, or the decoded ids of a token-id prompt."""
        if isinstance(body.prompt, str):
            return [body.prompt]
        if isinstance(body.prompt[0], str):
            return list(body.prompt)
        return [self.tokenizer.decode(ids) for ids in prompts]

    def submit(self, prompts: list[list[int]], params: RequestParams) -> Job:
        engine = self.ready()
        try:
            return engine.submit(prompts, params)
        except QueueFull as err:
            raise APIError(
                429, f"the server is busy ({err}); retry later", "rate_limit_error", code="queue_full"
            ) from None
        except ShuttingDown as err:
            raise APIError(503, str(err), "server_error", code="shutdown") from None


def requested_logprobs(body: _Sampling) -> tuple[int | None, int | None]:
    """(alternatives per generated token, per prompt token); None where not asked."""
    if isinstance(body, CompletionRequest):
        return body.logprobs, body.logprobs if body.echo else None
    if isinstance(body, ChatCompletionRequest) and body.logprobs:
        return body.top_logprobs or 0, None
    return None, None


def _check_stop(stop: tuple[str, ...], single: bool) -> None:
    if len(stop) > MAX_STOP_STRINGS:
        raise _bad(f"{len(stop)} stop strings; at most {MAX_STOP_STRINGS}", "stop", "invalid_value")
    for i, text in enumerate(stop):
        if len(text) > MAX_STOP_CHARS:
            param = "stop" if single else f"stop.{i}"
            raise _bad(
                f"a stop string of {len(text)} characters; at most {MAX_STOP_CHARS}", param, "invalid_value"
            )


def _check_unicode(text: str, param: str) -> None:
    """JSON may carry a lone surrogate ("\\ud800"), which is no text: no tokenizer takes it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise _bad(
            f"{param} is not valid Unicode: a lone surrogate at character {err.start}", param, "invalid_value"
        ) from None


def _refuse_unsupported(body: _Sampling) -> None:
    """Fields that would change the answer if honoured: refuse rather than ignore them."""
    checks = [
        ("frequency_penalty", body.frequency_penalty not in (None, 0)),
        ("presence_penalty", body.presence_penalty not in (None, 0)),
        ("logit_bias", bool(body.logit_bias)),
    ]
    if isinstance(body, CompletionRequest):
        checks += [
            ("best_of", body.best_of not in (None, 1)),
            ("suffix", bool(body.suffix)),
        ]
    if isinstance(body, ChatCompletionRequest):
        if body.top_logprobs is not None and not body.logprobs:
            raise _bad("top_logprobs needs logprobs: true", "top_logprobs", "invalid_value")
        checks += [
            ("tools", bool(body.tools)),
            ("tool_choice", body.tool_choice not in (None, "none")),
            ("response_format", body.response_format not in (None, {"type": "text"})),
        ]
    for name, used in checks:
        if used:
            raise _bad(f"{name} is not supported by this server (see GET /openapi.json)", name, "unsupported")


# --------------------------------------------------------------------------- responses
class _Format:
    """OpenAI's JSON for one request: plain completions, or chat when `chat`."""

    def __init__(
        self,
        model: str,
        chat: bool,
        choices: int,
        include_usage: bool = False,
        scores: RequestLogprobs | None = None,
        echo: list[str] | None = None,
    ):
        self.chat, self.choices, self.include_usage = chat, choices, include_usage
        self.scores, self.echo = scores, echo  # echo: each prompt's text, repeated first
        self.n = choices // len(echo) if echo else 1
        self.head = {
            "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
        }

    def _chunk(self, choices: list[dict], usage: dict | None = None) -> dict:
        out = dict(self.head, choices=choices)
        if self.chat:
            out["object"] = "chat.completion.chunk"
        if self.include_usage:
            out["usage"] = usage
        return out

    def opening(self) -> list[dict]:
        if not self.chat:  # an echo scored later is sent with its scores (`events`)
            if not self.echo or self.scores is not None:
                return []
            return [self.delta(i, self.echo[i // self.n], None) for i in range(self.choices)]
        return [
            self._chunk(
                [
                    {
                        "index": i,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
            for i in range(self.choices)
        ]

    def delta(
        self, index: int, text: str | None, finish_reason: str | None, logprobs: dict | None = None
    ) -> dict:
        choice: dict[str, Any] = {"index": index}
        if self.chat:
            choice["delta"] = {"content": text} if text is not None else {}
        else:
            choice["text"] = text or ""
        return self._chunk([dict(choice, logprobs=logprobs, finish_reason=finish_reason)])

    def events(self, event: Delta | PromptScored) -> list[dict]:
        """The chunks to stream for a scheduler event (and its logprobs kept for `response`)."""
        if isinstance(event, PromptScored):
            blocks = self.scores.prompt(event.index, event.ids, event.scores)
            return [self.delta(i, self.echo[event.index] if self.echo else "", None, b) for i, b in blocks]
        logprobs = None
        if event.scores is not None and self.scores is not None:
            logprobs = self.scores.token(event.index, event.scores)
        chunks = [self.delta(event.index, event.text, None, logprobs)] if event.text or logprobs else []
        if event.finish_reason:
            chunks.append(self.delta(event.index, None, event.finish_reason))
        return chunks

    def usage_chunk(self, done: Done) -> dict:
        return self._chunk([], _usage(done))

    def response(self, texts: list[str], reasons: list[str], done: Done) -> dict:
        choices = []
        for i, (text, reason) in enumerate(zip(texts, reasons)):
            text = self.echo[i // self.n] + text if self.echo else text
            body = {"message": {"role": "assistant", "content": text}} if self.chat else {"text": text}
            logprobs = self.scores.final(i) if self.scores is not None else None
            choices.append({"index": i, **body, "logprobs": logprobs, "finish_reason": reason})
        return dict(self.head, choices=choices, usage=_usage(done))


def _usage(done: Done) -> dict:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def _done_error(done: Done) -> APIError:
    if done.code == "shutdown":
        return APIError(503, done.error, "server_error", code="shutdown")
    return APIError(500, done.error, "server_error", code=done.code)


async def _stream(job: Job, fmt: _Format):
    """The request's SSE chunks. Once the 200 is sent an error can only be an event, so one
    raised here (a bug in formatting) ends this stream with an error event, like the engine's."""
    try:
        for chunk in fmt.opening():
            yield _sse(chunk)
        async for event in job.events():
            for chunk in _chunks(event, fmt):
                yield chunk
    except Exception as err:
        traceback.print_exc(file=sys.stderr)
        message = f"internal error: {type(err).__name__}"
        yield _sse(error_body(message, "server_error", None, "internal_error"))
    yield "data: [DONE]\n\n"


def _chunks(event: Delta | PromptScored | Done, fmt: _Format) -> list[str]:
    if isinstance(event, (Delta, PromptScored)):
        return [_sse(chunk) for chunk in fmt.events(event)]
    if event.error:
        err = _done_error(event)
        return [_sse(error_body(err.message, err.type, None, err.code))]
    return [_sse(fmt.usage_chunk(event))] if fmt.include_usage else []


class _EventStream(StreamingResponse):
    """An SSE response that frees the request's rows however it ends (a client that goes
    away included: starlette cancels the stream on http.disconnect)."""

    def __init__(self, job: Job, fmt: _Format, engine: BatchEngine):
        super().__init__(
            _stream(job, fmt),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.job, self.engine = job, engine

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.engine.cancel(self.job)


async def _collect(request: Request, job: Job, fmt: _Format, engine: BatchEngine) -> Response:
    """Wait for the whole answer, checking every second that the client is still there."""
    texts, reasons = [""] * job.rows, ["length"] * job.rows
    try:
        while True:
            try:
                event = await asyncio.wait_for(job.queue.get(), timeout=1.0)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    return Response(status_code=499)
                continue
            if isinstance(event, Done):
                if event.error:
                    return _error_response(_done_error(event))
                return JSONResponse(fmt.response(texts, reasons, event))
            fmt.events(event)  # keeps the logprobs
            if isinstance(event, PromptScored):
                continue
            texts[event.index] += event.text
            reasons[event.index] = event.finish_reason or reasons[event.index]
    finally:
        engine.cancel(job)


async def _respond(
    request: Request,
    service: Service,
    body: _Sampling,
    prompts: list[list[int]],
    max_tokens: int | None,
    default_max: int,
    chat: bool,
) -> Response:
    params = service.params(body, max_tokens, default_max, len(prompts))
    job = service.submit(prompts, params)
    include_usage = bool(body.stream and body.stream_options and body.stream_options.include_usage)
    echo = service.echo_texts(body, prompts) if getattr(body, "echo", False) else None
    scores = None
    if params.logprobs is not None:
        texts = echo or (None if chat else service.echo_texts(body, prompts))
        scores = RequestLogprobs(service.tokenizer, chat, prompts, params.n, texts)
    fmt = _Format(service.model_name, chat, job.rows, include_usage, scores, echo)
    if body.stream:
        return _EventStream(job, fmt, service.engine)
    return await _collect(request, job, fmt, service.engine)


# --------------------------------------------------------------------------- metrics
class Metrics:
    """Prometheus counters kept by the server; gauges are read from the engine at scrape."""

    def __init__(self):
        self.requests: dict[tuple[str, int], int] = {}
        self.lock = threading.Lock()

    def count(self, endpoint: str, status: int) -> None:
        with self.lock:
            self.requests[endpoint, status] = self.requests.get((endpoint, status), 0) + 1

    def render(self, engine: BatchEngine | None) -> str:
        lines = [
            "# HELP rgemma_requests_total HTTP requests by endpoint and status.",
            "# TYPE rgemma_requests_total counter",
        ]
        with self.lock:
            for (endpoint, status), n in sorted(self.requests.items()):
                lines.append(f'rgemma_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}')
        stats = engine.stats if engine is not None else None
        values = [
            ("model_loaded", "gauge", "1 once the model is loaded.", int(engine is not None)),
            (
                "prompt_tokens_total",
                "counter",
                "Prompt tokens prefilled.",
                stats.prompt_tokens if stats else 0,
            ),
            (
                "generation_tokens_total",
                "counter",
                "Tokens generated.",
                stats.completion_tokens if stats else 0,
            ),
            (
                "generation_tokens_per_second",
                "gauge",
                "Tokens generated per second over the last 10 s.",
                round(stats.tokens_per_second(), 3) if stats else 0,
            ),
            ("queue_depth", "gauge", "Requests waiting to start.", engine.queue_depth if engine else 0),
            (
                "active_sequences",
                "gauge",
                "Rows being prefilled or decoded.",
                engine.active_rows if engine else 0,
            ),
            (
                "state_bytes",
                "gauge",
                "Bytes of recurrent state held for active rows.",
                stats.state_bytes if stats else 0,
            ),
        ]
        values += state_cache_metrics(engine.cache if engine is not None else None)
        for name, kind, help_, value in values:
            lines += [
                f"# HELP rgemma_{name} {help_}",
                f"# TYPE rgemma_{name} {kind}",
                f"rgemma_{name} {value}",
            ]
        return "\n".join(lines) + "\n"


ROUTES = (
    "/health",
    "/metrics",
    "/v1/models",
    "/v1/completions",
    "/v1/chat/completions",
    "/openapi.json",
    *TOKENIZER_ROUTES,
)


class _Observe:
    """ASGI middleware: counts responses by route and status; refuses oversized bodies."""

    def __init__(self, app, service: Service):
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = scope["path"] if scope["path"] in ROUTES else "other"
        status = 500

        async def observed_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is None and scope["method"] == "POST":
                receive, refusal = await _bounded_body(receive, self.service.limits.max_body_bytes)
            if refusal is not None:
                return await _error_response(refusal)(scope, receive, observed_send)
            await self.app(_as_json(scope), receive, observed_send)
        finally:
            self.service.metrics.count(endpoint, status)

    def _refusal(self, scope) -> APIError | None:
        """A bad key or a body declared too large, refused before the body is read."""
        path = scope["path"]
        if (path.startswith("/v1/") or path == "/metrics") and not self.service.authorized(
            _header(scope, b"authorization")
        ):
            return UNAUTHORIZED
        length = _header(scope, b"content-length").decode("latin-1")
        if length.isdigit() and int(length) > self.service.limits.max_body_bytes:
            return TOO_LARGE
        return None


TOO_LARGE = APIError(413, "request body too large", code="body_too_large")


async def _bounded_body(receive, limit: int):
    """Read the body, whatever its framing (chunked, or a Content-Length that lies), and stop
    at `limit` bytes: (a receive that replays it, None), or (receive, TOO_LARGE) with no more
    than `limit` bytes and one chunk ever held. A disconnect is passed on as it came."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return _replay([], receive, message), None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return receive, TOO_LARGE
        chunks.append(chunk)
        if not message.get("more_body", False):
            return _replay(chunks, receive), None


def _replay(chunks: list[bytes], receive, last: dict | None = None):
    """A receive that gives the buffered body as one message, then defers to `receive`."""
    first = last or {"type": "http.request", "body": b"".join(chunks), "more_body": False}
    pending = [first]

    async def replay():
        return pending.pop() if pending else await receive()

    return replay


def _as_json(scope):
    """Read a POST body as JSON whatever its Content-Type (`curl -d` says form-encoded)."""
    if scope["method"] != "POST" or b"json" in _header(scope, b"content-type"):
        return scope
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    return dict(scope, headers=headers + [(b"content-type", b"application/json")])


def _header(scope, name: bytes) -> bytes:
    """A header's raw bytes (b"" when absent)."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return b""


# --------------------------------------------------------------------------- the app
def create_app(
    model=None,
    tokenizer=None,
    *,
    loader: Callable[[], tuple[Any, Any]] | None = None,
    model_name: str = "rgemma",
    api_key: str | None = None,
    limits: Limits | None = None,
) -> FastAPI:
    """The ASGI app. Give `model` and `tokenizer`, or a `loader` returning them, which runs on
    a thread at startup while /health answers 503. The engine starts with the app's lifespan."""
    if (model is None) == (loader is None):
        raise ValueError("create_app() needs model and tokenizer, or a loader")
    service = Service(model_name, limits or Limits(), api_key, loader or (lambda: (model, tokenizer)))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if loader is None:
            service.load()
        else:
            threading.Thread(target=service.load, name="rgemma-load", daemon=True).start()
        yield
        service.draining = True
        if service.engine is not None:
            await asyncio.to_thread(service.engine.stop)

    app = FastAPI(
        title="rgemma",
        version=_version(),
        lifespan=lifespan,
        description="OpenAI-compatible completions from a RecurrentGemma model.",
    )
    app.state.service = service
    app.add_exception_handler(APIError, lambda _, e: _error_response(e))
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    app.add_middleware(_Observe, service=service)
    _routes(app, service)
    return app


def _routes(app: FastAPI, service: Service) -> None:
    bearer = HTTPBearer(auto_error=False)

    def authorize(request: Request, _: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        """Documents the scheme in OpenAPI; _Observe has checked the key before the body is read."""
        if not service.authorized(_header(request.scope, b"authorization")):
            raise UNAUTHORIZED

    guarded = {"dependencies": [Depends(authorize)], "responses": ERROR_RESPONSES}

    @app.get("/health")
    def health() -> JSONResponse:
        """200 once the model is loaded; 503 while loading, after a failed load, or draining."""
        if service.load_error is not None:
            return JSONResponse({"status": "error", "error": str(service.load_error)}, status_code=503)
        if service.draining:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        if service.engine is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        if not service.engine.alive:
            return JSONResponse({"status": "error", "error": "the engine loop has stopped"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/v1/models", **guarded)
    def models() -> dict:
        return {"object": "list", "data": [service.model_card()]}

    @app.get("/v1/models/{model_id:path}", **guarded)
    def model(model_id: str) -> dict:
        if model_id != service.model_name:
            raise APIError(404, f"model {model_id!r} is not served here", code="model_not_found")
        return service.model_card()

    tokenizer_routes(app, service, guarded)

    @app.post("/v1/completions", **guarded)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        service.ready()
        prompts = service.completion_prompts(body)
        return await _respond(
            request, service, body, prompts, body.max_tokens, COMPLETION_DEFAULT_MAX_TOKENS, chat=False
        )

    @app.post("/v1/chat/completions", **guarded)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        service.ready()
        prompts = service.chat_prompt(body)
        max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        return await _respond(
            request, service, body, prompts, max_tokens, service.limits.max_tokens, chat=True
        )

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(authorize)])
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(
            service.metrics.render(service.engine), media_type="text/plain; version=0.0.4; charset=utf-8"
        )


def _version() -> str:
    from rgemma import __version__

    return __version__


# --------------------------------------------------------------------------- serve
class _Uvicorn(uvicorn.Server):
    """uvicorn that lets the engine drain on SIGTERM/SIGINT before connections close."""

    def __init__(self, config: uvicorn.Config, service: Service):
        super().__init__(config)
        self.service = service
        service.on_load_error = self._exit

    def _exit(self) -> None:
        self.should_exit = True

    def handle_exit(self, sig, frame) -> None:
        self.service.begin_shutdown()
        super().handle_exit(sig, frame)


def serve(
    model: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    api_key: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
    model_name: str | None = None,
    log_level: str = "info",
    quantize: str | None = None,
    compile: bool = False,
    limits: Limits | None = None,
    adapter: str | None = None,
    **limit_values,
) -> None:
    """Serve `model` (a directory, a cached repo id, or None for the bundled model) until
    SIGINT/SIGTERM. The port opens at once; /health says 200 when the weights are loaded.
    `limits` (or single Limits fields as keywords, e.g. max_batch=64) bound the service.
    `compile` applies the compiled decode step of `generate --compile`; the scheduler's bucketed
    batch sizes bound its recompiles (rgemma.serving.scheduler)."""
    from rgemma.io.checkpoint_files import resolve_model_dir
    from rgemma.pretrained.loading import load

    path = resolve_model_dir(model)  # a bad path fails here, before the port opens
    name = model_name or (model if model and not Path(model).expanduser().is_dir() else path.name)
    limits = dataclasses.replace(limits or Limits(), **limit_values)
    limits.validate()
    app = create_app(
        loader=lambda: load(str(path), dtype, device, quantize=quantize, compile=compile, adapter=adapter),
        model_name=name,
        api_key=api_key,
        limits=limits,
    )
    if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        print(f"rgemma serve: warning: listening on {host} without --api-key", file=sys.stderr)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=int(limits.shutdown_grace) + 5,
    )
    service: Service = app.state.service
    _Uvicorn(config, service).run()
    if service.load_error is not None:
        raise service.load_error
