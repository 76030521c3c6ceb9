"""The generated kernel source is MLX's, character for character.

The golden text below was written by hand from MLX 0.32's `write_signature`
(mlx/backend/metal/custom_kernel.cpp / fast.cpp): parameter order, buffer
indices, `constant` for inputs under 8 elements, `constant T&` for 0-d
inputs, `_shape/_strides/_ndim` only when named, attributes in MLX's order,
the kernel name with its template hash and dtype suffixes. Where Metal is
available, MLX's own `verbose=True` output is compared as well.
"""

import contextlib
import io
import re

import mlx.core as mx
import numpy as np
import pytest

from fs_mlx.msl import metal_kernel

BODY = """
  uint i = thread_position_in_grid.x;
  out[i] = a[i] * s + float(c[i % 3]) + float(a_shape[0] * 100 + a_shape[1])
         + float(a_strides[0]) * 0.5f + float(a_ndim) * 1000.0f + float(c_shape[0]) * 10000.0f;
  aux[i] = int(simdgroup_index_in_threadgroup) + N * int(B) * 10 + int(threads_per_threadgroup.x) * 100
         + int(sizeof(T)) * 100000;
"""

NAME = "custom_kernel_sig__float16_t_3_1_float_floats_int32_tc_float_int32_t"
GOLDEN = (
    "template <typename T, int N, bool B>\n"
    f"[[kernel]] void {NAME}(\n"
    "  const device float* a [[buffer(0)]],\n"
    "  const constant int* a_shape [[buffer(1)]],\n"
    "  const constant int64_t* a_strides [[buffer(2)]],\n"
    "  const constant int& a_ndim [[buffer(3)]],\n"
    "  const constant float& s [[buffer(4)]],\n"
    "  const constant int32_t* c [[buffer(5)]],\n"
    "  const constant int* c_shape [[buffer(6)]],\n"
    "  device float* out [[buffer(7)]],\n"
    "  device int32_t* aux [[buffer(8)]],\n"
    "  uint simdgroup_index_in_threadgroup [[simdgroup_index_in_threadgroup]],\n"
    "  uint3 thread_position_in_grid [[thread_position_in_grid]],\n"
    "  uint3 threads_per_threadgroup [[threads_per_threadgroup]]) {\n"
    + BODY
    + "\n}\n"
    + f'\ntemplate [[host_name("{NAME}")]] [[kernel]] decltype({NAME}<float16_t, 3, 1>) {NAME}<float16_t, 3, 1>;\n'
)

TEMPLATE = [("T", mx.float16), ("N", 3), ("B", True)]


def call_args():
    a = mx.arange(32).astype(mx.float32).reshape(4, 8)
    return dict(
        inputs=[a, mx.array(2.0), mx.array([1, 2, 3], dtype=mx.int32)],
        template=TEMPLATE, grid=(32, 1, 1), threadgroup=(64, 1, 1),
        output_shapes=[(32,), (32,)], output_dtypes=[mx.float32, mx.int32],
    )


def test_generated_source_matches_mlx_write_signature():
    k = metal_kernel("sig", ["a", "s", "c"], ["out", "aux"], BODY)
    name, full, _, _ = k.generate(call_args()["inputs"], [mx.float32, mx.int32], TEMPLATE)
    assert name == NAME
    assert full == GOLDEN


def test_verbose_prints_the_source_and_the_bindings_follow_it():
    k = metal_kernel("sig", ["a", "s", "c"], ["out", "aux"], BODY)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        out, aux = k(**call_args(), verbose=True)
    printed = re.search(r"```\n(.*)\n```", buf.getvalue(), re.S).group(1)
    assert printed == GOLDEN
    i = np.arange(32)
    # a_shape (4, 8), a_strides[0] = 8, ndim 2, c_shape 3; the group is clamped to the grid (32)
    want = i * 2.0 + np.array([1, 2, 3])[i % 3] + 408 + 4 + 2000 + 30000
    np.testing.assert_array_equal(np.array(out), want)
    np.testing.assert_array_equal(np.array(aux), i // 32 + 30 + 3200 + 200000)
    if mx.metal.is_available():  # on a Mac, MLX itself must print the same text
        mbuf = io.StringIO()
        with contextlib.redirect_stdout(mbuf):
            mk = mx.fast.metal_kernel("sig", ["a", "s", "c"], ["out", "aux"], BODY)
            mk(**call_args(), verbose=True)
        assert re.search(r"```\n(.*)\n```", mbuf.getvalue(), re.S).group(1) == GOLDEN


def test_signature_variants():
    k = metal_kernel("v", ["x"], ["o"], "o[0] = x[0]; // no attributes, no shapes")
    _, full, _, _ = k.generate([mx.zeros((100,), dtype=mx.bfloat16)], [mx.bfloat16])
    assert full == (
        "[[kernel]] void custom_kernel_v_bfloat16_t_bfloat16_t(\n"
        "  const device bfloat16_t* x [[buffer(0)]],\n"
        "  device bfloat16_t* o [[buffer(1)]]) {\n"
        "o[0] = x[0]; // no attributes, no shapes\n}\n"
    )
    k = metal_kernel("at", ["x"], ["o"], "uint i = thread_index_in_threadgroup; o[i] = x[i];",
                     atomic_outputs=True)
    _, full, _, _ = k.generate([mx.zeros((7,))], [mx.float32])
    assert "  const constant float* x [[buffer(0)]],\n" in full  # 7 elements: constant
    assert "  device atomic<float>* o [[buffer(1)]],\n" in full
    assert full.endswith("  uint thread_index_in_threadgroup [[thread_index_in_threadgroup]]) {\n"
                         "uint i = thread_index_in_threadgroup; o[i] = x[i];\n}\n")


def test_drop_in_argument_errors_match_mlx():
    k = metal_kernel("e", ["x"], ["o"], "o[0] = x[0];")
    for kw, msg in [
        (dict(inputs=[]), "Expected `inputs` to have size 1"),
        (dict(output_shapes=[]), "Expected `output_shapes` to have size 1"),
        (dict(output_dtypes=[]), "Expected `output_dtypes` to have size 1"),
        (dict(threadgroup=(2048, 1, 1), grid=(4096, 1, 1)), "greater than"),
    ]:
        args = dict(inputs=[mx.zeros((4,))], grid=(1, 1, 1), threadgroup=(1, 1, 1),
                    output_shapes=[(1,)], output_dtypes=[mx.float32])
        args.update(kw)
        with pytest.raises(ValueError, match=re.escape(msg)):
            k(**args)
