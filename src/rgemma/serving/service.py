"""What the route handlers share: `Service` holds the engine (None while loading), tokenizer,
limits and metrics, and reads a request into the engine's inputs, refusing with an `APIError`
what the limits or the server do not allow: the prompts as token ids, then RequestParams."""

from __future__ import annotations

import hmac
import sys
import time
from collections.abc import Callable
from typing import Any

from rgemma.serving.errors import APIError, bad_request
from rgemma.serving.limits import Limits
from rgemma.serving.metrics import Metrics
from rgemma.serving.protocol import (
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    ChatCompletionRequest,
    CompletionRequest,
    SamplingRequest,
)
from rgemma.serving.scheduler import BatchEngine, QueueFull, RequestParams, ShuttingDown
from rgemma.serving.scheduler import Request as Job
from rgemma.text.sampling import SamplingParams

CHARS_PER_TOKEN_BOUND = 32  # longer texts are refused before tokenizing them


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
        self, body: SamplingRequest, max_tokens: int | None, default_max: int, prompts: int
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
            raise bad_request(
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
            raise bad_request("prompt must not be empty", "prompt", "invalid_value")
        self._check_rows(1 if isinstance(prompt[0], int) else len(prompt), body.n)
        if isinstance(prompt[0], str):
            return [self._encode(p, f"prompt.{i}") for i, p in enumerate(prompt)]
        rows = [prompt] if isinstance(prompt[0], int) else prompt
        vocab = self.tokenizer.vocab_size
        for ids in rows:
            if max(ids) >= vocab:
                raise bad_request(
                    f"token id {max(ids)} is outside the vocabulary of {vocab}", "prompt", "invalid_value"
                )
            self._check_length(len(ids), "prompt")
        return [list(ids) for ids in rows]

    def chat_prompt(self, body: ChatCompletionRequest) -> list[list[int]]:
        if len(body.messages) > self.limits.max_prompt_tokens:  # each costs tokens: refuse unrendered
            raise bad_request(
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
            raise bad_request(str(err), "messages", "invalid_value") from None
        self._check_length(len(ids), "messages")
        return [ids]

    def _encode(self, text: str, param: str) -> list[int]:
        self._check_chars(len(text), param)
        _check_unicode(text, param)
        ids = self.tokenizer.encode(text)
        if not ids:
            raise bad_request("the prompt is empty (no tokens)", param, "invalid_value")
        self._check_length(len(ids), param)
        return ids

    def _check_chars(self, chars: int, param: str) -> None:
        if chars > CHARS_PER_TOKEN_BOUND * self.limits.max_prompt_tokens:
            raise bad_request(
                f"the prompt has {chars} characters, far over the limit of "
                f"{self.limits.max_prompt_tokens} tokens",
                param,
                "context_length_exceeded",
            )

    def _check_rows(self, prompts: int, n: int) -> None:
        if prompts * n > self.limits.max_batch:
            raise bad_request(
                f"{prompts} prompt(s) x n={n} sequences exceed the batch of {self.limits.max_batch}",
                "n",
                "invalid_value",
            )

    def _check_length(self, tokens: int, param: str) -> None:
        if tokens > self.limits.max_prompt_tokens:
            raise bad_request(
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


def requested_logprobs(body: SamplingRequest) -> tuple[int | None, int | None]:
    """(alternatives per generated token, per prompt token); None where not asked."""
    if isinstance(body, CompletionRequest):
        return body.logprobs, body.logprobs if body.echo else None
    if isinstance(body, ChatCompletionRequest) and body.logprobs:
        return body.top_logprobs or 0, None
    return None, None


def _check_stop(stop: tuple[str, ...], single: bool) -> None:
    if len(stop) > MAX_STOP_STRINGS:
        raise bad_request(f"{len(stop)} stop strings; at most {MAX_STOP_STRINGS}", "stop", "invalid_value")
    for i, text in enumerate(stop):
        if len(text) > MAX_STOP_CHARS:
            param = "stop" if single else f"stop.{i}"
            raise bad_request(
                f"a stop string of {len(text)} characters; at most {MAX_STOP_CHARS}", param, "invalid_value"
            )


def _check_unicode(text: str, param: str) -> None:
    """JSON may carry a lone surrogate ("\\ud800"), which is no text: no tokenizer takes it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise bad_request(
            f"{param} is not valid Unicode: a lone surrogate at character {err.start}", param, "invalid_value"
        ) from None


def _refuse_unsupported(body: SamplingRequest) -> None:
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
            raise bad_request("top_logprobs needs logprobs: true", "top_logprobs", "invalid_value")
        checks += [
            ("tools", bool(body.tools)),
            ("tool_choice", body.tool_choice not in (None, "none")),
            ("response_format", body.response_format not in (None, {"type": "text"})),
        ]
    for name, used in checks:
        if used:
            raise bad_request(
                f"{name} is not supported by this server (see GET /openapi.json)", name, "unsupported"
            )
