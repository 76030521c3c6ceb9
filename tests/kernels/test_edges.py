"""The edges of every kernel's input space: tiny, empty and non-contiguous inputs.

Tiny: MLX passes an input of fewer than 8 elements as `constant`, not
`device` memory, so these shapes compile a different signature; with the
executor's Metal check (on in every test) a kernel that could not be compiled
for them on a Mac fails here. Each case is the smallest that reaches one
such input: the decode combine's (max, sum) pairs with B * Hq * splits <= 3,
q and k of 4 elements, a norm row of 4, a SwiGLU of 3.

Empty: a dimension of 0 would make a grid dimension 0, which is no launch;
the ops return the (empty) result without calling a kernel.

Non-contiguous: qk_norm_rope runs with row_contiguous=False (q and k are read
through their strides), so every other input comes in its own layout too:
the wrapper makes the frequencies and offsets contiguous.
"""

import mlx.core as mx
import pytest
from conftest import ORDERS, assert_close, f32, normal

from fs_mlx.kernels.attention import attention_decode
from fs_mlx.model import reference
from fs_mlx.model.backends import MLXBackend
from fs_mlx.model.rope import Rope, base_inv_freq, make_rope
from fs_mlx.msl import settings as msl_settings


@pytest.mark.parametrize("order", ORDERS)
def test_decode_combine_with_its_inputs_in_constant_memory(backend, order):
    """B = Hq = 1 and 2 splits: ml holds 4 floats (constant); o_part 2 x 16 (device)."""
    q, k, v = normal((1, 1, 1, 16), 1), normal((1, 1, 40, 16), 2), normal((1, 1, 40, 16), 3)
    with msl_settings(order=order):
        out = attention_decode(backend, q, k, v, scale=0.25, keys_per_split=32)
    assert_close(out, reference.attention(q, k, v, scale=0.25, mask=None), mx.float32)


@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("Hq", [1, 2])
def test_qk_norm_rope_with_q_or_k_in_constant_memory(backend, norm, Hq):
    """head_dim 4, one token: k has 4 elements (constant); q 4 (constant) or 8 (device),
    so the kernel meets q and k in different address spaces too."""
    q, k = normal((1, 1, Hq, 4), 4, std=2.0), normal((1, 1, 1, 4), 5, std=2.0)
    w = (1 + normal((4,), 6, std=0.2)) if norm else None
    rope = make_rope(4, 1e4, False, None)
    got = backend.qk_norm_rope(q, k, w, w, 1e-6, rope, 7)
    want = reference.qk_norm_rope(q, k, w, w, 1e-6, rope, 7)
    for g, r in zip(got, want):
        assert_close(g, r, mx.float32)


def test_norms_and_swiglu_with_inputs_in_constant_memory(backend):
    x, r, w = normal((1, 4), 7), normal((1, 4), 8), 1 + normal((4,), 9, std=0.2)
    assert_close(backend.rms_norm(x, w, 1e-6), reference.rms_norm(x, w, 1e-6), mx.float32)
    for got, want in zip(backend.add_rms_norm(x, r, w, 1e-6), reference.add_rms_norm(x, r, w, 1e-6)):
        assert_close(got, want, mx.float32)
    g, u = normal((3,), 10, std=3.0), normal((3,), 11)
    assert_close(backend.swiglu(g, u), reference.swiglu(g, u), mx.float32)


def _empty_cases():
    rope = make_rope(8, 1e4, False, None)
    wq, s, b = mx.quantize(normal((16, 64), 12), group_size=64, bits=4)
    return [
        ("rms_norm", (mx.zeros((0, 8)), mx.ones((8,)), 1e-6), {}),
        ("add_rms_norm", (mx.zeros((2, 0, 8)), mx.zeros((2, 0, 8)), mx.ones((8,)), 1e-6), {}),
        ("qk_norm_rope", (mx.zeros((1, 0, 2, 8)), mx.zeros((1, 0, 1, 8)), None, None, 1e-6, rope, 0), {}),
        ("attention", (mx.zeros((1, 2, 0, 8)), mx.zeros((1, 1, 5, 8)), mx.zeros((1, 1, 5, 8))),
         {"scale": 1.0, "mask": "causal"}),
        ("attention", (mx.zeros((0, 2, 1, 8)), mx.zeros((0, 1, 5, 8)), mx.zeros((0, 1, 5, 8))),
         {"scale": 1.0, "mask": None}),
        ("swiglu", (mx.zeros((0, 6)), mx.zeros((0, 6))), {}),
        ("quantized_matmul", (mx.zeros((0, 64)), wq, s, b), {"group_size": 64, "bits": 4}),
        ("quantized_swiglu", (mx.zeros((2, 0, 64)), wq, s, b), {"group_size": 64, "bits": 4}),
    ]


@pytest.mark.parametrize("op, args, kwargs", _empty_cases(), ids=lambda c: c if isinstance(c, str) else "")
def test_empty_inputs_launch_nothing(backend, monkeypatch, op, args, kwargs):
    """The result has MLX's shape and dtype, and no kernel was asked for."""
    monkeypatch.setattr(type(backend), "kernel", lambda *a, **k: pytest.fail("a kernel for an empty input"))
    got = getattr(backend, op)(*args, **kwargs)
    want = getattr(MLXBackend(), op)(*args, **kwargs)
    got, want = (list(t) if isinstance(t, tuple) else [t] for t in (got, want))
    assert [(g.shape, g.dtype) for g in got] == [(w.shape, w.dtype) for w in want]


def test_qk_norm_rope_with_strided_frequencies_and_offsets(backend):
    """inv_freq and per-batch offsets as strided views: the kernel reads them as
    plain arrays, so the wrapper must hand over contiguous copies."""
    q, k = normal((2, 3, 4, 16), 13), normal((2, 3, 2, 16), 14)
    inv = mx.repeat(base_inv_freq(16, 1e4), 2)[::2]  # the same values, stride 2
    rope = Rope(16, False, 1.0, None, inv, mx.reciprocal(inv))
    offsets = mx.array([100, -1, 2500, -1], dtype=mx.int32)[::2]  # [100, 2500], stride 2
    got = backend.qk_norm_rope(q, k, None, None, 0.0, rope, offsets)
    want = reference.qk_norm_rope(f32(q), f32(k), None, None, 0.0, rope, mx.array([100, 2500]))
    for g, r in zip(got, want):
        assert_close(g, r, mx.float32)
