"""The sliding-window KV cache: a local layer keeps only the keys its window can still see.

A sliding-window layer (Mistral, Phi-3, Gemma 3's local layers; model/window.py)
lets the query at position p see positions p - W + 1 .. p. Once position p
is reached, every key before p - W + 1 is dead for all later queries, so
the layer keeps the last W - 1 keys and values: memory is bounded by the
window, not the context (a 16k-token decode of Gemma 3 with W = 512 keeps 511
positions in its local layers).

    update_and_fetch(k, v):  [kept W-1 | new L]  -> attention    (S = kept + L keys)
                             keep the last W - 1 of them for the next call

The queries are the last L of the S keys returned, as with the full cache,
so the window mask (model/window.py) is the same formula. Each call copies
the kept keys once (a concatenation): O(W) per token, what attention reads
anyway, and simpler than a ring buffer with its wrap-around.
"""

from __future__ import annotations

import mlx.core as mx


class WindowKVCache:
    def __init__(self, window: int) -> None:
        self.window = window
        self.keys: mx.array | None = None  # [B, Hkv, <= window - 1, D]: the last positions seen
        self.values: mx.array | None = None
        self.offset = 0  # tokens seen (not stored); also the RoPE position of the next token

    def make_mask(self, L: int) -> str | None:
        """As KVCache's: causal within the L new tokens; the attention adds the window."""
        return "causal" if L > 1 else None

    def update_and_fetch(self, k: mx.array, v: mx.array) -> tuple[mx.array, mx.array]:
        """Append k, v [B, Hkv, L, D]; return the kept and the new ones [B, Hkv, S, D]."""
        if self.keys is None:
            keys, values = k, v
        else:
            keys = mx.concatenate([self.keys, k], axis=2)
            values = mx.concatenate([self.values, v], axis=2)
        self.offset += k.shape[2]
        keep = self.window - 1
        self.keys = keys[..., max(0, keys.shape[2] - keep):, :] if keep else None
        self.values = values[..., max(0, values.shape[2] - keep):, :] if keep else None
        return keys, values

    @property
    def stored(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def trim(self, n: int) -> int:
        """Forget the last n tokens, if the keys the window still needs are kept; return n or 0.

        The keys that fell out of the window are gone, so trimming is possible
        only while every kept position is still stored (offset < window) or to zero.
        """
        n = min(n, self.offset)
        if n == self.offset:
            self.keys = self.values = None
            self.offset = 0
            return n
        if self.stored < self.offset:  # positions were dropped: the window cannot move back
            return 0
        self.offset -= n
        self.keys = self.keys[..., : self.offset, :]
        self.values = self.values[..., : self.offset, :]
        return n

    @property
    def state(self) -> list[mx.array]:
        return [] if self.keys is None else [self.keys, self.values]
