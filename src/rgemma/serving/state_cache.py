"""A prefix state cache for the server: prompts that begin like earlier ones are not read again.

A Griffin state is fixed-size (a conv window, an RG-LRU vector and an attention ring per layer,
models/state.py), so the whole of a prefix fits in one row whatever its length: keep that row
and the next-token logits, keyed by the prefix, and a later prompt that starts with it only
prefills the rest. The scheduler keeps an entry

- when a prompt has been read (the state the request's rows start from, taken without a copy);
- when a row's generation ends (its prompt and every sampled token but the last), so the next
  turn of a chat, whose transcript holds the reply, starts after it;
- at a prefix shared with an earlier prompt (a system prompt), once a second prompt shows it
  is shared: every prompt's BLOCK-token prefixes go into a `seen` index of digests (no
  states), and a prompt whose longest seen prefix reaches past its longest cached one leaves
  a copy of its state there on the way. A state row is only spent on a prefix that two
  prompts share, as Marconi (Pan et al., 2024) admits states at radix-tree branch points.

A prompt starts from its longest cached prefix. Keys are digests of the token ids, looked up
at the lengths the cache holds, so when a client's re-rendered transcript tokenizes the reply
differently from the tokens sampled, the lookup falls back to the longest prefix that does
match (the end of the previous prompt, or a shared system prompt). Entries are never changed:
a hit clones the row once into the request's own state (or, when the cache covers the whole
prompt, the decoder copies it into the row's slot). Memory is bounded by `budget_bytes`
(state rows plus logits), evicting the least recently used entry first.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from rgemma.models.state import State

BLOCK = 16  # shared prefixes are found to within this many tokens
SEEN_KEYS = 1 << 16  # the seen index's size: about 8 MB of digests, whatever the traffic
MB = 1 << 20


@dataclass(frozen=True)
class Entry:
    """A cached prefix: one state row after `length` tokens and the logits (V,) that follow."""

    length: int
    state: State
    logits: torch.Tensor
    nbytes: int


@dataclass(frozen=True)
class Plan:
    """How a prompt starts: from `entry` (None: from nothing), and at which length a copy of
    its state is kept on the way (`boundary`, a prefix shared with another prompt; 0: none)."""

    entry: Entry | None
    boundary: int = 0


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    tokens_saved: int = 0  # prompt tokens not prefilled thanks to hits
    evictions: int = 0
    entries: int = 0
    bytes: int = 0
    peak_bytes: int = 0


def prefix_digests(ids: Sequence[int], lengths: Iterable[int]) -> dict[int, bytes]:
    """A 128-bit blake2b digest of ids[:L] for each L in `lengths`, in one pass over the ids."""
    data = array("i", ids)
    view, size = memoryview(data).cast("B"), data.itemsize
    h, pos, out = hashlib.blake2b(digest_size=16), 0, {}
    for length in sorted(set(lengths)):
        h.update(view[pos * size : length * size])
        pos = length
        out[length] = h.copy().digest()
    return out


class StateCache:
    """Prefix -> (state row, logits), least recently used first out. Used by one thread (the
    engine's); `stats` may be read from others."""

    def __init__(self, budget_bytes: int, block: int = BLOCK, min_tokens: int = BLOCK):
        self.budget, self.block, self.min_tokens = budget_bytes, block, min_tokens
        self.stats = CacheStats()
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._lengths: Counter[int] = Counter()  # how many entries have each length
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    @classmethod
    def from_mb(cls, mb: float) -> StateCache | None:
        """A cache of `mb` MiB; None (no cache) for 0."""
        return cls(int(mb * MB)) if mb > 0 else None

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------------ lookup
    def plan(self, ids: Sequence[int]) -> Plan:
        """Where `ids` starts: its longest cached prefix (counted as a hit or a miss), and
        the shared prefix to keep on the way. The prompt's blocks are then marked seen."""
        blocks = range(self.block, len(ids) + 1, self.block)
        lengths = [n for n in self._lengths if self.min_tokens <= n <= len(ids)]
        digests = prefix_digests(ids, [*lengths, *blocks])
        entry = self._longest_entry(digests, lengths)
        shared = next((n for n in reversed(blocks) if digests[n] in self._seen), 0)
        start = entry.length if entry else 0
        boundary = shared if start + self.min_tokens <= shared < len(ids) else 0
        self._see(digests[n] for n in blocks)
        return Plan(entry, boundary)

    def _longest_entry(self, digests: dict[int, bytes], lengths: list[int]) -> Entry | None:
        for n in sorted(lengths, reverse=True):
            entry = self._entries.get(digests[n])
            if entry is not None:
                self._entries.move_to_end(digests[n])
                self.stats.hits += 1
                self.stats.tokens_saved += n
                return entry
        self.stats.misses += 1
        return None

    def _see(self, digests: Iterable[bytes]) -> None:
        for d in digests:
            self._seen[d] = None
            self._seen.move_to_end(d)
        while len(self._seen) > SEEN_KEYS:
            self._seen.popitem(last=False)

    # ------------------------------------------------------------------ insertion
    def put(self, ids: Sequence[int], state: State, logits: torch.Tensor) -> bool:
        """Keep `state` (one row, after `ids`; the caller must never change it again) and the
        `logits` (V,) that follow. A prefix already held is only marked as recently used.
        Returns whether the prefix is held now."""
        if len(ids) < self.min_tokens:
            return False
        key = prefix_digests(ids, [len(ids)])[len(ids)]
        if key in self._entries:
            self._entries.move_to_end(key)
            return True
        nbytes = state.nbytes() + logits.numel() * logits.element_size()
        if state.batch_size != 1 or nbytes > self.budget:
            return False
        while self.stats.bytes + nbytes > self.budget:
            self._evict()
        self._entries[key] = Entry(len(ids), state, logits, nbytes)
        self._lengths[len(ids)] += 1
        self._account(nbytes, 1)
        return True

    def _evict(self) -> None:
        _, entry = self._entries.popitem(last=False)
        self._lengths[entry.length] -= 1
        if not self._lengths[entry.length]:
            del self._lengths[entry.length]
        self.stats.evictions += 1
        self._account(-entry.nbytes, -1)

    def _account(self, nbytes: int, entries: int) -> None:
        self.stats.bytes += nbytes
        self.stats.entries += entries
        self.stats.peak_bytes = max(self.stats.peak_bytes, self.stats.bytes)


def row_of(state: State, index: int) -> State:
    """A copy of row `index` of `state`, as a one-row State (a slot's state, to cache)."""
    return state.map(lambda t: t[index : index + 1].clone())


def metric_values(cache: StateCache | None) -> list[tuple[str, str, str, int]]:
    """The cache's Prometheus values: (name, type, help, value); zeros without a cache."""
    s = cache.stats if cache is not None else CacheStats()
    return [
        ("state_cache_hits_total", "counter", "Prompts that started from a cached prefix.", s.hits),
        ("state_cache_misses_total", "counter", "Prompts that found no cached prefix.", s.misses),
        (
            "state_cache_tokens_saved_total",
            "counter",
            "Prompt tokens not prefilled because a cached prefix covered them.",
            s.tokens_saved,
        ),
        ("state_cache_evictions_total", "counter", "Entries dropped to stay in budget.", s.evictions),
        ("state_cache_entries", "gauge", "Cached prefixes held.", s.entries),
        ("state_cache_bytes", "gauge", "Bytes of cached states and logits held.", s.bytes),
        (
            "state_cache_budget_bytes",
            "gauge",
            "The cache's budget (--state-cache-mb).",
            cache.budget if cache else 0,
        ),
    ]
