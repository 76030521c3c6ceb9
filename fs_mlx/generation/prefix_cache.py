"""The prefix cache: KV of earlier requests, reused by later ones that start the same way.

A token's key and value depend only on the tokens before it (attention is
causal), so the KV of any prefix of a stored sequence is exactly the first
rows of that sequence's KV. Requests that share a system prompt, a long
document or the earlier turns of a chat therefore skip prefilling the shared
part: the scheduler copies those rows into the new sequence's cache.

    entries: token sequence -> per layer (keys, values) [1, Hkv, n, D]
    lookup:  the entry with the longest common prefix with the prompt
    budget:  total bytes; the least recently used entries go first

Entries are immutable MLX arrays: a request that reuses one gets a copy into
its own cache, so nothing one request does can change another's keys.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import mlx.core as mx
import numpy as np


@dataclass
class Entry:
    tokens: np.ndarray  # int64 [n]
    kv: list[tuple[mx.array, mx.array]]  # per layer: keys, values [1, Hkv, n, D]
    nbytes: int


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens a and b share."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


class PrefixCache:
    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self.entries: OrderedDict[int, Entry] = OrderedDict()  # oldest use first
        self._next_id = 0
        self.hits = 0  # lookups that reused at least one token
        self.lookups = 0

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries.values())

    def lookup(self, prompt: list[int]) -> tuple[int, list[tuple[mx.array, mx.array]] | None]:
        """(n, per-layer KV of the first n prompt tokens), n as large as stored entries allow.

        n < len(prompt): at least one token is left to compute, since its logits
        start the reply.
        """
        self.lookups += 1
        want = np.asarray(prompt[:-1], dtype=np.int64)
        best_id, best_n = None, 0
        for eid, e in self.entries.items():
            n = common_prefix(e.tokens, want)
            if n > best_n:
                best_id, best_n = eid, n
        if best_id is None:
            return 0, None
        self.hits += 1
        self.entries.move_to_end(best_id)  # recently used
        kv = self.entries[best_id].kv
        return best_n, [(k[:, :, :best_n, :], v[:, :, :best_n, :]) for k, v in kv]

    def insert(self, tokens: list[int], kv: list[tuple[mx.array, mx.array]]) -> None:
        """Store the KV [1, Hkv, len(tokens), D] per layer of `tokens`."""
        new = np.asarray(tokens, dtype=np.int64)
        nbytes = sum(k.nbytes + v.nbytes for k, v in kv)
        if not len(new) or nbytes > self.budget:
            return
        for eid, e in list(self.entries.items()):
            if common_prefix(e.tokens, new) == len(new):  # already held (as a prefix of e)
                self.entries.move_to_end(eid)
                return
            if common_prefix(e.tokens, new) == len(e.tokens):  # e is a prefix of the new entry
                del self.entries[eid]
        # Materialise the copy now: the slices would otherwise keep the whole
        # batch buffer they were cut from alive.
        kv = [(mx.array(k), mx.array(v)) for k, v in kv]
        mx.eval(kv)
        self.entries[self._next_id] = Entry(new, kv, nbytes)
        self._next_id += 1
        while self.nbytes > self.budget:
            self.entries.popitem(last=False)  # least recently used

    def clear(self) -> None:
        self.entries.clear()
