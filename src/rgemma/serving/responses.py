"""A request's answer in OpenAI's JSON, from the scheduler's events: `Format` builds the
completion or chat objects, `EventStream` sends them as server-sent events (`"stream": true`),
and `collect` waits for the whole answer and sends it as one body."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback
import uuid
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from rgemma.serving.errors import APIError, error_body, error_response
from rgemma.serving.scheduler import BatchEngine, Delta, Done, PromptScored
from rgemma.serving.scheduler import Request as Job
from rgemma.serving.scores import RequestLogprobs


class Format:
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


async def _stream(job: Job, fmt: Format):
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


def _chunks(event: Delta | PromptScored | Done, fmt: Format) -> list[str]:
    if isinstance(event, (Delta, PromptScored)):
        return [_sse(chunk) for chunk in fmt.events(event)]
    if event.error:
        err = _done_error(event)
        return [_sse(error_body(err.message, err.type, None, err.code))]
    return [_sse(fmt.usage_chunk(event))] if fmt.include_usage else []


class EventStream(StreamingResponse):
    """An SSE response that frees the request's rows however it ends (a client that goes
    away included: starlette cancels the stream on http.disconnect)."""

    def __init__(self, job: Job, fmt: Format, engine: BatchEngine):
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


async def collect(request: Request, job: Job, fmt: Format, engine: BatchEngine) -> Response:
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
                    return error_response(_done_error(event))
                return JSONResponse(fmt.response(texts, reasons, event))
            fmt.events(event)  # keeps the logprobs
            if isinstance(event, PromptScored):
                continue
            texts[event.index] += event.text
            reasons[event.index] = event.finish_reason or reasons[event.index]
    finally:
        engine.cancel(job)
