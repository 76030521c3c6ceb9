"""Sliding-window KV cache: peak memory of a long decode, window kept vs window ignored.

    PYTHONPATH=. python bench/sliding_window.py [--context 16384] [--window 512]

A tiny Gemma-3-shaped model with random weights (6 layers: 5 local with a window,
1 global; 4 heads, 1 KV head, head_dim 128, float32 on the CPU) prefills `context`
tokens in chunks of 512 and decodes 16 more. Run twice: with fsx's caches (each local
layer keeps its last window - 1 positions, generation/window_cache.py) and with a full
cache on every layer (the window still masks, so the logits are the same: checked).
Prints the peak memory (mx.get_peak_memory) and the caches' bytes for each, and
each 4096 tokens' progress on stderr. Either way a local layer's attention reads only
the last chunk + W - 1 keys (model/window.py: window_keys), so what the context costs
is the global layer's causal attention: 16384 tokens take ~4 min of CPU for both
variants on a 2-core x86-64 machine (docs/forward-pass.md has the figures).
"""

from __future__ import annotations

import argparse
import sys
import time

import fs_mlx  # noqa: F401  first: preloads the system OpenBLAS before mlx.core (docs/quantization.md)
import mlx.core as mx
import numpy as np

from fs_mlx.generation.cache import KVCache, make_cache
from fs_mlx.model.backends import MLXBackend
from fs_mlx.model.config import ModelConfig
from fs_mlx.model.fuse import fuse
from fs_mlx.model.transformer import Transformer
from mlx.utils import tree_flatten


def gemma3_shaped(window: int, context: int) -> Transformer:
    config = ModelConfig.from_dict({
        "model_type": "gemma3_text", "hidden_size": 256, "num_hidden_layers": 6, "intermediate_size": 512,
        "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 128, "vocab_size": 4096,
        "sliding_window": window, "max_position_embeddings": 2 * context})
    model = Transformer(config, MLXBackend())
    mx.random.seed(0)
    weights = [(k, mx.zeros(v.shape) if k.endswith("norm.weight") else mx.random.normal(v.shape) * 0.05)
               for k, v in tree_flatten(model.parameters())]
    model.load_weights(weights)
    return fuse(model)


def run(model, cache, tokens: list[int], decode: int) -> tuple[float, int, np.ndarray]:
    mx.reset_peak_memory()
    t = time.perf_counter()
    for start in range(0, len(tokens), 512):
        model.model(mx.array([tokens[start:start + 512]]), cache=cache)
        mx.eval([c.state for c in cache])
        if (start + 512) % 4096 == 0:  # progress, for long contexts on a slow machine
            print(f"  {start + 512} tokens prefilled, {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    y = mx.array([[7]])
    last = []
    for _ in range(decode):
        logits = model(y, cache=cache)[0, -1]
        y = mx.argmax(logits).reshape(1, 1)
        mx.eval(y, [c.state for c in cache])
        last.append(np.array(logits))
    kv_bytes = sum(a.nbytes for c in cache for a in c.state)
    return mx.get_peak_memory(), kv_bytes, np.stack(last)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--context", type=int, default=16384)
    ap.add_argument("--window", type=int, default=512)
    args = ap.parse_args()
    model = gemma3_shaped(args.window, args.context)
    tokens = [int(t) for t in np.random.default_rng(0).integers(0, 4096, args.context)]
    rows = {}
    for name, cache in (("window kept (fsx)", make_cache(model)),
                        ("window ignored (full caches)", [KVCache() for _ in model.layers])):
        t = time.perf_counter()
        rows[name] = run(model, cache, tokens, 16) + (time.perf_counter() - t,)
    (a, b) = rows.values()
    same = np.abs(a[2] - b[2]).max()
    print(f"{args.context} tokens prefilled + 16 decoded, window {args.window}, 5 local + 1 global layers")
    print("| cache | peak memory | KV cache after | time |")
    for name, (peak, kv, _, sec) in rows.items():
        print(f"| {name} | {peak / 2**20:.1f} MiB | {kv / 2**20:.1f} MiB | {sec:.1f} s |")
    print(f"max |logit difference| between the two: {same:.2e}")


if __name__ == "__main__":
    main()
