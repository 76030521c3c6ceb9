"""fs_mlx/cpu: the norms, RoPE and attention (cpu/norm.cpp, rope.cpp, attention.cpp)
against the formulas of fs_mlx/model/reference.py.

Properties (hypothesis) over what the kernels handle differently: every float
dtype; strided inputs (q/k split out of one product, keys and values as a
slice of a longer cache buffer, masks broadcast from [L, S]); grouped-query
heads; causal, bool and additive masks, sliding windows; one start position or one per batch
row; partial and interleaved rotary, yarn's attention factor, Qwen3's per-head
norm. The whole models through these kernels are checked against transformers
by the goldens (tests/test_golden.py), since MLXBackend uses them on a CPU.
Budget: a few seconds.

Tolerances. Both sides compute in float32 and round once to the output dtype;
they differ in summation order and in the cos/sin/exp implementations (a few
float32 ulps). So: 1e-5 relative to the magnitudes summed (|x| for a norm or a
rotation, max |v| for attention, whose output is a convex combination of the
values), plus one ulp of a float16/bfloat16 output. Intermediates are rounded
where the reference rounds them (Qwen3's normed q/k are arrays of the model's
dtype before RoPE reads them), so a half-precision input gives the same
rounded intermediate on both sides up to that one ulp, which the rotation then
carries: one more ulp of the input's magnitude.
"""

from __future__ import annotations

import math
import os

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fs_mlx import cpu
from fs_mlx.model import reference
from fs_mlx.model.rope import make_rope

DTYPES = [mx.float32, mx.float16, mx.bfloat16]
ULP = {mx.float32: 0.0, mx.float16: 2.0**-10, mx.bfloat16: 2.0**-7}
EXAMPLES = int(os.environ.get("FSX_KERNEL_EXAMPLES", "150")) // 3

pytestmark = pytest.mark.skipif(not cpu.available(), reason=f"fsx CPU kernels unavailable: {cpu.STATUS}")


def rand(shape, seed, dtype=mx.float32):
    return mx.random.normal(shape, key=mx.random.key(seed)).astype(dtype)


def f32(a):
    return np.array(a.astype(mx.float32))


def assert_close(y, ref, magnitude, dtype, carried=0.0):
    """|y - ref| <= 1e-5 * magnitude + ulp(dtype) * (|ref| + carried) (module docstring)."""
    assert y.shape == ref.shape and y.dtype == ref.dtype, (y.shape, ref.shape, y.dtype, ref.dtype)
    err = np.abs(f32(y) - f32(ref))
    allowed = 1e-5 * np.asarray(magnitude) + ULP[dtype] * (np.abs(f32(ref)) + carried) + 1e-30
    worst = np.unravel_index(np.argmax(err / allowed), err.shape)
    assert (err <= allowed).all(), f"at {worst}: {f32(y)[worst]} vs {f32(ref)[worst]}"


# --- RMSNorm ---------------------------------------------------------------------------

@settings(max_examples=EXAMPLES, deadline=None)
@given(rows=st.integers(1, 9), d=st.integers(1, 200), dtype=st.sampled_from(DTYPES),
       strided=st.booleans(), seed=st.integers(0, 2**16))
def test_rms_norm_and_add_rms_norm_match_the_formula(rows, d, dtype, strided, seed):
    x = rand((rows, 2 * d), seed, dtype)[:, ::2] if strided else rand((rows, d), seed, dtype)
    r, w = rand((rows, d), seed + 1, dtype), rand((d,), seed + 2, dtype)
    eps = 1e-6
    ref = reference.rms_norm(x, w, eps)
    # the normalised values are O(1) times |w|
    assert_close(cpu.rms_norm(x, w, eps), ref, np.abs(f32(ref)) + 1, dtype)
    h, y = cpu.add_rms_norm(x, r, w, eps)
    h_ref, y_ref = reference.add_rms_norm(x, r, w, eps)
    assert_close(h, h_ref, 0, dtype)  # one rounded add on both sides: identical
    assert_close(y, y_ref, np.abs(f32(y_ref)) + 1, dtype)


# --- RoPE (and Qwen3's per-head norm) ----------------------------------------------------

SCALINGS = [None, {"rope_type": "linear", "factor": 4.0},
            {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
            {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
             "original_max_position_embeddings": 64}]


@settings(max_examples=EXAMPLES, deadline=None)
@given(b=st.integers(1, 3), L=st.integers(1, 6), hkv=st.integers(1, 3), groups=st.integers(1, 3),
       half=st.integers(1, 24), partial=st.booleans(), traditional=st.booleans(),
       scaling=st.sampled_from(SCALINGS), norm=st.booleans(), per_row=st.booleans(),
       offset=st.integers(0, 5000), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_qk_norm_rope_matches_the_formula(b, L, hkv, groups, half, partial, traditional, scaling,
                                          norm, per_row, offset, dtype, seed):
    D = 2 * half + (6 if partial else 0)  # partial rotary: the last 6 features pass through
    hq = hkv * groups
    rope = make_rope(2 * half, 10000.0, traditional, scaling, 128)
    # q, k as the model hands them: views of one [B, L, (Hq + 2 Hkv) D] product
    qkv = rand((b, L, (hq + 2 * hkv) * D), seed, dtype)
    q = qkv[..., : hq * D].reshape(b, L, hq, D)
    k = qkv[..., hq * D: (hq + hkv) * D].reshape(b, L, hkv, D)
    qw, kw = (rand((D,), seed + 1, dtype), rand((D,), seed + 2, dtype)) if norm else (None, None)
    start = mx.array([offset + 7 * i for i in range(b)], dtype=mx.int32) if per_row else offset
    out = cpu.qk_norm_rope(q, k, qw, kw, 1e-6, rope, start)
    ref = reference.qk_norm_rope(q, k, qw, kw, 1e-6, rope, start)
    for y, r in zip(out, ref):
        # a rotation keeps |x|; the norm makes it O(|w|); yarn's factor scales it
        mag = (np.abs(f32(r)) + 1) * rope.mscale
        assert_close(y, r, mag, dtype, carried=np.abs(f32(r)).max() if norm else 0.0)


# --- attention -------------------------------------------------------------------------

def visible_mask(kind, b, hq, L, S, seed):
    """None, "causal", or an array mask of a shape MLX would broadcast; each row sees >= 1 key."""
    if kind in (None, "causal"):
        return kind
    shape = {"LS": (L, S), "1HLS": (1, hq, L, S), "B1LS": (b, 1, L, S)}[kind[1]]
    keep = mx.random.uniform(shape=shape, key=mx.random.key(seed)) < 0.6
    # every query sees at least its own position (the window's, and causal's, last key)
    keep = mx.logical_or(keep, mx.arange(S)[None, :] == (S - L + mx.arange(L))[:, None])
    if kind[0] == "bool":
        return keep
    return mx.where(keep, rand(shape, seed + 1), -mx.inf)  # additive, -inf where hidden


@settings(max_examples=EXAMPLES, deadline=None)
@given(b=st.integers(1, 2), hkv=st.integers(1, 3), groups=st.sampled_from([1, 2, 3, 4]),
       L=st.integers(1, 7), past=st.integers(0, 40), d=st.sampled_from([8, 12, 32, 64, 80]),
       mask=st.sampled_from([None, "causal", ("bool", "LS"), ("bool", "B1LS"), ("float", "1HLS"),
                             ("float", "LS")]),
       window=st.sampled_from([None, 1, 3, 8, 64]), dtype=st.sampled_from(DTYPES),
       spare=st.integers(0, 9), seed=st.integers(0, 2**16))
def test_attention_matches_the_formula(b, hkv, groups, L, past, d, mask, window, dtype, spare, seed):
    hq, S = hkv * groups, past + L
    q = rand((b, L, hq, d), seed, dtype).transpose(0, 2, 1, 3)  # [B, Hq, L, D], strided
    # keys/values: the first S positions of a cache buffer with `spare` free slots
    k = rand((b, hkv, S + spare, d), seed + 1, dtype)[:, :, :S]
    v = rand((b, hkv, S + spare, d), seed + 2, dtype)[:, :, :S]
    m = visible_mask(mask, b, hq, L, S, seed + 3)
    scale = 1 / math.sqrt(d)
    assert cpu.handles_attention(q, k, v, m, window)
    y = cpu.attention(q, k, v, scale=scale, mask=m, window=window)
    ref = reference.attention(q, k, v, scale=scale, mask=m, window=window)
    assert_close(y, ref, np.abs(f32(v)).max(), dtype)


def test_a_hidden_key_is_never_read():
    """A masked-out key's value may be anything (a padded slot): it must not reach the output,
    not even as 0 * NaN. A row that sees no key at all gives zeros (MLX's ops give NaN)."""
    q, k = rand((1, 2, 2, 8), 0), rand((1, 1, 3, 8), 1)
    v = mx.concatenate([rand((1, 1, 2, 8), 2), mx.full((1, 1, 1, 8), mx.nan)], axis=2)
    keep = mx.array([[True, True, False], [False, False, False]])
    y = np.array(cpu.attention(q, k, v, scale=0.5, mask=keep))
    ref = np.array(reference.attention(q[:, :, :1], k[:, :, :2], v[:, :, :2], scale=0.5, mask=None))
    np.testing.assert_allclose(y[:, :, :1], ref, rtol=1e-5, atol=1e-6)  # float32 rounding only
    assert (y[:, :, 1] == 0).all()


def test_a_start_position_given_as_a_0d_array_is_one_start():
    rope = make_rope(8, 10000.0, False, None, 64)
    q, k = rand((1, 2, 2, 8), 0), rand((1, 2, 1, 8), 1)
    for y, r in zip(cpu.qk_norm_rope(q, k, None, None, 0.0, rope, mx.array(5)),
                    reference.qk_norm_rope(q, k, None, None, 0.0, rope, 5)):
        np.testing.assert_allclose(np.array(y), np.array(r), rtol=0, atol=1e-6)  # |x| ~ 1: float32 rounding


def test_what_the_kernels_do_not_take_goes_to_mlx():
    q, k = mx.zeros((1, 2, 3, 8)), mx.zeros((1, 1, 2, 8))
    assert not cpu.handles_attention(q, k, k, "causal")  # 3 queries, 2 keys: not causal
    assert not cpu.handles_attention(q.astype(mx.int32), k, k, None)
    assert not cpu.handles_norm(mx.zeros((2, 4)), mx.zeros((5,)))
    assert not cpu.handles_rope(mx.zeros((2, 4)), mx.zeros((2, 4)))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="multiple of kv heads"):
        cpu.attention(mx.zeros((1, 3, 1, 8)), mx.zeros((1, 2, 4, 8)), mx.zeros((1, 2, 4, 8)),
                      scale=1.0, mask=None)
    with pytest.raises(ValueError, match=r"w \[D\]"):
        cpu.rms_norm(mx.zeros((2, 4)), mx.zeros((5,)), 1e-6)
