"""qmv, qmm and qmv_swiglu through the MSL executor, against mx.quantized_matmul.

Every test runs here (Linux, no Metal): the executor runs the Metal source on
the CPU, in forward, reverse and random thread order (a race shows up as an
order-dependent result). On a Mac the same kernels run on the GPU.

The reference is mx.quantized_matmul on float32 copies of the same x, scales
and biases, rounded to the kernel's dtype (conftest.py: tolerances and why).
MLX's CPU op in float16/bfloat16 is not a usable bar: it accumulates in that
dtype (measured on 96x256: 0.5 % of the output scale off in float16, 3.5 % in
bfloat16).

Budget: sizes are runtime values, so only (dtype, bits) and the SwiGLU flag
make template instantiations: 3 x 2 x {qmv, qmv_swiglu, qmm} = 18 compiles
(~0.3 s each, cached by source hash) plus a few for the constant-memory and
mixed-dtype cases.
"""

import mlx.core as mx
import numpy as np
import pytest
from conftest import DTYPES, EXAMPLES, ORDERS, assert_close, f32
from hypothesis import given, settings
from hypothesis import strategies as st

from fs_mlx.kernels import quantized as q
from fs_mlx.msl import settings as msl_settings
from fs_mlx.model import reference


def quantized(seed: int, N: int, K: int, group_size: int, bits: int, dtype):
    """Random weights in MLX's format, scales/biases stored in `dtype`."""
    w = mx.random.normal((N, K), key=mx.random.key(seed))
    wq, scales, biases = mx.quantize(w, group_size=group_size, bits=bits)
    return wq, scales.astype(dtype), biases.astype(dtype)


def reference_matmul(x, wq, scales, biases, group_size, bits):
    return mx.quantized_matmul(f32(x), wq, f32(scales), f32(biases), transpose=True,
                               group_size=group_size, bits=bits)


# K is a multiple of the group size; 1-6 groups of 32-128 reach K = 768, across
# qmv's 512 (4-bit) / 256 (8-bit) values per SIMD-group step and qmm's BK = 32.
# N >= 8 keeps w and scales at >= 8 elements: smaller inputs go to constant
# memory, another signature and compile (tested once, below).
shapes = st.fixed_dictionaries({
    "bits": st.sampled_from([4, 8]),
    "group_size": st.sampled_from([32, 64, 128]),
    "groups": st.integers(1, 6),
    "N": st.integers(8, 80),  # odd N: a partial last SIMD group / threadgroup / tile
    "dtype": st.sampled_from(DTYPES),
    "order": st.sampled_from(ORDERS),
    "seed": st.integers(0, 2**16),
})


@settings(max_examples=EXAMPLES, deadline=None)
@given(s=shapes, batch=st.sampled_from([(1,), (1, 1), (2,), (3, 1)]))
def test_qmv(backend, s, batch):
    """Decode: x [*batch, K]. One row goes through quantized_matmul (qmv);
    several rows run qmv directly, one vector per z of the grid."""
    bits, gs, dtype = s["bits"], s["group_size"], s["dtype"]
    K, N = gs * s["groups"], s["N"]
    wq, scales, biases = quantized(s["seed"], N, K, gs, bits, dtype)
    x = mx.random.normal((*batch, K), key=mx.random.key(s["seed"] + 1)).astype(dtype)
    with msl_settings(order=s["order"], seed=s["seed"]):
        if x.size == K:
            out = q.quantized_matmul(backend, x, wq, scales, biases, group_size=gs, bits=bits)
        else:
            out = q.qmv(backend, x.reshape(-1, K), wq, scales, biases, group_size=gs, bits=bits)
    ref = reference_matmul(x, wq, scales, biases, gs, bits)
    assert out.dtype == dtype
    assert_close(out, ref.reshape(out.shape), dtype)


@settings(max_examples=EXAMPLES, deadline=None)
@given(s=shapes, B=st.integers(1, 2), L=st.integers(1, 40))
def test_qmm(backend, s, B, L):
    """Prefill: x [B, L, K] with B * L >= 2 rows (up to 80: partial 32-row tiles),
    through qmm itself (quantized_matmul sends fewer than ~14 rows to qmv)."""
    bits, gs, dtype = s["bits"], s["group_size"], s["dtype"]
    K, N = gs * s["groups"], s["N"]
    if B * L == 1:
        L = 2
    wq, scales, biases = quantized(s["seed"], N, K, gs, bits, dtype)
    x = mx.random.normal((B, L, K), key=mx.random.key(s["seed"] + 1)).astype(dtype)
    with msl_settings(order=s["order"], seed=s["seed"]):
        out = q.qmm(backend, x.reshape(B * L, K), wq, scales, biases, group_size=gs, bits=bits).reshape(B, L, N)
    assert out.shape == (B, L, N) and out.dtype == dtype
    assert_close(out, reference_matmul(x, wq, scales, biases, gs, bits), dtype)


@settings(max_examples=EXAMPLES, deadline=None)
@given(s=shapes, rows=st.sampled_from([1, 2, 3, 9, 20]))
def test_quantized_swiglu(backend, s, rows):
    """w = [gate; up] (2N rows): up to 13 rows run qmv_swiglu (SwiGLU in the
    epilogue, one vector per z; 2 and 3 call it directly), 20 go through qmm +
    a SwiGLU pass."""
    bits, gs, dtype = s["bits"], s["group_size"], s["dtype"]
    K, N = gs * s["groups"], s["N"]
    wq, scales, biases = quantized(s["seed"], 2 * N, K, gs, bits, dtype)
    x = mx.random.normal((rows, K), key=mx.random.key(s["seed"] + 1)).astype(dtype)
    with msl_settings(order=s["order"], seed=s["seed"]):
        if rows in (2, 3):
            out = q.qmv(backend, x, wq, scales, biases, group_size=gs, bits=bits, swiglu=True)
        else:
            out = q.quantized_swiglu(backend, x, wq, scales, biases, group_size=gs, bits=bits)
    # The twin on float32 copies: SwiGLU of float32 products, then rounded once.
    ref = reference.quantized_swiglu(f32(x), wq, f32(scales), f32(biases), group_size=gs, bits=bits)
    assert out.shape == (rows, N) and out.dtype == dtype
    assert_close(out, ref, dtype)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("bits,group_size,N,K,M", [
    (4, 32, 1, 32, 1),    # w 4 words, scales 1: every input in constant memory
    (8, 128, 1, 128, 1),  # w 32 words (device), scales/biases 1 (constant)
    (4, 64, 3, 64, 5),    # a 3-row matrix (qmv, and qmm below: one tile, mostly empty)
])
def test_tiny_matrices(backend, order, bits, group_size, N, K, M):
    """Inputs under 8 elements are `constant` buffers in MLX's signature: the
    kernels must compile and read them there too."""
    wq, scales, biases = quantized(N + K, N, K, group_size, bits, mx.float32)
    x = mx.random.normal((M, K), key=mx.random.key(M))
    with msl_settings(order=order, seed=K):
        out = q.quantized_matmul(backend, x, wq, scales, biases, group_size=group_size, bits=bits)
        tiled = q.qmm(backend, x, wq, scales, biases, group_size=group_size, bits=bits)
    for y in (out, tiled):
        assert_close(y, reference_matmul(x, wq, scales, biases, group_size, bits), mx.float32)


@pytest.mark.parametrize("x_dtype,s_dtype", [(mx.float16, mx.float32), (mx.float32, mx.bfloat16)])
def test_mixed_dtypes_promote_like_mlx(backend, x_dtype, s_dtype):
    """x and scales of different float types: the result is float32, as in MLX."""
    wq, scales, biases = quantized(7, 40, 128, 64, 4, s_dtype)
    x = mx.random.normal((1, 128), key=mx.random.key(8)).astype(x_dtype)
    out = q.quantized_matmul(backend, x, wq, scales, biases, group_size=64, bits=4)
    want = mx.quantized_matmul(x, wq, scales, biases, group_size=64, bits=4)
    assert out.dtype == want.dtype == mx.float32
    assert_close(out, reference_matmul(x, wq, scales, biases, 64, 4), mx.float32)


def test_qwen3_decode_shape(backend):
    """One real decode projection: Qwen3-0.6B's k_proj, 1024 x 1024, 4-bit, group 64."""
    wq, scales, biases = quantized(3, 1024, 1024, 64, 4, mx.float32)
    x = mx.random.normal((1, 1, 1024), key=mx.random.key(4))
    out = q.quantized_matmul(backend, x, wq, scales, biases, group_size=64, bits=4)
    assert_close(out, reference_matmul(x, wq, scales, biases, 64, 4), mx.float32)


def test_few_rows_run_qmv_and_more_run_qmm(backend, monkeypatch):
    """qmv below MLX's row limit (14 rows for matrices up to 2048 x 2048, 6 for big ones)."""
    calls = []
    for name in ("qmv", "qmm"):
        real = getattr(q, name)
        monkeypatch.setattr(q, name, lambda *a, _n=name, _f=real, **k: calls.append(_n) or _f(*a, **k))
    wq, scales, biases = quantized(1, 16, 64, 64, 4, mx.float32)
    for shape in [(64,), (1, 1, 64), (4, 64), (1, 13, 64), (14, 64), (2, 20, 64)]:
        q.quantized_matmul(backend, mx.ones(shape), wq, scales, biases, group_size=64, bits=4)
    q.quantized_swiglu(backend, mx.ones((3, 64)), wq, scales, biases, group_size=64, bits=4)
    assert calls == ["qmv", "qmv", "qmv", "qmv", "qmm", "qmm", "qmv"]
    assert [q.qmv_row_limit(K, N) for K, N in [(1024, 3072), (4096, 4096), (4096, 24576)]] == [10, 10, 6]


def test_transpose_false_uses_mlx(backend):
    """x @ dequant(w) with w [K, N*bits/32]: no model layer needs it; the twin answers."""
    w = mx.random.normal((64, 128), key=mx.random.key(0))
    wq, scales, biases = mx.quantize(w, group_size=32, bits=4)  # packs along the 128 outputs
    x = mx.random.normal((2, 64), key=mx.random.key(1))
    out = q.quantized_matmul(backend, x, wq, scales, biases, transpose=False, group_size=32, bits=4)
    want = mx.quantized_matmul(x, wq, scales, biases, transpose=False, group_size=32, bits=4)
    np.testing.assert_array_equal(np.array(out), np.array(want))


@pytest.mark.parametrize("bits,group_size,K", [(3, 64, 64), (4, 48, 96), (4, 64, 100)])
def test_unsupported_formats_raise(backend, bits, group_size, K):
    x = mx.ones((1, K))
    w = mx.zeros((8, max(1, K * bits // 32)), dtype=mx.uint32)
    s = mx.zeros((8, max(1, K // group_size)))
    with pytest.raises(ValueError):
        q.quantized_matmul(backend, x, w, s, s, group_size=group_size, bits=bits)
