"""One forward pass over a prompt: logits for every position.

This is what `fsx logits` runs and what the golden tests compare with the
official implementation: no cache, no sampling, just the network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import mlx.core as mx
import numpy as np

from ..formats.tokenizer import Tokenizer

if TYPE_CHECKING:  # the generation stage takes a loaded model; it does not load one
    from ..loader import LoadedModel


def logits_for(lm: LoadedModel, tokens: list[int], trace: dict | None = None) -> np.ndarray:
    """tokens [T] -> float32 logits [T, vocab]. `trace` collects named activations."""
    x = mx.array([tokens], dtype=mx.int32)  # [1, T]
    out = lm.model(x, trace=trace)[0].astype(mx.float32)  # [T, vocab]
    mx.eval(out)
    if trace is not None:
        for k, v in trace.items():
            trace[k] = np.array(v[0].astype(mx.float32))
    return np.array(out)


def top_k_report(tok: Tokenizer, tokens: list[int], last: np.ndarray, k: int) -> str:
    """A table of the k most likely next tokens after the last position."""
    k = min(k, last.shape[-1])
    order = np.argsort(-last, kind="stable")[:k]
    z = last - last.max()
    probs = np.exp(z) / np.exp(z).sum()
    lines = [f"{len(tokens)} prompt tokens; top {k} next tokens:", "rank       id     logit    prob  token"]
    for r, i in enumerate(order, 1):
        lines.append(f"{r:>4} {i:>8} {last[i]:>9.4f} {probs[i]:>7.4f}  {tok.id_to_token(int(i))!r}")
    return "\n".join(lines)
