"""The ASGI middleware in front of every route (`Observe`): it counts responses by route and
status for /metrics, and refuses a bad API key or an oversized body before the body is read."""

from __future__ import annotations

from rgemma.serving.errors import TOO_LARGE, UNAUTHORIZED, APIError, error_response
from rgemma.serving.service import Service
from rgemma.serving.tokenizer_routes import TOKENIZER_ROUTES

# The endpoints counted by name in rgemma_requests_total; any other path counts as "other".
ROUTES = (
    "/health",
    "/metrics",
    "/v1/models",
    "/v1/completions",
    "/v1/chat/completions",
    "/openapi.json",
    *TOKENIZER_ROUTES,
)


class Observe:
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
                return await error_response(refusal)(scope, receive, observed_send)
            await self.app(_as_json(scope), receive, observed_send)
        finally:
            self.service.metrics.count(endpoint, status)

    def _refusal(self, scope) -> APIError | None:
        """A bad key or a body declared too large, refused before the body is read."""
        path = scope["path"]
        if (path.startswith("/v1/") or path == "/metrics") and not self.service.authorized(
            header(scope, b"authorization")
        ):
            return UNAUTHORIZED
        length = header(scope, b"content-length").decode("latin-1")
        if length.isdigit() and int(length) > self.service.limits.max_body_bytes:
            return TOO_LARGE
        return None


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
    if scope["method"] != "POST" or b"json" in header(scope, b"content-type"):
        return scope
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    return dict(scope, headers=headers + [(b"content-type", b"application/json")])


def header(scope, name: bytes) -> bytes:
    """A header's raw bytes (b"" when absent)."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return b""
