"""Logprobs in OpenAI's two JSON shapes, from the scheduler's scores (text/logprobs.py).

Legacy completions (`logprobs: N`, with `echo` the prompt first):
    {"tokens": [...], "token_logprobs": [...], "top_logprobs": [{text: logprob}, ...],
     "text_offset": [...]}
The first prompt token's `token_logprobs` and `top_logprobs` are null. As in vLLM, a token's
`top_logprobs` holds the N likeliest tokens and the token itself. `text_offset` counts the
characters of the tokens before it. lm-eval's local-completions sums token_logprobs[ctxlen:-1].

Chat (`logprobs: true, top_logprobs: N`):
    {"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}],
     "refusal": null}

Every generated token has an entry, an end-of-sequence token included, so the entries match
`usage.completion_tokens`. A token's text is what it adds to the text before it; a byte piece
of a character split across tokens reads `bytes:\\xNN` (OpenAI's convention) and its `bytes`
are that byte. Token-id prompts are echoed as their decoded text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rgemma.text.logprobs import TokenLogprobs
from rgemma.text.tokenizer import Tokenizer

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class TokenTexts:
    """Each token's text after the token before it (cached: a prompt's tokens repeat)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.cache: dict[tuple[int | None, int], tuple[str, list[int]]] = {}

    def __call__(self, token_id: int, previous: int | None) -> tuple[str, list[int]]:
        """(text, bytes) of `token_id` read after `previous` (None: at the start)."""
        key = (previous, token_id)
        if key not in self.cache:
            self.cache[key] = self._text(token_id, previous)
        return self.cache[key]

    def _text(self, token_id: int, previous: int | None) -> tuple[str, list[int]]:
        piece = self.tokenizer.id_to_token(token_id) or ""
        byte = _BYTE_PIECE.fullmatch(piece)
        if byte:  # a whole ASCII character reads as itself; part of a longer one as its byte
            value = int(byte.group(1), 16)
            return (chr(value) if value < 0x80 else f"bytes:\\x{value:02x}"), [value]
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=False)
        text = decode([token_id])
        if previous is not None:
            before, both = decode([previous]), decode([previous, token_id])
            if both.startswith(before):
                text = both[len(before) :]
        return text, list(text.encode("utf-8"))


def legacy(
    texts: TokenTexts,
    ids: Sequence[int],
    scores: Sequence[TokenLogprobs | None],
    previous: int | None,
    offset: int,
) -> dict:
    """The legacy block for tokens `ids` (after token `previous`), text offsets from `offset`."""
    out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for token_id, score in zip(ids, scores):
        text = texts(token_id, previous)[0]
        out["tokens"].append(text)
        out["text_offset"].append(offset)
        out["token_logprobs"].append(None if score is None else score.logprob)
        out["top_logprobs"].append(None if score is None else _top_dict(texts, score, previous))
        offset += len(text)
        previous = token_id
    return out


def _top_dict(texts: TokenTexts, score: TokenLogprobs, previous: int | None) -> dict[str, float]:
    top: dict[str, float] = {}
    for token_id, logprob in (*score.top, (score.token_id, score.logprob)):
        top.setdefault(texts(token_id, previous)[0], logprob)
    return top


def chat(texts: TokenTexts, scores: Sequence[TokenLogprobs], previous: int | None) -> list[dict]:
    """The chat `content` entries for generated tokens (after token `previous`)."""
    content = []
    for score in scores:
        content.append(
            dict(
                _entry(texts, score.token_id, score.logprob, previous),
                top_logprobs=[_entry(texts, i, lp, previous) for i, lp in score.top],
            )
        )
        previous = score.token_id
    return content


def _entry(texts: TokenTexts, token_id: int, logprob: float, previous: int | None) -> dict:
    text, raw = texts(token_id, previous)
    return {"token": text, "logprob": logprob, "bytes": raw}


def merge(into: dict | None, block: dict) -> dict:
    """Append a legacy block to another (the prompt's, then each token's)."""
    if into is None:
        return {k: list(v) for k, v in block.items()}
    for key, values in block.items():
        into[key] += values
    return into


class RequestLogprobs:
    """The logprobs of one request's choices (choice i is of prompt i // n): blocks to stream
    as scores arrive, and the whole of each choice for a plain response."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        chat_format: bool,
        prompts: list[list[int]],
        n: int,
        texts: list[str] | None,
    ):
        self.texts, self.chat, self.n = TokenTexts(tokenizer), chat_format, n
        rows = len(prompts) * n
        self.previous = [prompts[i // n][-1] for i in range(rows)]
        # legacy offsets count the prompt's text (OpenAI's), so echoed or not they agree
        self.offset = [len(texts[i // n]) if texts else 0 for i in range(rows)]
        self.whole: list[dict | None] = [None] * rows

    def prompt(
        self, index: int, ids: list[int], scores: list[TokenLogprobs | None]
    ) -> list[tuple[int, dict]]:
        """The echoed prompt's block for each choice of prompt `index` (legacy only)."""
        block = legacy(self.texts, ids, scores, None, 0)
        out = []
        for choice in range(index * self.n, (index + 1) * self.n):
            self.offset[choice] = sum(len(t) for t in block["tokens"])
            self.whole[choice] = merge(None, block)
            out.append((choice, block))
        return out

    def token(self, choice: int, score: TokenLogprobs) -> dict:
        """The block for one generated token of `choice`."""
        previous, self.previous[choice] = self.previous[choice], score.token_id
        if self.chat:
            block = {"content": chat(self.texts, [score], previous), "refusal": None}
            whole = self.whole[choice] or {"content": [], "refusal": None}
            whole["content"] += block["content"]
            self.whole[choice] = whole
            return block
        block = legacy(self.texts, [score.token_id], [score], previous, self.offset[choice])
        self.offset[choice] += len(block["tokens"][0])
        self.whole[choice] = merge(self.whole[choice], block)
        return block

    def final(self, choice: int) -> dict:
        if self.whole[choice] is not None:
            return self.whole[choice]
        if self.chat:
            return {"content": [], "refusal": None}
        return {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
