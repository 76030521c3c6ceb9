"""fsx and mlx-lm decoding at one depth, alternated in one process (a cross-check of the sweep).

    python bench/depth_check.py MODEL DEPTH [--gen 64] [--rounds 4]

Each round prefills DEPTH random ids into a fresh cache and decodes --gen tokens, once
through fsx's `stream_generate` and once through mlx-lm's, with the same model files,
and prints both decode speeds and the KV-cache capacity each ended with.
"""

from __future__ import annotations

import argparse
import random
import time

import fs_mlx  # noqa: F401  (first: the OpenBLAS preload, for both engines)
import mlx.core as mx
import mlx_lm
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.sample_utils import make_sampler

from fs_mlx.generation.generate import PromptCache, stream_generate
from fs_mlx.loader import load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("depth", type=int)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=4)
    a = ap.parse_args()
    lm = load(a.model)
    model, tok = mlx_lm.load(a.model)
    model.set_dtype(lm.dtype)  # the same compute dtype as fsx
    tok.eos_token_ids = []
    ids = [random.Random(0).randrange(lm.config.vocab_size) for _ in range(a.depth)]

    def tps(stamps: list[float]) -> float:
        return (len(stamps) - 1) / (stamps[-1] - stamps[0])

    def fsx() -> tuple[float, int]:
        cache = PromptCache(lm.model)
        stream = stream_generate(lm, ids, max_tokens=a.gen, ignore_eos=True, cache=cache)
        return tps([time.perf_counter() for r in stream if r.token is not None]), cache.layers[0].keys.shape[2]

    def theirs() -> tuple[float, int]:
        cache = make_prompt_cache(model)
        stream = mlx_lm.stream_generate(model, tok, mx.array(ids), max_tokens=a.gen,
                                        sampler=make_sampler(0.0), prompt_cache=cache)
        return tps([time.perf_counter() for _ in stream]), cache[0].keys.shape[2]

    fsx(), theirs()  # warm-up
    for _ in range(a.rounds):
        (f, fcap), (m, mcap) = fsx(), theirs()
        print(f"fsx {f:8.2f} tok/s (cache capacity {fcap})   mlx-lm {m:8.2f} tok/s (capacity {mcap})")


if __name__ == "__main__":
    main()
