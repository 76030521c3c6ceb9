"""The sliding window inside the attention kernels (a runtime input, not an array mask).

A query at position p = S - L + l among the S keys sees the keys (p - W, p]
(model/window.py). The prefill kernel (metal/attention_prefill.metal) sweeps
only the key tiles some row of its 32-query tile can see; the decode kernel
(metal/attention_decode.metal) starts each row's keys at its band. The op
(fs_mlx/kernels/attention.py: attention) first slices off the keys before the
first query's band, so what the kernels see depends on the path: both are
tested, the op (sliced) and the kernels called directly on the whole context
(the skipped tiles and empty splits are then real).

Cases: windows smaller than a key tile (1, 3), about one (31-33), larger than
the 32-row query tile and than the queries (70, 500), queries after a cache
offset (a chunked prefill, or the keys a window cache kept), GQA ratios,
head dims, dtypes. Expected values: the plain formula (reference.attention
with `window`) on float32 copies; MLX's twin (MLXBackend.attention, which
builds the array mask) is checked against the same formula. Tolerances:
conftest.py's per-dtype bars (the kernels accumulate in float, in another
order).

Then the models: Mistral and Gemma 3 goldens (window 8) prefilled in chunks
through the kernels give MLX's logits and transformers'.
"""

import importlib
import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import DTYPES, EXAMPLES, ORDERS, assert_close, f32, normal
from hypothesis import given, settings
from hypothesis import strategies as st

from fs_mlx.generation.cache import KVCache, make_cache
from fs_mlx.loader import load
from fs_mlx.model import reference
from fs_mlx.model.backends import MLXBackend
from fs_mlx.msl import settings as msl_settings

attn = importlib.import_module("fs_mlx.kernels.attention")
GOLDEN = Path(__file__).resolve().parents[2] / "golden"
WINDOWS = [1, 3, 8, 31, 32, 33, 70, 500]
# Fewer examples than the other properties: each one here runs at up to ~300 keys
WINDOW_EXAMPLES = max(1, EXAMPLES // 2)


def qkv(B, Hq, Hkv, L, S, D, seed, dtype):
    """q, and k/v as the KV cache hands them over: the first S rows of a bigger buffer."""
    q = normal((B, Hq, L, D), seed, dtype)
    k = normal((B, Hkv, S + 5, D), seed + 1, dtype)[:, :, :S]
    v = normal((B, Hkv, S + 5, D), seed + 2, dtype)[:, :, :S]
    return q, k, v


def expected(q, k, v, scale, window):
    """The plain formula on float32 copies; MLX's twin must agree with it (float32 sums: 1e-5)."""
    want = reference.attention(f32(q), f32(k), f32(v), scale=scale, mask="causal", window=window)
    twin = MLXBackend().attention(f32(q), f32(k), f32(v), scale=scale, mask="causal", window=window)
    assert_close(twin, want, mx.float32, "MLX's twin")
    return want


@settings(max_examples=WINDOW_EXAMPLES, deadline=None)
@given(B=st.integers(1, 2), Hkv=st.integers(1, 2), gqa=st.sampled_from([1, 2, 4, 5]),
       D=st.sampled_from([32, 64, 128]), L=st.integers(attn.SHORT_QUERY + 1, 80),
       cached=st.sampled_from([0, 0, 7, 40, 200]), window=st.sampled_from(WINDOWS),
       through_op=st.booleans(), dtype=st.sampled_from(DTYPES), order=st.sampled_from(ORDERS),
       seed=st.integers(0, 2**16))
def test_prefill_window(backend, B, Hkv, gqa, D, L, cached, window, through_op, dtype, order, seed):
    """L new queries after `cached` keys (S = cached + L) through a window."""
    Hq, S = Hkv * gqa, cached + L
    q, k, v = qkv(B, Hq, Hkv, L, S, D, seed, dtype)
    with msl_settings(order=order, seed=seed):
        if through_op:
            out = backend.attention(q, k, v, scale=D**-0.5, mask="causal", window=window)
        else:
            out = attn.attention_prefill(backend, q, k, v, scale=D**-0.5, causal=True, window=window)
    assert_close(out, expected(q, k, v, D**-0.5, window), dtype)


@settings(max_examples=WINDOW_EXAMPLES, deadline=None)
@given(B=st.integers(1, 2), Hkv=st.integers(1, 2), gqa=st.sampled_from([1, 2, 3, 8]),
       D=st.sampled_from([32, 64, 128]), L=st.integers(1, attn.SHORT_QUERY),
       cached=st.one_of(st.integers(0, 40), st.integers(300, 600)), window=st.sampled_from(WINDOWS),
       keys_per_split=st.sampled_from([None, None, 32, 100]), dtype=st.sampled_from(DTYPES),
       order=st.sampled_from(ORDERS), seed=st.integers(0, 2**16))
def test_decode_window(backend, B, Hkv, gqa, D, L, cached, window, keys_per_split, dtype, order, seed):
    """Decoding (L = 1) and short queries through a window. keys_per_split=None: the op
    (sliced keys, its own split plan); else the kernel on every key with forced splits,
    so that whole splits fall before a row's band (empty: zeros, sum 0, in the combine)."""
    Hq, S = Hkv * gqa, cached + L
    q, k, v = qkv(B, Hq, Hkv, L, S, D, seed, dtype)
    with msl_settings(order=order, seed=seed):
        if keys_per_split is None:
            out = backend.attention(q, k, v, scale=D**-0.5, mask="causal", window=window)
        else:
            out = attn.attention_decode(backend, q, k, v, scale=D**-0.5, keys_per_split=keys_per_split,
                                        causal=True, window=window)
    assert_close(out, expected(q, k, v, D**-0.5, window), dtype)


def test_window_dispatch(backend, monkeypatch):
    """The op hands the window to the kernels (no array mask, no MLX fallback) and
    slices off the keys no query sees; array masks and head_dims the prefill kernel
    does not take still go to MLX, with the window built into the mask."""
    calls = []
    for name in ("attention_decode", "attention_prefill"):
        real = getattr(attn, name)
        monkeypatch.setattr(attn, name, lambda *a, _n=name, _f=real, **kw: calls.append(
            (_n, a[2].shape[2], kw["window"])) or _f(*a, **kw))
    monkeypatch.setattr(attn.MLXBackend, "attention", lambda *a, _f=MLXBackend.attention, **kw: calls.append(
        ("mlx", a[3].shape[2], kw.get("window"))) or _f(*a, **kw))
    q1, q40, kv = normal((1, 2, 1, 32), 1), normal((1, 2, 40, 32), 2), normal((1, 1, 300, 32), 3)
    backend.attention(q1, kv, kv, scale=0.2, mask=None, window=8)
    backend.attention(q40, kv, kv, scale=0.2, mask="causal", window=8)
    backend.attention(q40, kv, kv, scale=0.2, mask="causal", window=1000)  # wider than the context
    assert calls == [("attention_decode", 8, 8), ("attention_prefill", 47, 8), ("attention_prefill", 300, 1000)]
    calls.clear()
    bool_mask = mx.array(np.tril(np.ones((40, 300), bool), 260))
    out = backend.attention(q40, kv, kv, scale=0.2, mask=bool_mask, window=8)
    q12, kv12 = normal((1, 2, 12, 12), 4), normal((1, 1, 30, 12), 5)  # head_dim 12: not a multiple of 8
    out12 = backend.attention(q12, kv12, kv12, scale=0.2, mask="causal", window=8)
    assert [c[0] for c in calls] == ["mlx", "mlx"]
    assert_close(out, reference.attention(q40, kv, kv, scale=0.2, mask=bool_mask, window=8), mx.float32)
    assert_close(out12, reference.attention(q12, kv12, kv12, scale=0.2, mask="causal", window=8), mx.float32)


@pytest.mark.parametrize("name", ["mistral-tiny", "gemma3-tiny"])
@pytest.mark.parametrize("cache_kind", ["window", "full"])
def test_chunked_prefill_matches_mlx_and_golden(backend, monkeypatch, name, cache_kind):
    """The longest golden prompt (56 tokens, window 8: every chunk crosses it)
    prefilled in chunks of 20, 12 and 24 through the kernels, with the window caches
    (S = the 7 kept keys + the chunk) and with full caches (S = everything so far: the
    kernels skip what lies before the band). Bars as tests/kernels/test_model_kernels.py:
    2e-4 against MLX (float32 both, other summation orders), 1e-3 against transformers."""
    meta = json.loads((GOLDEN / "vectors" / f"{name}.json").read_text())
    arrays = np.load(GOLDEN / "vectors" / f"{name}.npz")
    i = max(range(len(meta["prompts"])), key=lambda j: len(arrays[f"p{j}_ids"]))
    ids = arrays[f"p{i}_ids"].tolist()
    assert len(ids) == 56
    windows = []
    real = attn.attention_prefill
    monkeypatch.setattr(attn, "attention_prefill", lambda *a, **kw: windows.append(kw["window"]) or real(*a, **kw))

    def chunked(kernels):
        lm = load(GOLDEN / "checkpoints" / name, kernels=kernels)
        cache = make_cache(lm.model) if cache_kind == "window" else [KVCache() for _ in lm.model.layers]
        out, pos = [], 0
        for size in (20, 12, 24):
            out.append(lm.model(mx.array([ids[pos:pos + size]]), cache=cache)[0].astype(mx.float32))
            pos += size
        return np.array(mx.concatenate(out, axis=0)), lm

    want, _ = chunked("mlx")
    got, lm = chunked(backend)
    local = [layer.self_attn.window for layer in lm.model.layers if layer.self_attn.window]
    assert local and set(local) == {8}
    # every chunk ran the prefill kernel in every layer, the local ones with their window
    assert sorted(windows) == sorted([0] * (len(lm.model.layers) - len(local)) * 3 + local * 3)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-4, err_msg=f"{name} vs mlx")
    np.testing.assert_allclose(got, arrays[f"p{i}_logits"], rtol=0, atol=1e-3, err_msg=f"{name} vs transformers")
