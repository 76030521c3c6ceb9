"""model/fuse.py: the load hook that joins q/k/v and gate/up computes what the stored layers do.

Stacked layers (same kind: dense, or quantized with one bits/group size)
and concatenated ones (parts stored differently: a mixed-precision
checkpoint) give the outputs the separate layers give; a model whose parts
are quantized differently loads and matches the plain reference; and the
ops per decoded layer are counted with a CountingBackend.
"""

import dataclasses
import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from fs_mlx.formats.quantize import quantize_tensors
from fs_mlx.formats.safetensors import load_tensors
from fs_mlx.generation.forward import logits_for
from fs_mlx.generation.generate import generate
from fs_mlx.kernels import MetalBackend
from fs_mlx.loader import LoadedModel, build_model, load
from fs_mlx.model.backends import CountingBackend, MLXBackend, ReferenceBackend
from fs_mlx.model.config import load_config
from fs_mlx.model.fuse import Concat, join
from fs_mlx.model.quantized import QuantizedLinear
from fs_mlx.model.transformer import Linear, Transformer

GOLDEN = Path(__file__).resolve().parent.parent / "golden"


def prompts(name):
    meta = json.loads((GOLDEN / "vectors" / f"{name}.json").read_text())
    arrays = np.load(GOLDEN / "vectors" / f"{name}.npz")
    return [arrays[f"p{i}_ids"].tolist() for i in range(len(meta["prompts"]))], arrays


def dense(out_dims, in_dims, seed, bias=False):
    layer = Linear(in_dims, out_dims, bias, MLXBackend())
    layer.weight = mx.random.normal((out_dims, in_dims), key=mx.random.key(seed))
    if bias:
        layer.bias = mx.random.normal((out_dims,), key=mx.random.key(seed + 100))
    return layer


def quantized(out_dims, in_dims, seed, bits, group_size=32):
    w = mx.random.normal((out_dims, in_dims), key=mx.random.key(seed))
    layer = QuantizedLinear(in_dims, out_dims, False, group_size, bits, MLXBackend())
    layer.weight, layer.scales, layer.biases = mx.quantize(w, group_size=group_size, bits=bits)
    return layer


@pytest.mark.parametrize("kind", ["dense", "dense+bias", "q4", "mixed"])
def test_join_equals_the_parts(kind):
    if kind == "mixed":  # q 8-bit, k and v 4-bit: cannot share one matrix
        parts = [quantized(48, 64, 1, 8), quantized(16, 64, 2, 4), quantized(16, 64, 3, 4)]
    elif kind == "q4":
        parts = [quantized(48, 64, 1, 4), quantized(16, 64, 2, 4), quantized(16, 64, 3, 4)]
    else:
        parts = [dense(n, 64, s, kind.endswith("bias")) for s, n in enumerate((48, 16, 16))]
    x = mx.random.normal((2, 3, 64), key=mx.random.key(9))
    want = mx.concatenate([p(x) for p in parts], axis=-1)  # [2, 3, 80]
    joined = join(parts)
    assert isinstance(joined, Concat) == (kind == "mixed")
    # The same products; a stacked matmul may sum in another order than three small ones.
    np.testing.assert_allclose(np.array(joined(x)), np.array(want), rtol=0, atol=1e-5)


def test_mixed_precision_checkpoint_loads_and_matches_the_reference():
    """qwen3-tiny quantized to 4 bits, with layer 0's q_proj at 8 bits (a per-layer
    entry, as mlx-community writes them): that layer's q/k/v run as a Concat."""
    path = GOLDEN / "checkpoints" / "qwen3-tiny"
    config = load_config(path)
    tensors, index = load_tensors(path)
    four, block = quantize_tensors(Transformer(config, ops=None), tensors, 4, 32)
    q8 = "model.layers.0.self_attn.q_proj"
    four[f"{q8}.weight"], four[f"{q8}.scales"], four[f"{q8}.biases"] = mx.quantize(
        tensors[f"{q8}.weight"], group_size=32, bits=8)
    config = dataclasses.replace(config, quantization={**block, q8: {"bits": 8, "group_size": 32}})
    ids, _ = prompts("qwen3-tiny")
    got = {}
    for backend in (MLXBackend(), ReferenceBackend()):
        model = build_model(config, dict(four), index, mx.float32, backend)
        lm = LoadedModel(model, load(path).tokenizer, config, path, mx.float32)
        got[backend.name] = logits_for(lm, ids[0])
    layers = model.layers
    assert isinstance(layers[0].self_attn.qkv_proj, Concat)
    assert isinstance(layers[1].self_attn.qkv_proj, QuantizedLinear)
    # float32 both; MLX's quantized matmul and the plain dequantize-then-matmul sum differently.
    np.testing.assert_allclose(got["mlx"], got["reference"], rtol=0, atol=1e-4)


def decode_step_counts(lm) -> dict[str, float]:
    """Ops per layer for one decoded token (the final norm and the head removed)."""
    counter = lm.model.ops
    counter.calls.clear()
    mx.eval(lm.model(mx.array([[5]])))
    counts = dict(counter.calls)
    counts["rms_norm"] -= 1  # the final norm
    counts[next(k for k in ("quantized_matmul", "linear") if k in counts)] -= 1  # lm_head
    n = len(lm.model.layers)
    return {k: v / n for k, v in counts.items() if v}


@pytest.mark.parametrize("quantize", [None, (4, 32)])
def test_ops_per_decoded_layer(quantize):
    lm = load(GOLDEN / "checkpoints" / "qwen3-tiny", kernels=CountingBackend(MLXBackend()), quantize=quantize)
    counts = decode_step_counts(lm)
    if quantize:  # the SwiGLU rides in the gate+up matmul: quantized_swiglu
        assert counts == {"rms_norm": 1, "add_rms_norm": 1, "quantized_matmul": 3, "qk_norm_rope": 1,
                          "attention": 1, "quantized_swiglu": 1}
    else:  # qkv, o, gate_up, down
        assert counts == {"rms_norm": 1, "add_rms_norm": 1, "linear": 4, "qk_norm_rope": 1,
                          "attention": 1, "swiglu": 1}


class QuantizedOnKernels(MLXBackend):
    """MLX's ops, except the quantized matmuls: ours, run by the MSL executor."""

    name = "mlx+qmv"
    kernels = MetalBackend(executor=True)

    def quantized_matmul(self, *args, **kwargs):
        return self.kernels.quantized_matmul(*args, **kwargs)

    def quantized_swiglu(self, *args, **kwargs):
        return self.kernels.quantized_swiglu(*args, **kwargs)


@pytest.mark.parametrize("quantize", [(4, 32), (8, 64)])
def test_quantized_model_on_the_kernels(quantize):
    """qwen3-tiny quantized, its matmuls through qmm (5-token prompt), qmv (decode)
    and qmv_swiglu (fused decode): the same greedy tokens as MLX's quantized_matmul."""
    ids, _ = prompts("qwen3-tiny")
    prompt = ids[0][:5]
    path = GOLDEN / "checkpoints" / "qwen3-tiny"
    kernel_lm = load(path, kernels=CountingBackend(QuantizedOnKernels()), quantize=quantize)
    mlx_lm = load(path, kernels="mlx", quantize=quantize)
    got = generate(kernel_lm, prompt, max_tokens=6, ignore_eos=True)[1]
    assert kernel_lm.model.ops.calls["quantized_swiglu"] > 0
    assert got == generate(mlx_lm, prompt, max_tokens=6, ignore_eos=True)[1]
    # float32 throughout; the kernels sum in a different order than MLX's CPU loop.
    np.testing.assert_allclose(logits_for(kernel_lm, prompt), logits_for(mlx_lm, prompt), rtol=0, atol=1e-4)
