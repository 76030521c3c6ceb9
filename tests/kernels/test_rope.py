"""rope and the fused qk_norm_rope through the kernels vs the MLX twins.

rope covers both pairings (rotate-half and interleaved), partial rotation
(dims < head_dim: the tail is copied), every head_dim, offsets as an int, a
scalar array or one per batch row, linear position scaling and explicit
frequencies (Llama 3's). Heads are rotated 4 per thread (metal/rope.metal),
so head counts that are not a multiple of 4 leave a partial block.

Positions up to 5000 are used: there theta = p * inv_freq reaches ~5000 rad,
and a float32 theta carries an absolute error of ~3e-4 rad. Both sides form
theta from the same float32 inv_freq (the kernels get it from the host,
computed with the twin's formula) and the same float32 position, so theta
is bit-identical and only cos/sin differ (1-2 ULP): float32's 1e-5 holds.
"""

import mlx.core as mx
from conftest import DTYPES, EXAMPLES, ORDERS, assert_close, f32, normal
from hypothesis import given, settings
from hypothesis import strategies as st

from fs_mlx import kernels
from fs_mlx.msl import settings as msl_settings
from fs_mlx.ops import reference

HEAD_DIMS = [16, 32, 64, 80, 96, 128, 256]


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
        "offset_kind": draw(st.sampled_from(["int", "scalar", "per_batch"])),
        "dtype": draw(st.sampled_from(DTYPES)),
        "order": draw(st.sampled_from(ORDERS)),
        "seed": draw(st.integers(0, 2**16)),
    }


def rope_args(p, B):
    rng = p["seed"]
    freqs = None
    if p["freqs"]:  # periods, stretched like Llama 3.1's low frequencies
        freqs = mx.array([1e4 ** (2 * i / p["dims"]) * (8.0 if i > p["dims"] // 4 else 1.0)
                          for i in range(p["dims"] // 2)], dtype=mx.float32)
    offsets = [(rng * 7 + 977 * b) % 5000 for b in range(B)]
    offset = {"int": offsets[0], "scalar": mx.array(offsets[0]),
              "per_batch": mx.array(offsets, dtype=mx.int32)}[p["offset_kind"]]
    return dict(traditional=p["traditional"], base=p["base"], scale=p["scale"], offset=offset,
                freqs=freqs)


@settings(max_examples=EXAMPLES, deadline=None)
@given(p=rope_params(), B=st.integers(1, 3), NH=st.integers(1, 9), L=st.integers(1, 12),
       three_d=st.booleans())
def test_rope(p, B, NH, L, three_d):
    shape = (B, L, p["D"]) if three_d else (B, NH, L, p["D"])
    x = normal(shape, p["seed"], p["dtype"])
    args = rope_args(p, B)
    with msl_settings(order=p["order"], seed=p["seed"]):
        out = kernels.rope(x, p["dims"], **args)
    assert_close(out, reference.rope(f32(x), p["dims"], **args), p["dtype"])


@settings(max_examples=EXAMPLES, deadline=None)
@given(p=rope_params(), B=st.integers(1, 2), L=st.integers(1, 9), Hkv=st.integers(1, 3),
       gqa=st.integers(1, 8), norm=st.booleans(), fused_qkv=st.booleans())
def test_qk_norm_rope(p, B, L, Hkv, gqa, norm, fused_qkv):
    """Qwen3's q_norm/k_norm + RoPE + transpose (norm=False: Llama's RoPE + transpose).
    fused_qkv: q and k are column slices of one [B, L, (Hq + 2 Hkv) D] matmul output
    (fs_mlx/fuse.py), read in place through their strides."""
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
        q_out, k_out = kernels.qk_norm_rope(q, k, qw, kw, 1e-6, p["dims"], **args)
    rq, rk = reference.qk_norm_rope(f32(q), f32(k), qw if qw is None else f32(qw),
                                    kw if kw is None else f32(kw), 1e-6, p["dims"], **args)
    assert_close(q_out, rq, dtype, "q")
    assert_close(k_out, rk, dtype, "k")


def test_llama3_freqs_as_the_model_builds_them():
    """The model's Llama 3.1 periods (fs_mlx/model.py) at a long-context position."""
    from fs_mlx.model import _llama3_freqs

    freqs = _llama3_freqs(64, 500000.0, {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                         "original_max_position_embeddings": 8192})
    x = normal((1, 4, 3, 64), 11)
    args = dict(traditional=False, base=None, scale=1.0, offset=4093, freqs=freqs)
    assert_close(kernels.rope(x, 64, **args), reference.rope(x, 64, **args), mx.float32)


def test_same_pipeline_for_every_position_and_size():
    """Offsets and sizes are runtime inputs: every call below generates the same
    source, hence one compile (the executor caches by source hash; Metal
    keys its pipelines by kernel name, which is built from the same things)."""
    if not kernels.using_executor():
        return  # the generated source is the executor's to show
    from fs_mlx.kernels import kernel
    from fs_mlx.kernels.rope import _offsets, inv_freq

    k = kernel("rope", ["x", "inv_freq", "offset", "scale", "n_heads"], ["out"])
    sources = set()
    for i, (shape, off) in enumerate([((1, 2, 5, 64), 0), ((2, 3, 1, 64), 77), ((1, 5, 900, 64), 4000)]):
        inputs = [normal(shape, i), inv_freq(64, 1e4, None), _offsets(off, shape[0]),
                  mx.array(1.0), mx.array(shape[1], dtype=mx.int32)]
        _, _, tu, _ = k.generate(inputs, [mx.float32], [("T", mx.float32), ("TRADITIONAL", False)])
        sources.add(tu)
    assert len(sources) == 1
