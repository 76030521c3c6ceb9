"""qk_norm_rope through the kernels vs the plain formulas (fs_mlx/model/reference.py).

The tests cover both pairings (rotate-half and interleaved), partial rotation
(dims < head_dim: the tail is copied), every head_dim, offsets as an int, a
scalar array or one per batch row, linear position scaling, explicit
frequencies (Llama 3's) and YaRN's/LongRoPE's attention factor on the rotated
features (mscale, a runtime input: 1.0 for the others). Then the goldens that
have one (qwen2-tiny: YaRN x4; phi3-tiny: LongRoPE, partial rotation) end to
end through the kernels, against MLX's path and transformers.

Positions up to 5000 are used: there theta = p * inv_freq reaches ~5000 rad,
and one ULP of a float32 theta is ~5e-4 rad. The oracle is the plain-math
reference (fs_mlx/model/reference.py), not `mx.fast.rope`: on a Mac the
latter runs on the GPU, where MLX computes inv_freq as exp2(-d * log2(base))
and uses fast::cos/sin, which moves theta by ~3e-4 rad at these positions —
far outside float32's 1e-5. The reference and the kernel take the same
float32 inv_freq from the model's `Rope` (computed on the host once, with
MLX's CPU formula) and form theta = (position * scale) * inv_freq in the
same order, so theta is the same float on both, on every backend. What is
left is cos/sin: the C library's in the executor and MLX's CPU ops, Metal's
precise ones on a Mac (MLX compiles `metal_kernel`s in its default "safe"
math mode, and its own cos/sin ops are the precise variants): within 1-2
ULP, so float32's 1e-5 holds on both backends.
"""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import DTYPES, EXAMPLES, ORDERS, assert_close, f32, normal
from hypothesis import given, settings
from hypothesis import strategies as st

from fs_mlx.generation.forward import logits_for
from fs_mlx.loader import load
from fs_mlx.msl import settings as msl_settings
from fs_mlx.model import reference
from fs_mlx.model.rope import Rope, base_inv_freq, make_rope

HEAD_DIMS = [16, 32, 64, 80, 96, 128, 256]
GOLDEN = Path(__file__).resolve().parents[2] / "golden"


@st.composite
def rope_params(draw):
    D = draw(st.sampled_from(HEAD_DIMS))
    dims = draw(st.sampled_from([D, D, D // 2, 2 * draw(st.integers(1, D // 2))]))
    kind = draw(st.sampled_from(["base", "base", "freqs"]))
    return {
        "D": D, "dims": dims, "traditional": draw(st.booleans()),
        "base": draw(st.sampled_from([1e4, 1e6])) if kind == "base" else None,
        "freqs": kind == "freqs",
        "scale": draw(st.sampled_from([1.0, 1.0, 0.25])),
        "mscale": draw(st.sampled_from([1.0, 1.0, 1.1386, 0.7])),
        "offset_kind": draw(st.sampled_from(["int", "scalar", "per_batch"])),
        "dtype": draw(st.sampled_from(DTYPES)),
        "order": draw(st.sampled_from(ORDERS)),
        "seed": draw(st.integers(0, 2**16)),
    }


def rope_args(p, B):
    """(Rope, offset) for the drawn parameters."""
    rng = p["seed"]
    if p["freqs"]:  # periods, stretched like Llama 3.1's low frequencies
        periods = mx.array([1e4 ** (2 * i / p["dims"]) * (8.0 if i > p["dims"] // 4 else 1.0)
                            for i in range(p["dims"] // 2)], dtype=mx.float32)
        rope = Rope(p["dims"], p["traditional"], p["scale"], None, mx.reciprocal(periods), periods, p["mscale"])
    else:
        rope = Rope(p["dims"], p["traditional"], p["scale"], p["base"],
                    base_inv_freq(p["dims"], p["base"]), None, p["mscale"])
    offsets = [(rng * 7 + 977 * b) % 5000 for b in range(B)]
    offset = {"int": offsets[0], "scalar": mx.array(offsets[0]),
              "per_batch": mx.array(offsets, dtype=mx.int32)}[p["offset_kind"]]
    return rope, offset


@settings(max_examples=EXAMPLES, deadline=None)
@given(p=rope_params(), B=st.integers(1, 2), L=st.integers(1, 9), Hkv=st.integers(1, 3),
       gqa=st.integers(1, 8), norm=st.booleans(), fused_qkv=st.booleans())
def test_qk_norm_rope(backend, p, B, L, Hkv, gqa, norm, fused_qkv):
    """Qwen3's q_norm/k_norm + RoPE + transpose (norm=False: Llama's RoPE + transpose).
    fused_qkv: q and k are column slices of one [B, L, (Hq + 2 Hkv) D] matmul output
    (fs_mlx/model/fuse.py), read in place through their strides."""
    D, dtype, seed = p["D"], p["dtype"], p["seed"]
    Hq = Hkv * gqa
    if fused_qkv:
        qkv = normal((B, L, (Hq + 2 * Hkv) * D), seed, dtype, std=2.0)
        q, k, _ = mx.split(qkv, [Hq * D, (Hq + Hkv) * D], axis=-1)
        q, k = q.reshape(B, L, Hq, D), k.reshape(B, L, Hkv, D)
    else:
        q = normal((B, L, Hq, D), seed, dtype, std=2.0)
        k = normal((B, L, Hkv, D), seed + 1, dtype, std=2.0)
    qw = (1 + normal((D,), seed + 2, std=0.2)).astype(dtype) if norm else None
    kw = (1 + normal((D,), seed + 3, std=0.2)).astype(dtype) if norm else None
    args = rope_args(p, B)
    with msl_settings(order=p["order"], seed=seed):
        q_out, k_out = backend.qk_norm_rope(q, k, qw, kw, 1e-6, *args)
    rq, rk = reference.qk_norm_rope(f32(q), f32(k), qw if qw is None else f32(qw),
                                    kw if kw is None else f32(kw), 1e-6, *args)
    assert_close(q_out, rq, dtype, "q")
    assert_close(k_out, rk, dtype, "k")


def test_llama3_freqs_as_the_model_builds_them(backend):
    """The model's Llama 3.1 RoPE (fs_mlx/model/rope.py) at a long-context position."""
    rope = make_rope(64, 500000.0, False, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    q, k = normal((1, 3, 4, 64), 11), normal((1, 3, 2, 64), 12)
    got = backend.qk_norm_rope(q, k, None, None, 0.0, rope, 4093)
    want = reference.qk_norm_rope(q, k, None, None, 0.0, rope, 4093)
    for g, w in zip(got, want):
        assert_close(g, w, mx.float32)


def test_same_pipeline_for_every_position_and_size(backend):
    """Offsets, sizes and attention factors are runtime inputs: every call below generates the same
    source, hence one compile (the executor caches by source hash; Metal
    keys its pipelines by kernel name, which is built from the same things)."""
    if not backend.executor:
        return  # the generated source is the executor's to show
    from fs_mlx.kernels.rope import _offsets

    k = backend.kernel("qk_norm_rope", ["q", "k", "q_w", "k_w", "eps", "inv_freq", "offset", "scale", "mscale"],
                       ["q_out", "k_out"], row_contiguous=False)
    sources = set()
    for i, (B, L, off) in enumerate([(1, 5, 0), (2, 1, 77), (1, 900, 4000)]):
        q, kk = normal((B, L, 4, 64), i), normal((B, L, 2, 64), i + 1)
        inputs = [q, kk, mx.ones((64,)), mx.ones((64,)), mx.array(1e-6), base_inv_freq(64, 1e4),
                  _offsets(off, B), mx.array(1.0), mx.array(1.0 + i / 10)]
        _, _, tu, _ = k.generate(inputs, [mx.float32, mx.float32],
                                 [("T", mx.float32), ("TRADITIONAL", False), ("NORM", True)])
        sources.add(tu)
    assert len(sources) == 1


def test_yarn_and_longrope_as_the_model_builds_them(backend):
    """YaRN (Qwen3's 128k: factor 4) and LongRoPE (Phi-3: per-frequency factors, the
    long ones past the original length) at a long-context position: the attention
    factor is applied inside the kernel, no multiply after it."""
    yarn = make_rope(64, 1e6, False, {"rope_type": "yarn", "factor": 4.0,
                                      "original_max_position_embeddings": 32768}, 131072)
    longrope = make_rope(48, 1e4, False, {"rope_type": "longrope", "long_factor": [1.0 + i / 4 for i in range(24)],
                                          "short_factor": [1.0] * 24, "original_max_position_embeddings": 4096},
                         131072)
    for rope in (yarn, longrope.at(5000)):  # longrope: 48 of 64 features rotated
        assert rope.mscale > 1.0
        q, k = normal((1, 3, 4, 64), 21), normal((1, 3, 2, 64), 22)
        got = backend.qk_norm_rope(q, k, None, None, 0.0, rope, 4093)
        want = reference.qk_norm_rope(q, k, None, None, 0.0, rope, 4093)
        for g, w in zip(got, want):
            assert_close(g, w, mx.float32)


@pytest.mark.parametrize("name", ["qwen2-tiny", "phi3-tiny"])
def test_scaled_rope_goldens(backend, monkeypatch, name):
    """qwen2-tiny (YaRN x4, mscale 1.14) and phi3-tiny (LongRoPE, mscale 1.13, 12 of
    16 features rotated) through the kernels, with rope.scale_rotated (the MLX path's
    multiply) out of reach: all prompts' logits against MLX's path (2e-4: float32 both,
    other summation orders; tests/kernels/test_model_kernels.py) and transformers' (1e-3,
    tests/test_golden.py's bar)."""
    import fs_mlx.model.backends as backends

    meta = json.loads((GOLDEN / "vectors" / f"{name}.json").read_text())
    arrays = np.load(GOLDEN / "vectors" / f"{name}.npz")
    mlx_lm = load(GOLDEN / "checkpoints" / name, kernels="mlx")
    kernel_lm = load(GOLDEN / "checkpoints" / name, kernels=backend)
    assert kernel_lm.model.layers[0].self_attn.rope.mscale > 1.1
    for i in range(len(meta["prompts"])):
        ids = arrays[f"p{i}_ids"].tolist()
        want = logits_for(mlx_lm, ids)
        monkeypatch.setattr(backends, "scale_rotated", None)  # the kernel path must not need it
        got = logits_for(kernel_lm, ids)
        monkeypatch.undo()
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-4, err_msg=f"{name} prompt {i} vs mlx")
        np.testing.assert_allclose(got, arrays[f"p{i}_logits"], rtol=0, atol=1e-3,
                                   err_msg=f"{name} prompt {i} vs transformers")
