"""`rgemma serve`: an OpenAI-compatible HTTP server with continuous batching.

Endpoints: `GET /health` (503 until the model is loaded), `GET /v1/models` and
`/v1/models/{id}`, `POST /v1/completions` and `POST /v1/chat/completions` (server-sent events
with `"stream": true`), vLLM's `POST /tokenize`, `POST /detokenize` and `GET /tokenizer_info`
(serving/tokenizer_routes.py), `GET /metrics` (Prometheus text) and FastAPI's `/openapi.json`
and `/docs`.
This module builds the app and runs uvicorn. The parts: protocol.py (the request schemas),
service.py (a request read into the engine's inputs, within the limits), routes.py,
responses.py (OpenAI's JSON, streamed or whole), errors.py, middleware.py (API key, body size,
request counts) and metrics.py; the batching loop is scheduler.py.

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
import sys
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

try:
    import uvicorn
    from fastapi import FastAPI
except ImportError as err:  # the server is an extra
    raise ImportError(f"rgemma serve needs FastAPI and uvicorn: pip install 'rgemma[serve]' ({err})") from err

from rgemma.serving.errors import add_error_handlers
from rgemma.serving.limits import Limits
from rgemma.serving.middleware import Observe
from rgemma.serving.routes import add_routes
from rgemma.serving.service import Service


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
    add_error_handlers(app)
    app.add_middleware(Observe, service=service)
    add_routes(app, service)
    return app


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
