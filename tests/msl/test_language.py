"""The Metal language surface: vectors, half/bfloat, math, atomics, as_type,
templates, threadgroup memory and barriers, MLX's utils.h, simdgroup matrices."""

import mlx.core as mx
import numpy as np
import pytest
from conftest import ORDERS

from fs_mlx.msl import metal_kernel, settings


def run(kernel, inputs, out_shapes, out_dtypes, grid, tg, **kw):
    return kernel(inputs=inputs, grid=grid, threadgroup=tg, output_shapes=out_shapes, output_dtypes=out_dtypes, **kw)


VECTORS = """
uint i = thread_position_in_grid.x;
float4 a = float4(x[i], 2.0f, 3.0f, 4.0f);
float4 b = a.wzyx;                       // swizzle read
float4 c = a;
c.xy = c.yx;                             // swizzle write
c.zw += 1.0f;
float3 d = float3(a.xy + b.zw, 1.0f);    // constructor from a vector and a scalar
bool4 lt = a < b;                        // Metal: a bool vector
float4 as_float = float4(lt);            // true -> 1.0
int4 picked = select(int4(0), int4(1), a < b);
half4 h = half4(a) * half(0.5f);
uint2 halves = as_type<uint2>(as_type<ulong>(a.xy));
device float* o = out + i * 20;
o[0] = b.x; o[1] = b.w; o[2] = c.x; o[3] = c.y; o[4] = c.z; o[5] = c.w;
o[6] = d.x; o[7] = d.y; o[8] = d.z;
o[9] = as_float.x + 2.0f * as_float.y + 4.0f * as_float.z + 8.0f * as_float.w;
o[10] = float(picked.x + 2 * picked.y + 4 * picked.z + 8 * picked.w);
o[11] = float(all(a == a)) + 2.0f * float(any(a > 100.0f));
o[12] = float(h.x) + float(h.w);
o[13] = float(halves.x == as_type<uint>(a.x)) + float(halves.y == as_type<uint>(a.y));
o[14] = dot(a, b);
o[15] = a.r + a.g * 10.0f;               // rgba names
o[16] = metal::max(a, 2.5f).x;
o[17] = float(uint4(a).z) + float(int2(-1.7f, 0.0f).x);
o[18] = length(float2(3.0f, 4.0f));
o[19] = float(sizeof(float3)) + float(sizeof(half4));
"""


def test_vectors_swizzles_and_comparisons():
    k = metal_kernel("vectors", ["x"], ["out"], VECTORS)
    x = np.array([1.0, 2.5, -3.0, 7.0], np.float32)
    (out,) = run(k, [mx.array(x)], [(4, 20)], [mx.float32], (4, 1, 1), (4, 1, 1))
    out = np.array(out)
    for row, xv in zip(out, x):
        a = np.array([xv, 2, 3, 4], np.float32)
        b = a[::-1]
        lt = (a < b).astype(np.float32)
        want = [
            b[0], b[3], a[1], a[0], a[2] + 1, a[3] + 1,
            a[0] + b[2], a[1] + b[3], 1.0,
            lt @ [1, 2, 4, 8],            # Metal's true is 1, not clang's -1
            lt @ [1, 2, 4, 8],
            1.0 + 2.0 * (a > 100).any(),
            np.float16(a[0] * np.float16(0.5)) + np.float16(a[3] * np.float16(0.5)),
            2.0, a @ b, a[0] + 10 * a[1], max(a[0], 2.5),
            float(np.uint32(3)) + float(int(np.float32(-1.7))),
            5.0, 16.0 + 8.0,               # float3 is 16 bytes in Metal, half4 8
        ]
        np.testing.assert_allclose(row, np.array(want, np.float32), rtol=1e-6)


HALF_MATH = """
uint i = thread_position_in_grid.x;
T a = x[i], b = y[i], c = z[i];
T r = a * b + c;          // two roundings on the GPU: after * and after +
T s = (a + b) * (a - b);
out[3 * i] = r;
out[3 * i + 1] = s;
out[3 * i + 2] = T(1.0f) / a;
"""


def bf16_round(v):
    """Round float32 to bfloat16 (nearest even), returned as float32."""
    u = np.asarray(v, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_half_and_bfloat_round_after_every_operation(dtype):
    k = metal_kernel("half_math", ["x", "y", "z"], ["out"], HALF_MATH)
    rng = np.random.default_rng(0)
    n = 512
    xs = [rng.uniform(-4, 4, n).astype(np.float32) for _ in range(3)]
    arrs = [mx.array(v).astype(dtype) for v in xs]
    (out,) = run(k, arrs, [(n, 3)], [dtype], (n, 1, 1), (64, 1, 1), template=[("T", dtype)])
    a, b, c = [np.array(v.astype(mx.float32)) for v in arrs]
    if dtype == mx.float16:
        rnd = lambda v: np.float32(np.float16(v))  # noqa: E731
    else:
        rnd = bf16_round
    # products and sums of two halves are exact in float32, so rounding the
    # float32 result once per operation is IEEE half/bfloat arithmetic.
    want = np.stack([rnd(rnd(a * b) + c), rnd(rnd(a + b) * rnd(a - b)), rnd(np.float32(1.0) / a)], axis=1)
    got = np.array(out.astype(mx.float32))
    np.testing.assert_array_equal(got, want)
    # and the single-rounding (excess precision) answer is different somewhere
    assert (rnd(a * b + c) != want[:, 0]).any()


MATH = """
uint i = thread_position_in_grid.x;
float v = x[i];
float p = metal::abs(v) + 0.5f;
device float* o = out + i * 16;
o[0] = metal::exp(v);
o[1] = metal::fast::exp(v);
o[2] = metal::log(p);
o[3] = metal::precise::log2(p);
o[4] = metal::sqrt(p);
o[5] = metal::rsqrt(p);
o[6] = metal::tanh(v);
o[7] = metal::sin(v) + metal::cos(v);
o[8] = metal::pow(p, 1.5f);
o[9] = metal::fma(v, 2.0f, 1.0f);
o[10] = metal::floor(v) + 10.0f * metal::ceil(v);
o[11] = metal::fract(v) + metal::sign(v);
o[12] = metal::clamp(v, -1.0f, 1.0f) + metal::mix(0.0f, 10.0f, 0.25f);
o[13] = metal::saturate(v) + metal::step(0.0f, v);
o[14] = float(metal::isnan(v / 0.0f - v / 0.0f)) + float(metal::isinf(1.0f / (v - v)));
o[15] = metal::precise::atan2(v, 1.0f) + metal::exp2(v);
"""


def test_math_functions():
    k = metal_kernel("math", ["x"], ["out"], MATH)
    x = np.linspace(-3, 3, 64).astype(np.float32)
    (out,) = run(k, [mx.array(x)], [(64, 16)], [mx.float32], (64, 1, 1), (64, 1, 1))
    v = x.astype(np.float64)
    p = np.abs(v) + 0.5
    want = np.stack([
        np.exp(v), np.exp(v), np.log(p), np.log2(p), np.sqrt(p), 1 / np.sqrt(p), np.tanh(v),
        np.sin(v) + np.cos(v), p**1.5, v * 2 + 1, np.floor(v) + 10 * np.ceil(v),
        (v - np.floor(v)) + np.sign(v), np.clip(v, -1, 1) + 2.5, np.clip(v, 0, 1) + (v >= 0),
        np.ones_like(v) * 2, np.arctan2(v, 1) + np.exp2(v),
    ], axis=1)
    # libm float32 functions are within ~1-2 ULP (rel. 2.4e-7)
    np.testing.assert_allclose(np.array(out), want, rtol=5e-7, atol=1e-6)


ATOMICS = """
uint i = thread_position_in_grid.x;
uint t = thread_index_in_threadgroup;
threadgroup atomic<uint> counter;
if (t == 0) {
  atomic_store_explicit(&counter, 0u, memory_order_relaxed);
}
threadgroup_barrier(mem_flags::mem_threadgroup);
uint ticket = atomic_fetch_add_explicit(&counter, 1u, memory_order_relaxed);
atomic_fetch_add_explicit(&sum[0], x[i], memory_order_relaxed);
atomic_fetch_max_explicit((device atomic<float>*)&sum[1], x[i], memory_order_relaxed);
float expected = atomic_load_explicit(&sum[2], memory_order_relaxed);
while (!atomic_compare_exchange_weak_explicit(&sum[2], &expected, expected + 1.0f,
                                              memory_order_relaxed, memory_order_relaxed)) {
}
threadgroup_barrier(mem_flags::mem_threadgroup);
if (t == 0) {
  atomic_fetch_add_explicit(&sum[3], float(atomic_load_explicit(&counter, memory_order_relaxed)), memory_order_relaxed);
}
atomic_fetch_max_explicit(&sum[4], float(ticket), memory_order_relaxed);
"""


@pytest.mark.parametrize("order", ORDERS)
def test_atomics(order):
    k = metal_kernel("atomics", ["x"], ["sum"], ATOMICS, atomic_outputs=True)
    x = np.arange(100, dtype=np.float32) / 8
    with settings(order=order):
        (out,) = run(k, [mx.array(x)], [(5,)], [mx.float32], (100, 1, 1), (32, 1, 1), init_value=0.0)
    # sums of multiples of 1/8 below 2^20 are exact in float32
    np.testing.assert_array_equal(np.array(out), [x.sum(), x.max(), 100, 100, 31])


TEMPLATED = """
uint i = thread_position_in_grid.x;
T v = x[i];
if (SCALE) {
  v = v * T(N);
}
out[i] = v + T(sizeof(T));
"""


def test_templates_int_bool_dtype():
    k = metal_kernel("templated", ["x"], ["out"], TEMPLATED)
    x = mx.arange(8).astype(mx.float16)
    (a,) = run(k, [x], [(8,)], [mx.float16], (8, 1, 1), (8, 1, 1),
               template=[("T", mx.float16), ("N", 3), ("SCALE", True)])
    (b,) = run(k, [x.astype(mx.float32)], [(8,)], [mx.float32], (8, 1, 1), (8, 1, 1),
               template=[("T", mx.float32), ("N", 3), ("SCALE", False)])
    np.testing.assert_array_equal(np.array(a.astype(mx.float32)), np.arange(8) * 3 + 2)
    np.testing.assert_array_equal(np.array(b), np.arange(8) + 4)


SCAN = """
// Hillis-Steele inclusive scan in threadgroup memory: two buffers, a barrier per step.
uint t = thread_index_in_threadgroup;
uint n = threads_per_threadgroup.x;
uint g = thread_position_in_grid.x;
threadgroup float buf[2][256];
threadgroup float tile[4][8];
buf[0][t] = x[g];
if (t < 32) {
  tile[t / 8][t % 8] = float(t);
}
threadgroup_barrier(mem_flags::mem_threadgroup);
uint src = 0;
for (uint off = 1; off < n; off *= 2) {
  float v = buf[src][t];
  if (t >= off) {
    v += buf[src][t - off];
  }
  buf[1 - src][t] = v;
  src = 1 - src;
  threadgroup_barrier(mem_flags::mem_threadgroup);
}
out[2 * g] = buf[src][t];
out[2 * g + 1] = t < 32 ? tile[(31 - t) / 8][(31 - t) % 8] : -1.0f;
"""


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("n,tg", [(256, 256), (200, 64)])
def test_threadgroup_memory_and_barriers(order, n, tg):
    k = metal_kernel("scan", ["x"], ["out"], SCAN)
    x = np.arange(n, dtype=np.float32) % 7
    with settings(order=order, seed=3):
        (out,) = run(k, [mx.array(x)], [(n, 2)], [mx.float32], (n, 1, 1), (tg, 1, 1))
    out = np.array(out)
    want = np.concatenate([np.cumsum(x[s : s + tg]) for s in range(0, n, tg)])
    np.testing.assert_array_equal(out[:, 0], want)  # small integers: exact
    t = np.concatenate([np.arange(min(tg, n - s)) for s in range(0, n, tg)])
    gsize = np.concatenate([np.full(min(tg, n - s), min(tg, n - s)) for s in range(0, n, tg)])
    # a tile entry no thread of this (partial) group wrote is still poison
    want_tile = np.where(t < 32, np.where(31 - t < gsize, 31 - t, np.nan), -1)
    np.testing.assert_array_equal(out[:, 1], want_tile)


STRIDED_COPY = """
uint i = thread_position_in_grid.x;
int64_t loc = elem_to_loc(i, x_shape, x_strides, x_ndim);
out[i] = x[loc];
"""


@pytest.mark.parametrize("view", ["transpose", "slice", "broadcast", "contiguous"])
def test_strided_inputs_with_shape_and_strides(view):
    k = metal_kernel("strided_copy", ["x"], ["out"], STRIDED_COPY, ensure_row_contiguous=False)
    base = mx.arange(60).astype(mx.float32).reshape(3, 4, 5)
    x = {
        "transpose": base.transpose(2, 0, 1),
        "slice": base[1:, ::2, 1:4],
        "broadcast": mx.broadcast_to(mx.arange(5).astype(mx.float32), (3, 4, 5)),
        "contiguous": base,
    }[view]
    (out,) = run(k, [x], [(x.size,)], [mx.float32], (x.size, 1, 1), (32, 1, 1))
    np.testing.assert_array_equal(np.array(out), np.array(x).reshape(-1))


def test_row_contiguous_inputs_get_row_major_strides():
    k = metal_kernel("strided_copy_rc", ["x"], ["out", "st"], STRIDED_COPY + "\nif (i < 3) st[i] = x_strides[i];")
    x = mx.arange(24).astype(mx.float32).reshape(2, 3, 4).transpose(1, 2, 0)
    out, st = run(k, [x], [(x.size,), (3,)], [mx.float32, mx.int64], (x.size, 1, 1), (8, 1, 1))
    np.testing.assert_array_equal(np.array(out), np.array(x).reshape(-1))
    np.testing.assert_array_equal(np.array(st), [8, 2, 1])


SIMDGROUP_MATRIX = """
uint lane = thread_index_in_simdgroup;
simdgroup_float8x8 ma, mb, mc;
simdgroup_load(ma, a, 8);
simdgroup_load(mb, b, 8, ulong2(0, 0), true);   // B transposed on load
simdgroup_load(mc, c, 8);
simdgroup_float8x8 md;
simdgroup_multiply_accumulate(md, ma, mb, mc);
simdgroup_store(md, out, 8);
// thread_elements(): two elements per lane, in MLX's fragment layout
float2 e = ma.thread_elements();
elems[2 * lane] = e.x;
elems[2 * lane + 1] = e.y;
"""


def test_simdgroup_matrix_multiply_accumulate():
    k = metal_kernel("sg_matrix", ["a", "b", "c"], ["out", "elems"], SIMDGROUP_MATRIX)
    rng = np.random.default_rng(1)
    a, b, c = (rng.integers(-4, 5, (8, 8)).astype(np.float32) for _ in range(3))
    out, elems = run(k, [mx.array(a), mx.array(b), mx.array(c)], [(8, 8), (64,)], [mx.float32, mx.float32],
                     (32, 1, 1), (32, 1, 1))
    np.testing.assert_array_equal(np.array(out), a @ b.T + c)  # small integers: exact
    lane = np.arange(32)
    q = lane // 4
    row = (q & 4) + (lane // 2) % 4
    col = (q & 2) * 2 + (lane % 2) * 2
    want = np.stack([a[row, col], a[row, col + 1]], axis=1).reshape(-1)
    np.testing.assert_array_equal(np.array(elems), want)


UTILS = """
uint i = thread_position_in_grid.x;
out[0] = Limits<float>::max;                       // +inf, as in MLX's utils.h
out[1] = Limits<float>::finite_min;
out[2] = float(Limits<bfloat16_t>::finite_max);
out[3] = float(metal::numeric_limits<half>::max());
out[4] = float(ceildiv(10, 4));
out[5] = log1p(1e-8f) * 1e8f;
out[6] = M_PI_F;
out[7] = float(Limits<int32_t>::max);
out[8] = metal::isinf(INFINITY) ? 1.0f : 0.0f;
out[9] = float(half(0.1h) + 0.2h);
"""


def test_mlx_utils_and_constants():
    k = metal_kernel("utils", [], ["out"], UTILS)
    (out,) = run(k, [], [(10,)], [mx.float32], (1, 1, 1), (1, 1, 1))
    want = [np.inf, -np.finfo(np.float32).max, 3.3895313892515355e38, 65504, 3, 1.0, np.pi, 2**31 - 1, 1,
            np.float16(np.float16(0.1) + np.float16(0.2))]
    np.testing.assert_allclose(np.array(out), np.array(want, np.float32), rtol=1e-7)
