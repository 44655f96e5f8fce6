"""Text output, the same for the CLI, the chat and the server: a streaming detokenizer per
sequence, with stop strings held back so no part of one is ever emitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rgemma.text.logprobs import TokenLogprobs
from rgemma.text.tokenizer import Tokenizer


@dataclass
class TextStep:
    """One generated token: its id, the text it makes printable, its logprob under the
    sampler's distribution (penalised, temperature-scaled), and why the sequence ended (None
    while it goes on; "stop" for EOS or a stop string, else "length"). `scores`, when the row
    asked for them, are the model's own logprobs with the top alternatives (text/logprobs.py)."""

    token_id: int
    text: str
    logprob: float
    finish_reason: str | None = None
    scores: TokenLogprobs | None = None


class TextStream:
    """Per-row text: detokenize incrementally and hold back any tail that could begin a stop
    string. `push` returns (printable text, hit a stop string)."""

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = (), prompt: Sequence[int] = ()):
        self.detok = tokenizer.detokenizer()
        if prompt:  # continue the prompt's text: "Once upon a time" + ", there was"
            self.detok.prime(prompt)
        self.stop = [s for s in stop if s]
        self.held = ""
        self.stopped = False

    def push(self, token_id: int) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        self.held += self.detok.push(token_id)
        return self._release(final=False)

    def finish(self) -> str:
        """The rest of the text at the end of the sequence (nothing after a stop string)."""
        if self.stopped:
            return ""
        self.held += self.detok.flush()
        return self._release(final=True)[0]

    def _release(self, final: bool) -> tuple[str, bool]:
        hits = [i for i in (self.held.find(s) for s in self.stop) if i >= 0]
        if hits:
            out, self.held, self.stopped = self.held[: min(hits)], "", True
            return out, True
        keep = 0 if final else _longest_stop_prefix_suffix(self.held, self.stop)
        out, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
        return out, False


def _longest_stop_prefix_suffix(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of some stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best
