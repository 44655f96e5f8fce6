"""Errors in OpenAI's body `{"error": {"message", "type", "param", "code"}}`: `APIError`, which
handlers raise, and the exception handlers that turn it, FastAPI's validation errors (422 there,
400 here), HTTP errors and anything unexpected into that body."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


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
TOO_LARGE = APIError(413, "request body too large", code="body_too_large")


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(error_body(err.message, err.type, err.param, err.code), status_code=err.status)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
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
        return error_response(bad_request(f"invalid JSON body: {first.get('msg')}", code="invalid_json"))
    param = ".".join(loc) or None
    message = f"{param}: {first['msg']}" if param else f"request body: {first['msg']}"
    return error_response(bad_request(message, param, "invalid_value"))


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


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error in OpenAI's body."""
    app.add_exception_handler(APIError, lambda _, e: error_response(e))
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
