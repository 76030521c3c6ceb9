"""attention (decode and prefill kernels) vs mx.fast.scaled_dot_product_attention.

Decode (one query token, metal/attention_decode.metal): a threadgroup per
(batch, G query heads sharing a KV head, split of the keys). Cases cross
every boundary it has: GQA ratios 1-8 (all G query heads of a KV head in
one threadgroup; 5 and 7 leave odd register arrays), contexts from 1
key (3 of the 4 SIMD groups idle) to several splits with a partial last one
(keys_per_split forced small so that a few hundred keys cross it), and K/V
handed over as a slice of a bigger cache buffer (read through strides).

Prefill (metal/attention_prefill.metal): 32-query tiles of 4 SIMD groups,
key tiles of 32 (16 for head_dim 256); L and S that are not multiples of
either, queries that are the last L of S keys (a cache offset), causal and
unmasked.

Template parameters are (dtype, head_dim, G) for decode and (dtype,
head_dim, causal) for prefill; everything else is a runtime value.
"""

import importlib

import mlx.core as mx
import numpy as np
import pytest
from conftest import DTYPES, EXAMPLES, ORDERS, assert_close, f32, normal
from hypothesis import given, settings
from hypothesis import strategies as st

from fs_mlx.msl import settings as msl_settings
from fs_mlx.model import reference

# The module (fs_mlx.kernels.attention the attribute is the op function)
attn = importlib.import_module("fs_mlx.kernels.attention")
HEAD_DIMS = [64, 80, 96, 128]


def cache_slice(B, H, S, D, seed, dtype, spare):
    """k or v as the KV cache hands it over: the first S rows of a bigger buffer."""
    buf = normal((B, H, S + spare, D), seed, dtype)
    return buf[:, :, :S, :]


def twin(q, k, v, scale, mask):
    return reference.attention(f32(q), f32(k), f32(v), scale=scale, mask=mask)


@settings(max_examples=EXAMPLES, deadline=None)
@given(B=st.integers(1, 2), Hkv=st.integers(1, 3), gqa=st.integers(1, 8), D=st.sampled_from(HEAD_DIMS),
       S=st.one_of(st.integers(1, 40), st.integers(41, 700)),
       keys_per_split=st.sampled_from([None, 32, 100, 256]), spare=st.sampled_from([0, 5, 256]),
       causal=st.booleans(), dtype=st.sampled_from(DTYPES), order=st.sampled_from(ORDERS),
       seed=st.integers(0, 2**16))
def test_decode(backend, B, Hkv, gqa, D, S, keys_per_split, spare, causal, dtype, order, seed):
    Hq = Hkv * gqa
    q = normal((B, Hq, 1, D), seed, dtype)
    k = cache_slice(B, Hkv, S, D, seed + 1, dtype, spare)
    v = cache_slice(B, Hkv, S, D, seed + 2, dtype, spare)
    scale = D**-0.5
    with msl_settings(order=order, seed=seed):
        if keys_per_split is None:
            out = backend.attention(q, k, v, scale=scale, mask="causal" if causal else None)
        else:
            out = attn.attention_decode(backend, q, k, v, scale=scale, keys_per_split=keys_per_split)
    assert_close(out, twin(q, k, v, scale, None), dtype)


@settings(max_examples=EXAMPLES, deadline=None)
@given(B=st.integers(1, 2), Hkv=st.integers(1, 2), gqa=st.sampled_from([1, 2, 3, 4, 8]),
       D=st.sampled_from(HEAD_DIMS), L=st.integers(2, 70), cached=st.sampled_from([0, 0, 1, 31, 40]),
       causal=st.booleans(), spare=st.sampled_from([0, 7]), dtype=st.sampled_from(DTYPES),
       order=st.sampled_from(ORDERS), seed=st.integers(0, 2**16))
def test_prefill(backend, B, Hkv, gqa, D, L, cached, causal, spare, dtype, order, seed):
    """L new queries after `cached` tokens already in the cache: S = cached + L."""
    Hq, S = Hkv * gqa, cached + L
    q = normal((B, Hq, L, D), seed, dtype)
    k = cache_slice(B, Hkv, S, D, seed + 1, dtype, spare)
    v = cache_slice(B, Hkv, S, D, seed + 2, dtype, spare)
    mask = "causal" if causal else None
    with msl_settings(order=order, seed=seed):  # (the op sends L <= 8 to the decode kernel: below)
        out = attn.attention_prefill(backend, q, k, v, scale=D**-0.5, causal=causal)
    assert_close(out, twin(q, k, v, D**-0.5, mask), dtype)


@settings(max_examples=EXAMPLES, deadline=None)
@given(B=st.integers(1, 2), Hkv=st.integers(1, 2), gqa=st.sampled_from([1, 2, 4, 5]),
       D=st.sampled_from(HEAD_DIMS + [16]), L=st.integers(2, attn.SHORT_QUERY),
       cached=st.one_of(st.integers(0, 40), st.integers(500, 700)),
       keys_per_split=st.sampled_from([None, None, 32, 100]), causal=st.booleans(),
       dtype=st.sampled_from(DTYPES), order=st.sampled_from(ORDERS), seed=st.integers(0, 2**16))
def test_short_queries(backend, B, Hkv, gqa, D, L, cached, keys_per_split, causal, dtype, order, seed):
    """A few new tokens after `cached` ones (S = cached + L) run the decode kernel, one
    query row per threadgroup row with its own causal limit; splits past a row's
    limit are empty (zeros and sum 0 in the combine)."""
    Hq, S = Hkv * gqa, cached + L
    q = normal((B, Hq, L, D), seed, dtype)
    k = cache_slice(B, Hkv, S, D, seed + 1, dtype, 5)
    v = cache_slice(B, Hkv, S, D, seed + 2, dtype, 5)
    mask = "causal" if causal else None
    with msl_settings(order=order, seed=seed):
        if keys_per_split is None:
            out = backend.attention(q, k, v, scale=D**-0.5, mask=mask)
        else:
            out = attn.attention_decode(backend, q, k, v, scale=D**-0.5, keys_per_split=keys_per_split,
                                        causal=causal)
    assert_close(out, twin(q, k, v, D**-0.5, mask), dtype)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("D,L,S", [(16, 1, 9), (32, 1, 300), (16, 5, 5), (32, 12, 20), (256, 1, 70), (256, 40, 45)])
def test_other_head_dims(backend, order, D, L, S):
    """The golden checkpoints' 16 and 32 (fewer than 32 lanes' worth of a row) and 256."""
    q, k, v = normal((1, 4, L, D), D), normal((1, 2, S, D), D + 1), normal((1, 2, S, D), D + 2)
    with msl_settings(order=order, seed=D):
        out = backend.attention(q, k, v, scale=D**-0.5, mask="causal")
        if L == 1:
            assert_close(attn.attention_decode(backend, q, k, v, scale=D**-0.5, keys_per_split=64),
                         twin(q, k, v, D**-0.5, None), mx.float32)
    assert_close(out, twin(q, k, v, D**-0.5, "causal"), mx.float32)
    if L > 1 and D > attn.MAX_PREFILL_D:  # the op hands these to MLX; the kernel still runs them
        with msl_settings(order=order, seed=D):
            out = attn.attention_prefill(backend, q, k, v, scale=D**-0.5, causal=True)
        assert_close(out, twin(q, k, v, D**-0.5, "causal"), mx.float32)


def test_qwen3_long_context_decode(backend):
    """Qwen3-0.6B's attention shape at 2k tokens with the default policy:
    8 KV heads (2 query heads each) x 16 splits of 128 keys, then the combine pass."""
    B, Hq, Hkv, D, S = 1, 16, 8, 128, 2048
    assert attn.decode_plan(B, Hq, Hkv, S) == (2, 16, 128)
    q = normal((B, Hq, 1, D), 1)
    k, v = cache_slice(B, Hkv, S, D, 2, mx.float32, 256), cache_slice(B, Hkv, S, D, 3, mx.float32, 256)
    out = backend.attention(q, k, v, scale=D**-0.5, mask=None)
    assert_close(out, twin(q, k, v, D**-0.5, None), mx.float32)


def test_peaked_scores_do_not_overflow(backend):
    """Scores of +-1e3 (keys aligned with the query): the online softmax's running
    max keeps every exp in range, across SIMD groups and splits."""
    D, S = 64, 300
    q = mx.full((1, 2, 1, D), 4.0)
    k = mx.concatenate([normal((1, 1, S - 1, D), 1), mx.full((1, 1, 1, D), 4.0)], axis=2)
    v = normal((1, 1, S, D), 2)
    for kps in (None, 64):
        out = attn.attention_decode(backend, q, k, v, scale=1.0, keys_per_split=kps)
        assert_close(out, twin(q, k, v, 1.0, None), mx.float32)
    out = attn.attention_prefill(backend, mx.full((1, 2, 3, D), 4.0), k, v, scale=1.0, causal=True)
    assert_close(out, twin(mx.full((1, 2, 3, D), 4.0), k, v, 1.0, "causal"), mx.float32)


def test_dispatch(backend):
    """One token -> decode; more -> prefill; array masks and odd head_dims -> the twin."""
    calls = []
    real = {n: getattr(attn, n) for n in ("attention_decode", "attention_prefill")}
    try:
        for n, f in real.items():
            setattr(attn, n, lambda *a, _n=n, _f=f, **kw: calls.append(_n) or _f(*a, **kw))
        (q1, q4, q9), kv = (normal((1, 2, L, 32), L) for L in (1, 4, 9)), normal((1, 1, 12, 32), 2)
        attn.attention(backend, q1, kv, kv, scale=0.2, mask=None)
        attn.attention(backend, q1, kv, kv, scale=0.2, mask="causal")
        attn.attention(backend, q4, kv, kv, scale=0.2, mask="causal")  # a short query
        attn.attention(backend, q9, kv, kv, scale=0.2, mask="causal")
        assert calls == ["attention_decode"] * 3 + ["attention_prefill"]
        bool_mask = mx.array(np.tril(np.ones((4, 12), bool), 8))
        out = attn.attention(backend, q4, kv, kv, scale=0.2, mask=bool_mask)
        q12, kv12 = normal((1, 2, 9, 12), 3), normal((1, 1, 10, 12), 4)
        out12 = attn.attention(backend, q12, kv12, kv12, scale=0.2, mask="causal")
        q256, kv256 = normal((1, 2, 9, 256), 5), normal((1, 1, 10, 256), 6)
        out256 = attn.attention(backend, q256, kv256, kv256, scale=0.2, mask="causal")
        assert len(calls) == 4
    finally:
        for n, f in real.items():
            setattr(attn, n, f)
    assert_close(out, reference.attention(q4, kv, kv, scale=0.2, mask=bool_mask), mx.float32)
    assert_close(out12, reference.attention(q12, kv12, kv12, scale=0.2, mask="causal"), mx.float32)
    assert_close(out256, reference.attention(q256, kv256, kv256, scale=0.2, mask="causal"), mx.float32)


def test_decode_plan(backend):
    """Short contexts: one launch, a threadgroup per query head. From SPLIT_FROM
    keys: grouped heads, splits filling ~128 threadgroups of >= 128 keys, none empty."""
    assert attn.decode_plan(1, 16, 8, 100) == (1, 1, 100)  # Qwen3-0.6B: 16 threadgroups, not 8
    assert attn.decode_plan(1, 32, 8, 511) == (1, 1, 511)  # 8B: 32 threadgroups, not 8
    assert attn.decode_plan(1, 16, 8, 512) == (2, 4, 128)
    assert attn.decode_plan(1, 32, 8, 4096) == (4, 16, 256)
    assert attn.decode_plan(1, 16, 8, 40000) == (2, 16, 2500)
    assert attn.decode_plan(4, 32, 8, 4096) == (4, 4, 1024)
    assert attn.decode_plan(1, 4, 1, 300, keys_per_split=32) == (4, 10, 32)  # forced (tests)
    for S in range(1, 300, 7):
        splits, chunk = attn.decode_splits(1, 1, S, 32)
        assert (splits - 1) * chunk < S <= splits * chunk
