"""The project's RMSNorm and qmv kernels and a RoPE, equal to numpy in every thread order.

Tolerances are per dtype and say why; the executor is not a GPU (reduction
order, libm instead of Metal's math library), so a few ULP are expected.
"""

import mlx.core as mx
import numpy as np
import pytest
from conftest import ORDERS
from kernels import ROPE, qmv_kernel, qmv_ref, rms_norm_kernel, rms_norm_ref, rope_ref

from fs_mlx.kernels import source
from fs_mlx.kernels.quantized import qmv_geometry

from fs_mlx.msl import metal_kernel, settings

EPS = mx.array(1e-6, dtype=mx.float32)

# Output rounding dominates for half types: half has 11 significant bits
# (rel. 4.9e-4), bfloat 8 (rel. 3.9e-3); float32 results differ from the
# float64 reference by accumulated rounding of ~1e3 terms.
RTOL = {mx.float32: 1e-5, mx.float16: 1e-3, mx.bfloat16: 8e-3}


def np_of(a):
    return np.array(a.astype(mx.float32))


@pytest.fixture(scope="module")
def rms():
    return rms_norm_kernel()


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
@pytest.mark.parametrize("rows,D,tg", [(8, 1024, 256), (3, 100, 64), (2, 77, 96)])
def test_rms_norm(rms, order, dtype, rows, D, tg):
    x = mx.random.normal((rows, D), key=mx.random.key(D)).astype(dtype)
    w = (1 + 0.1 * mx.random.normal((D,), key=mx.random.key(1))).astype(dtype)
    with settings(order=order, seed=rows):
        (out,) = rms(inputs=[x, w, EPS], template=[("T", dtype)], grid=(rows * tg, 1, 1),
                     threadgroup=(tg, 1, 1), output_shapes=[x.shape], output_dtypes=[dtype])
    ref = rms_norm_ref(np_of(x), np_of(w), 1e-6)
    # outputs are O(1-4): atol covers values near zero, rtol the output rounding
    np.testing.assert_allclose(np_of(out), ref, rtol=RTOL[dtype], atol=RTOL[dtype])


SECOND_BARRIER = "      partial[0] = p;\n    }\n  }\n  threadgroup_barrier(mem_flags::mem_threadgroup);"
FIRST_BARRIER = "    partial[sg] = v;\n  }\n  threadgroup_barrier(mem_flags::mem_threadgroup);"


def without_barrier(barrier: str) -> str:
    """metal/common.h with one of threadgroup_sum's barriers deleted."""
    header = source("common.h")
    assert barrier in header
    return header.replace(barrier, barrier[: barrier.rindex("\n")])


def test_rms_norm_deleted_barrier_is_caught():
    """Without threadgroup_sum's second barrier, threads outside SIMD group 0
    may read partial[0] before group 0 wrote the total: reverse runs them
    first, random (almost always) lets one of them go before group 0's second
    step. Forward runs group 0 all the way first, a schedule a GPU can take
    too, in which the race happens to give the right answer."""
    k = rms_norm_kernel("rms_norm_no_barrier", header=without_barrier(SECOND_BARRIER))
    x = mx.random.normal((4, 1024), key=mx.random.key(5))
    w = mx.ones((1024,))
    ref = rms_norm_ref(np.array(x), np.array(w), 1e-6)
    for order in ORDERS:
        with settings(order=order):
            (out,) = k(inputs=[x, w, EPS], template=[("T", mx.float32)], grid=(4 * 128, 1, 1),
                       threadgroup=(128, 1, 1), output_shapes=[x.shape], output_dtypes=[mx.float32])
        assert np.allclose(np.array(out), ref, rtol=1e-3) == (order == "forward"), order


def test_rms_norm_deleted_first_barrier_reads_poison():
    """Without the first barrier, SIMD group 0 reads partials of groups that
    have not run yet: threadgroup memory is poisoned, so the row becomes NaN."""
    k = rms_norm_kernel("rms_norm_no_first_barrier", header=without_barrier(FIRST_BARRIER))
    x = mx.random.normal((2, 1024), key=mx.random.key(6))
    with settings(order="forward"):
        (out,) = k(inputs=[x, mx.ones((1024,)), EPS], template=[("T", mx.float32)], grid=(256, 1, 1),
                   threadgroup=(128, 1, 1), output_shapes=[x.shape], output_dtypes=[mx.float32])
    assert np.isnan(np.array(out)).all()


@pytest.fixture(scope="module")
def rope():
    return metal_kernel("rope", ["x", "offset", "rope_base"], ["out"], ROPE)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
@pytest.mark.parametrize("shape,offset", [((1, 2, 5, 128), 0), ((2, 3, 7, 64), 37), ((4, 6, 32), 1000)])
def test_rope(rope, order, dtype, shape, offset):
    x = mx.random.normal(shape, key=mx.random.key(len(shape) + offset)).astype(dtype)
    D, S = shape[-1], shape[-2]
    BH = int(np.prod(shape[:-2]))
    base = 1e6
    with settings(order=order, seed=offset):
        (out,) = rope(inputs=[x, mx.array(offset, dtype=mx.int32), mx.array(base, dtype=mx.float32)],
                      template=[("T", dtype)], grid=(D // 2, S, BH), threadgroup=(32, 4, 1),
                      output_shapes=[x.shape], output_dtypes=[dtype])
    ref = rope_ref(np_of(x), offset, base)
    # float32: theta = pos * inv_freq is rounded to float32 (rel. 6e-8), and at
    # pos ~1000 that is an absolute angle error ~1e-4 rad before sin/cos.
    atol = {mx.float32: 2e-4, mx.float16: 2e-3, mx.bfloat16: 2e-2}[dtype]
    np.testing.assert_allclose(np_of(out), ref, rtol=RTOL[dtype], atol=atol)


@pytest.fixture(scope="module")
def qmv():
    return qmv_kernel()


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("N,K", [(64, 512), (33, 256)])
def test_qmv_4bit(qmv, order, group_size, N, K):
    w = mx.random.normal((N, K), key=mx.random.key(N + K))
    wq, scales, biases = mx.quantize(w, group_size=group_size, bits=4)  # MLX's own format
    x = mx.random.normal((1, K), key=mx.random.key(group_size))
    grid, tg = qmv_geometry(1, N)
    with settings(order=order, seed=group_size):
        (out,) = qmv(inputs=[x, wq, scales, biases, mx.array(group_size, dtype=mx.int32)],
                     template=[("T", mx.float32), ("S", mx.float32), ("BITS", 4), ("SWIGLU", 0)],
                     grid=grid, threadgroup=tg, output_shapes=[(1, N)], output_dtypes=[mx.float32])
    out = np.array(out)[0]
    ref = qmv_ref(np.array(x)[0], np.array(wq), np.array(scales), np.array(biases), group_size)
    # the same product as MLX computes it
    mlx_ref = mx.quantized_matmul(x, wq, scales, biases, transpose=True, group_size=group_size, bits=4)[0]
    # float32 dot products of K <= 512 terms of size ~1 against float64: ~1e-5
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out, np.array(mlx_ref), rtol=1e-4, atol=1e-3)
