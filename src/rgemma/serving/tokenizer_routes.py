"""The tokenizer over HTTP, in vLLM's shapes: `POST /tokenize`, `POST /detokenize` and
`GET /tokenizer_info`. lm-eval's `local-completions` probes /tokenizer_info and /tokenize and,
when both answer, tokenizes through them (its "remote" tokenizer), so it needs no local copy
of the tokenizer and no `tokenizer=` argument.

    POST /tokenize    {"prompt": str, "add_special_tokens": true}        (BOS as for a completion)
                   or {"messages": [...], "add_generation_prompt": true} (the chat template)
                   -> {"count", "max_model_len", "tokens", "token_strs"}
    POST /detokenize  {"tokens": [int]} -> {"prompt": str}
    GET  /tokenizer_info -> bos/eos/pad/unk tokens, their ids, chat_template, vocab_size
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

TOKENIZER_ROUTES = ("/tokenize", "/detokenize", "/tokenizer_info")


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    model: str | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True
    return_token_strs: bool = False


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    model: str | None = None
    tokens: list[int] = Field(max_length=1 << 20)


def tokenizer_routes(app: FastAPI, service, guarded: dict) -> None:
    """Add the routes; `service` gives the tokenizer (once loaded) and the limits."""

    def tokenizer():
        service.ready()
        return service.tokenizer

    @app.post("/tokenize", **guarded)
    def tokenize(body: TokenizeRequest) -> dict:
        tok = tokenizer()
        if (body.prompt is None) == (body.messages is None):
            raise HTTPException(400, "give exactly one of prompt or messages")
        if body.prompt is not None:
            ids = tok.encode(body.prompt, add_bos=None if body.add_special_tokens else False)
        else:
            try:
                ids = tok.encode_chat(body.messages, add_generation_prompt=body.add_generation_prompt)
            except ValueError as err:
                raise HTTPException(400, f"messages: {err}") from None
        strs = [tok.id_to_token(i) for i in ids] if body.return_token_strs else None
        return {
            "count": len(ids),
            "max_model_len": service.limits.max_prompt_tokens,
            "tokens": ids,
            "token_strs": strs,
        }

    @app.post("/detokenize", **guarded)
    def detokenize(body: DetokenizeRequest) -> dict:
        tok = tokenizer()
        bad = [i for i in body.tokens if not 0 <= i < tok.vocab_size]
        if bad:
            raise HTTPException(400, f"token id {bad[0]} is outside the vocabulary of {tok.vocab_size}")
        return {"prompt": tok.decode(body.tokens)}

    @app.get("/tokenizer_info", **guarded)
    def tokenizer_info() -> dict:
        tok = tokenizer()
        info: dict[str, Any] = {"tokenizer_class": "rgemma", "vocab_size": tok.vocab_size}
        for name in ("bos", "eos", "pad", "unk"):
            info[f"{name}_token"] = tok.special_tokens.get(f"{name}_token")
            info[f"{name}_token_id"] = getattr(tok, f"{name}_id")
        info["add_bos_token"] = tok.add_bos_token
        info["chat_template"] = tok.chat_template
        info["model_max_length"] = service.limits.max_prompt_tokens
        return info
