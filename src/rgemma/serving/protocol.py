"""The OpenAI request and error bodies the server accepts and answers, as pydantic models:
their fields, types and ranges are what FastAPI validates and what /openapi.json documents.
The checks that need the tokenizer or the limits are in serving/service.py."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rgemma.text.logprobs import MAX_TOP_LOGPROBS

MAX_STOP_STRINGS = 16  # OpenAI allows 4
MAX_STOP_CHARS = 256  # per stop string: held-back text is checked against each on every token


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    include_usage: bool = False


class SamplingRequest(BaseModel):
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


class CompletionRequest(SamplingRequest):
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


class ChatCompletionRequest(SamplingRequest):
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
