"""The server's limits and batching knobs, defined once: `rgemma serve`'s flags are built from
these fields, and the scheduler and the HTTP layer read them."""

from __future__ import annotations

from dataclasses import dataclass, field


def _limit(default, help: str, metavar: str = "N"):
    """A Limits field: its default and meaning, written once (`rgemma serve` builds its flags
    from them; see rgemma.cli.options.dataclass_arguments)."""
    return field(default=default, metadata={"help": help, "metavar": metavar})


@dataclass
class Limits:
    """What the server accepts and how it batches. The scheduler gets max_batch, max_queue,
    prefill_chunk and state_cache_mb from here."""

    max_batch: int = _limit(32, "sequences decoded together")
    max_queue: int = _limit(256, "requests that may wait for a batch slot; more get 429")
    max_prompt_tokens: int = _limit(8192, "longest prompt accepted, in tokens")
    max_tokens: int = _limit(4096, "most new tokens per request; the chat default")
    prefill_chunk: int = _limit(
        256, "prompt tokens read per engine step, so long prompts do not stall decoding"
    )
    state_cache_mb: float = _limit(
        1024.0,
        "memory for cached prompt states (serving/state_cache.py), so a prompt that starts like an "
        "earlier one (the next turn of a chat, a shared system prompt) skips that prefix; 0 is off",
        "MB",
    )
    shutdown_grace: float = _limit(30.0, "seconds in-flight requests get after SIGTERM", "SECONDS")

    @property
    def max_body_bytes(self) -> int:
        return max(1 << 20, 64 * self.max_prompt_tokens)

    def validate(self) -> None:
        """Raise ValueError naming the flag of a limit out of range."""
        for name in ("max_batch", "max_prompt_tokens", "max_tokens", "prefill_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_queue < 0 or self.shutdown_grace < 0 or self.state_cache_mb < 0:
            raise ValueError("--max-queue, --shutdown-grace and --state-cache-mb must be >= 0")
