"""Tiny random configs: shapes, dtypes, and the KV cache agreeing with no cache."""

import mlx.core as mx
import numpy as np
import pytest

from checkpoints import random_model
from fs_mlx.model.backends import CountingBackend, MLXBackend
from fs_mlx.generation.cache import make_cache

CONFIGS = {
    "qwen3-gqa2": {},
    "llama-gqa4-untied": dict(model_type="llama", num_attention_heads=8, num_key_value_heads=2,
                              head_dim=16, tie_word_embeddings=False),
    "llama-mha": dict(model_type="llama", num_attention_heads=4, num_key_value_heads=4, head_dim=None),
    "qwen3-mqa": dict(num_attention_heads=6, num_key_value_heads=1, head_dim=8, hidden_size=48),
}
# fp32 on the CPU: cached and uncached attention sum the same terms in a different
# order (a [L, S] matmul vs one row at a time), so they agree to rounding, not bits.
TOL = 1e-4


@pytest.mark.parametrize("name", CONFIGS)
def test_shapes_and_dtype(name):
    model = random_model(**CONFIGS[name])
    out = model(mx.array([[1, 2, 3], [4, 5, 6]]))
    assert out.shape == (2, 3, model.config.vocab_size) and out.dtype == mx.float32


@pytest.mark.parametrize("name", CONFIGS)
def test_cached_decode_equals_full_recompute(name):
    model = random_model(**CONFIGS[name])
    tokens = [3, 14, 15, 92, 65, 35, 89, 79, 32, 38]
    full = model(mx.array([tokens]))[0]  # [T, vocab], no cache
    cache = make_cache(model)
    steps = [model(mx.array([tokens[:4]]), cache=cache)[0]]  # prefill 4
    for t in tokens[4:]:
        steps.append(model(mx.array([[t]]), cache=cache)[0])  # then one at a time
    cached = mx.concatenate(steps)
    np.testing.assert_allclose(np.array(cached), np.array(full), atol=TOL, rtol=0)
    assert cache[0].offset == len(tokens)


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_chunked_prefill_equals_whole(chunk):
    model = random_model(**CONFIGS["llama-gqa4-untied"])
    tokens = list(range(20, 45))
    whole = model(mx.array([tokens]))[0]
    cache = make_cache(model)
    parts = [model(mx.array([tokens[i:i + chunk]]), cache=cache)[0]
             for i in range(0, len(tokens), chunk)]
    np.testing.assert_allclose(np.array(mx.concatenate(parts)), np.array(whole), atol=TOL, rtol=0)


def test_cache_grows_past_step_and_trims():
    from fs_mlx.generation import cache as cache_mod

    model = random_model()
    tokens = np.random.default_rng(0).integers(0, 300, cache_mod.STEP + 5).tolist()
    cache = make_cache(model)
    model(mx.array([tokens]), cache=cache)
    assert cache[0].keys.shape[2] == 2 * cache_mod.STEP  # grew in whole steps
    # Trimming the last token and re-feeding it reproduces the last logits.
    last = model(mx.array([[7]]), cache=cache)[0, -1]
    for c in cache:
        c.trim(1)
    again = model(mx.array([[7]]), cache=cache)[0, -1]
    np.testing.assert_allclose(np.array(again), np.array(last), atol=TOL, rtol=0)


def test_batch_rows_are_independent():
    model = random_model()
    a, b = [1, 2, 3, 4], [9, 8, 7, 6]
    both = model(mx.array([a, b]))
    np.testing.assert_allclose(np.array(both[1]), np.array(model(mx.array([b]))[0]), atol=TOL, rtol=0)


def test_backend_calls_per_layer():
    model = random_model(ops=CountingBackend(MLXBackend()))  # qwen3: q_norm and k_norm ride in qk_norm_rope
    model(mx.array([[1, 2]]))
    calls, n = model.ops.calls, model.config.num_hidden_layers
    # Per block: the input norm, then the residual add fused with the second norm.
    assert calls["rms_norm"] == n + 1 and calls["add_rms_norm"] == n  # + the final norm
    assert calls["qk_norm_rope"] == n and calls["attention"] == n and calls["swiglu"] == n
    assert calls["linear"] == 4 * n + 1  # qkv o gate_up down, + lm_head


def test_two_backends_side_by_side_in_one_process():
    """One checkpoint loaded twice, with MLX's ops and with the plain reference: each
    model keeps its own backend (no process-wide switch), and they agree."""
    from pathlib import Path

    from fs_mlx.generation.forward import logits_for
    from fs_mlx.loader import load

    path = Path(__file__).resolve().parent.parent / "golden" / "checkpoints" / "llama-tiny"
    fast, plain = load(path, kernels="mlx"), load(path, kernels="reference")
    assert fast.model.layers[0].self_attn.ops is fast.model.ops and fast.kernels == "mlx"
    assert plain.model.layers[0].mlp.down_proj.ops is plain.model.ops and plain.kernels == "reference"
    ids = [1, 5, 9, 200, 3, 77]
    a, b = logits_for(fast, ids), logits_for(plain, ids)  # interleaved: nothing to switch back
    assert np.array_equal(logits_for(fast, ids), a)
    # float32 both: mx.fast's fused kernels and the plain formulas round in another order.
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
