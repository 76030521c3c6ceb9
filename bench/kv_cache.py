"""Decode speed with the KV cache versus recomputing the whole sequence each step.

    python bench/kv_cache.py MODEL [--prompt-tokens 128] [--gen-tokens 64]

Both paths generate the same greedy tokens (checked); only the work differs:
with the cache a step computes one position, without it a step recomputes
all prompt + generated positions (so its cost grows with the sequence).
"""

from __future__ import annotations

import argparse
import time

import fs_mlx  # noqa: F401  first: preloads the system OpenBLAS before mlx.core (see docs/quantization.md)
import mlx.core as mx
import numpy as np
from fs_mlx.generation.generate import generate
from fs_mlx.loader import load


def uncached_greedy(model, prompt: list[int], n: int) -> tuple[list[int], float]:
    tokens = list(prompt)
    t0 = time.perf_counter()
    for _ in range(n):
        logits = model(mx.array([tokens]))[0, -1]  # every position, every step
        tokens.append(int(mx.argmax(logits).item()))
    return tokens[len(prompt):], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=64)
    args = ap.parse_args()

    lm = load(args.model)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, lm.config.vocab_size, args.prompt_tokens).tolist()
    generate(lm, prompt, max_tokens=4, ignore_eos=True)  # warm-up

    t0 = time.perf_counter()
    _, cached_ids, last = generate(lm, prompt, max_tokens=args.gen_tokens, ignore_eos=True)
    cached_s = time.perf_counter() - t0
    uncached_ids, uncached_s = uncached_greedy(lm.model, prompt, args.gen_tokens)
    same = sum(a == b for a, b in zip(cached_ids, uncached_ids))

    print(f"model {args.model}: prompt {args.prompt_tokens} tokens, generate {args.gen_tokens}")
    print(f"  with KV cache     {args.gen_tokens / cached_s:8.1f} tok/s overall "
          f"(decode {last.stats.generation_tps:.1f} tok/s, first token {last.stats.ttft_s * 1e3:.0f} ms)")
    print(f"  without KV cache  {args.gen_tokens / uncached_s:8.1f} tok/s overall")
    print(f"  speed-up          {uncached_s / cached_s:8.1f}x; identical greedy tokens: "
          f"{same}/{args.gen_tokens}")


if __name__ == "__main__":
    main()
