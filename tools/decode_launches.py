#!/usr/bin/env python3
"""Kernel launches, threadgroups and SIMD groups per decoded token, from the dispatch geometry.

    python tools/decode_launches.py                 # Qwen3-0.6B and Qwen3-8B, 4-bit, B = 1
    python tools/decode_launches.py --batch 4       # batched decode: 4 sequences per step

No GPU is needed: each launch of one decode step of the fused, quantized
Qwen3 layout (fs_mlx/model/fuse.py) is listed with the grid and threadgroup
that fs_mlx/kernels/*.py would dispatch, by calling the same geometry and
policy functions the wrappers call. MLX's own ops between our kernels (the
two KV-cache writes per layer, the embedding gather) are counted apart.
docs/kernels.md quotes the output and reads it.
"""

from __future__ import annotations

import argparse
import math

from fs_mlx.kernels import attention, norm, quantized, rope

MODELS = {  # name: (layers, hidden, Hq, Hkv, head_dim, intermediate, vocab, tied)
    "Qwen3-0.6B": (28, 1024, 16, 8, 128, 3072, 151936, True),
    "Qwen3-8B": (36, 4096, 32, 8, 128, 12288, 151936, False),
}


def launch(name, grid, tg):
    groups = math.prod((g + t - 1) // t for g, t in zip(grid, tg))
    return name, groups, groups * ((math.prod(tg) + 31) // 32)


def takes_qmv(M: int, K: int, N: int) -> bool:
    """Whether M rows of x go to qmv (the wrapper's own rule; older trees: M = 1 only)."""
    if hasattr(quantized, "uses_qmv"):
        return quantized.uses_qmv(M, K, N)
    return M <= quantized.QMV_MAX_ROWS


def matmul(M: int, N: int, K: int, name: str, swiglu: bool = False):
    if takes_qmv(M, K, N):
        return [launch(name + (" (qmv_swiglu)" if swiglu else " (qmv)"), *quantized.qmv_geometry(M, N))]
    out = [launch(name + " (qmm)", *quantized.qmm_geometry(M, 2 * N if swiglu else N))]
    if swiglu:
        from fs_mlx.kernels.swiglu import swiglu_geometry

        out.append(launch("swiglu", *swiglu_geometry(M * N)))
    return out


def decode_attention(B: int, Hq: int, Hkv: int, D: int, S: int):
    if hasattr(attention, "decode_plan"):  # the wrapper's own choice of (G, splits, chunk)
        G, splits, _ = attention.decode_plan(B, Hq, Hkv, S)
    else:
        G = attention.heads_per_group(Hq, Hkv)
        splits, _ = attention.decode_splits(B, Hkv, S)
    out = [launch(f"attention_decode (G={G}, {splits} split{'s' * (splits > 1)})",
                  *attention.decode_geometry(B, Hq, G, splits))]
    if splits > 1:
        out.append(launch("attention_decode_combine", *attention.combine_geometry(B, Hq, D)))
    return out


def decode_step(model: str, S: int, B: int):
    layers, hidden, Hq, Hkv, D, inter, vocab, _ = MODELS[model]
    per_layer = [
        launch("add_rms_norm (before attention)", *norm.norm_geometry(B, hidden)),
        *matmul(B, (Hq + 2 * Hkv) * D, hidden, "qkv_proj"),
        launch("qk_norm_rope", *rope.qk_geometry(B, 1, Hq, Hkv)),
        *decode_attention(B, Hq, Hkv, D, S),
        *matmul(B, hidden, Hq * D, "o_proj"),
        launch("add_rms_norm (before the MLP)", *norm.norm_geometry(B, hidden)),
        *matmul(B, inter, hidden, "gate_up_proj", swiglu=True),
        *matmul(B, hidden, inter, "down_proj"),
    ]
    head = [launch("add_rms_norm (final)", *norm.norm_geometry(B, hidden)), *matmul(B, vocab, hidden, "lm_head")]
    return per_layer, head, layers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--contexts", default="128,1024,4096")
    args = p.parse_args()
    for model in MODELS:
        for S in [int(s) for s in args.contexts.split(",")]:
            per_layer, head, layers = decode_step(model, S, args.batch)
            launches = len(per_layer) * layers + len(head)
            tgs = sum(g for _, g, _ in per_layer) * layers + sum(g for _, g, _ in head)
            print(f"{model}, B={args.batch}, context {S}: {launches} launches, {tgs} threadgroups per token "
                  f"(+ {2 * layers} KV-cache writes by MLX)")
            for name, groups, simd in per_layer:
                print(f"    {name:44s} {groups:7d} threadgroups {simd:8d} SIMD groups")
            print()


if __name__ == "__main__":
    main()
