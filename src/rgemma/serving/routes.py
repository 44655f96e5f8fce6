"""The routes: /health, /v1/models, /v1/completions, /v1/chat/completions and /metrics (and
the tokenizer's, serving/tokenizer_routes.py). A completion handler reads the request through
the `Service`, submits it to the engine, and answers through serving/responses.py."""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rgemma.serving.errors import UNAUTHORIZED, APIError
from rgemma.serving.middleware import header
from rgemma.serving.protocol import ERROR_RESPONSES, ChatCompletionRequest, CompletionRequest, SamplingRequest
from rgemma.serving.responses import EventStream, Format, collect
from rgemma.serving.scores import RequestLogprobs
from rgemma.serving.service import Service
from rgemma.serving.tokenizer_routes import tokenizer_routes

COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


def add_routes(app: FastAPI, service: Service) -> None:
    """Add every route; each but /health answers through `service`."""
    bearer = HTTPBearer(auto_error=False)

    def authorize(request: Request, _: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        """Documents the scheme in OpenAPI; the middleware has checked the key before the body is read."""
        if not service.authorized(header(request.scope, b"authorization")):
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


async def _respond(
    request: Request,
    service: Service,
    body: SamplingRequest,
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
    fmt = Format(service.model_name, chat, job.rows, include_usage, scores, echo)
    if body.stream:
        return EventStream(job, fmt, service.engine)
    return await collect(request, job, fmt, service.engine)
