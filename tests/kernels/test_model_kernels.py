"""Golden checkpoints end to end with every op through the kernels (--kernels msl).

The same checkpoints, prompts and bars as tests/test_golden.py, with the ops
backend "msl": every norm, RoPE, attention and SwiGLU is a Metal kernel
run by the executor (quantized matmuls too, for quantized weights; dense
matmuls stay MLX's). The MLX-backend model is loaded beside it in the same
process: each model holds its own backend, nothing is switched.
Compared with the MLX path and with transformers' logits, and greedy decoding
(KV cache: the decode attention kernel, RoPE at growing offsets) must give
the golden tokens.

Bars: the kernels compute in float32 like the MLX path, in another order
(per-row reductions, online softmax, the fused q/k/v and gate/up matmuls),
so the two paths differ by up to 8.6e-5 on logits of std ~8 (measured on
the three checkpoints' prompts; each is within 7e-5 of transformers): 2e-4
is the bar between them. Against transformers it is tests/test_golden.py's
1e-3, and its 1e-4 for the block-0 and final-norm activations.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from fs_mlx.generation.forward import logits_for
from fs_mlx.generation.generate import generate
from fs_mlx.loader import load
from fs_mlx.model.backends import CountingBackend

GOLDEN = Path(__file__).resolve().parents[2] / "golden"


@pytest.fixture(scope="module", params=["qwen3-tiny", "llama-tiny", "llama-mha", "gemma3-tiny", "phi3-tiny"])
def golden(request, backend):
    name = request.param
    meta = json.loads((GOLDEN / "vectors" / f"{name}.json").read_text())
    arrays = np.load(GOLDEN / "vectors" / f"{name}.npz")
    mlx_lm = load(GOLDEN / "checkpoints" / name, kernels="mlx")
    kernel_lm = load(GOLDEN / "checkpoints" / name, kernels=CountingBackend(backend))
    return name, meta, arrays, mlx_lm, kernel_lm


def test_logits_match_mlx_and_golden(golden, backend):
    name, meta, arrays, mlx_lm, kernel_lm = golden
    counter = kernel_lm.model.ops
    assert mlx_lm.kernels == "mlx" and kernel_lm.kernels == backend.name
    for i in range(len(meta["prompts"])):
        ids = arrays[f"p{i}_ids"].tolist()
        want = logits_for(mlx_lm, ids)
        counter.calls.clear()
        trace = {}
        got = logits_for(kernel_lm, ids, trace)
        assert counter.calls["attention"] == len(kernel_lm.model.layers)
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-4, err_msg=f"{name} prompt {i} vs mlx")
        for stage, bar in (("block0", 1e-4), ("final_norm", 1e-4)):
            np.testing.assert_allclose(trace[stage], arrays[f"p{i}_{stage}"], rtol=0, atol=bar,
                                       err_msg=f"{name} prompt {i} {stage}")
        np.testing.assert_allclose(got, arrays[f"p{i}_logits"], rtol=0, atol=1e-3,
                                   err_msg=f"{name} prompt {i} vs transformers")


def test_greedy_decoding_matches_golden(golden, backend):
    """Prefill through attention_prefill, then 16 tokens through attention_decode."""
    name, meta, arrays, _, kernel_lm = golden
    ids = arrays["p0_ids"].tolist()
    _, got, _ = generate(kernel_lm, ids, max_tokens=16, ignore_eos=True)
    assert got == arrays["p0_greedy"].tolist()[:16], name
