#!/usr/bin/env python3
"""Measure what MLX affine quantization costs on a real model: memory and logit error.

The model is the default one, SmolLM2-135M-Instruct. Its only freely available
weights are the Q4_1 GGUF, so the float reference is that file dequantized to
fp32 (exactly what transformers runs when it loads the GGUF). Each (bits, group)
row re-quantizes those float weights with fs-mlx (= mx.quantize, = mlx-lm) and
compares logits over a few hundred tokens of text with the float reference.

    python tools/measure_quantization.py            # prints a Markdown table

Results are in docs/quantization.md.
"""

from __future__ import annotations

import time

import fs_mlx  # noqa: F401  (first: OpenBLAS preload)
import dataclasses

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from fs_mlx.generation.forward import logits_for
from fs_mlx.loader import build_model, load
from fs_mlx.model.transformer import Transformer
from fs_mlx.formats.quantize import quantize_tensors
from fs_mlx.model.quantized import dequantize_model

TEXT = """\
The history of the Roman Empire spans more than a thousand years, from the founding of the city to the fall of Constantinople.
In the beginning, Rome was a small settlement on the banks of the Tiber, ruled by kings. The Republic that followed was governed by
elected magistrates and a senate, and it expanded across the Italian peninsula and then the Mediterranean. Julius Caesar's crossing
of the Rubicon in 49 BC led to civil war, and his adopted heir Octavian became the first emperor, Augustus.
def fibonacci(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
Photosynthesis converts light energy into chemical energy: plants take in carbon dioxide and water and release oxygen.
User: What is the capital of France? Assistant: The capital of France is Paris, which is also its largest city.
"""


def softmax(x):
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def metrics(q: np.ndarray, f: np.ndarray, ids: list[int]) -> dict:
    pf, pq = softmax(f), softmax(q)
    kl = (pf * (np.log(pf + 1e-30) - np.log(pq + 1e-30))).sum(-1).mean()
    nll = -np.log(pq[np.arange(len(ids) - 1), ids[1:]] + 1e-30).mean()
    return {
        "top1": float((q.argmax(-1) == f.argmax(-1)).mean()),
        "kl": float(kl),
        "rms_rel": float(np.sqrt(((q - f) ** 2).mean() / (f**2).mean())),
        "max_abs": float(np.abs(q - f).max()),
        "ppl": float(np.exp(nll)),
    }


def weight_bytes(model, scale_bytes: int) -> int:
    """Weight memory with the float tensors (scales, biases, norms) at `scale_bytes` each."""
    return sum(a.nbytes if a.dtype == mx.uint32 else a.size * scale_bytes
               for _, a in tree_flatten(model.parameters()))


def main() -> None:
    lm = load("smollm2")
    ids = lm.tokenizer.encode(TEXT)
    stored = logits_for(lm, ids)
    stored_model = lm.model
    rows = [("Q4_1 as stored (GGUF, group 32)", stored_model, stored)]

    float_lm = load("smollm2")
    dequantize_model(float_lm.model)
    f = logits_for(float_lm, ids)
    float_tensors = dict(tree_flatten(float_lm.model.parameters()))
    config = dataclasses.replace(lm.config, quantization=None)
    skeleton = Transformer(config, ops=None)

    for bits, group, embed_bits in [(4, 32, 4), (4, 64, 4), (4, 128, 4), (4, 32, 8), (4, 64, 8),
                                    (8, 32, 8), (8, 64, 8), (8, 128, 8)]:
        t, block = quantize_tensors(skeleton, float_tensors, bits, group)
        name = f"MLX {bits}-bit, group {group}"
        if embed_bits != bits:  # a per-layer override, as mlx-lm's mixed recipes write them
            e = "model.embed_tokens"
            t[f"{e}.weight"], t[f"{e}.scales"], t[f"{e}.biases"] = mx.quantize(
                float_tensors[f"{e}.weight"], group_size=group, bits=embed_bits)
            block[e] = {"group_size": group, "bits": embed_bits}
            name += f", embedding (= tied head) {embed_bits}-bit"
        model = build_model(dataclasses.replace(config, quantization=block), t, None, mx.float32)
        q = logits_for(dataclasses.replace(lm, model=model), ids)
        rows.append((name, model, q))

    print(f"{len(ids)} tokens; reference: the Q4_1 weights dequantized to fp32 "
          f"(perplexity {metrics(f, f, ids)['ppl']:.3f}, weights {weight_bytes(float_lm.model, 2) / 1e6:.0f} MB "
          f"fp16 / {weight_bytes(float_lm.model, 4) / 1e6:.0f} MB fp32)\n")
    print("| weights | MB (fp16 scales, on disk) | MB (fp32 scales, CPU) | top-1 agree | KL(float‖q) | RMS logit err (rel) | max |Δlogit| | perplexity |")
    print("|---|---|---|---|---|---|---|---|")
    for name, model, q in rows:
        m = metrics(q, f, ids)
        print(f"| {name} | {weight_bytes(model, 2) / 1e6:.1f} | {weight_bytes(model, 4) / 1e6:.1f} | "
              f"{m['top1']:.3f} | {m['kl']:.5f} | {m['rms_rel']:.4f} | {m['max_abs']:.3f} | {m['ppl']:.3f} |")


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - t:.0f} s)")
