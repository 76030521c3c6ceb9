"""rms_norm and the fused add_rms_norm through the kernels vs the MLX twin.

Geometry under test (metal/rms_norm.metal): one threadgroup per row of
D / 4 threads rounded up to whole SIMD groups, at most 1024. So D = 8 .. 100
is a single, partly idle SIMD group; D = 129 has a second SIMD group with one
busy lane; D > 4096 takes two sweeps per thread. Only the dtypes are template
parameters: 3 + 3 compiles for the whole file.
"""

import mlx.core as mx
import numpy as np
from conftest import DTYPES, EXAMPLES, ORDERS, assert_close, f32, normal
from hypothesis import given, settings
from hypothesis import strategies as st

from fs_mlx.msl import settings as msl_settings
from fs_mlx.model import reference

# Row widths: small, around SIMD-group and sweep boundaries, and Qwen3's 128/1024.
widths = st.one_of(st.integers(8, 300), st.sampled_from([128, 1024, 4096, 4100, 5003]))
cases = st.fixed_dictionaries({
    "lead": st.sampled_from([(1,), (3,), (2, 5), (1, 1, 7)]),
    "D": widths,
    "dtype": st.sampled_from(DTYPES),
    "eps": st.sampled_from([1e-6, 1e-5]),
    "order": st.sampled_from(ORDERS),
    "seed": st.integers(0, 2**16),
})


def inputs(c):
    D, dtype, seed = c["D"], c["dtype"], c["seed"]
    x = normal((*c["lead"], D), seed, dtype, std=3.0)
    w = (1 + normal((D,), seed + 1, std=0.2)).astype(dtype)  # as the golden checkpoints: 1 + N(0, 0.2^2)
    return x, w


@settings(max_examples=EXAMPLES, deadline=None)
@given(c=cases)
def test_rms_norm(backend, c):
    x, w = inputs(c)
    with msl_settings(order=c["order"], seed=c["seed"]):
        out = backend.rms_norm(x, w, c["eps"])
    assert_close(out, reference.rms_norm(f32(x), f32(w), c["eps"]), c["dtype"])


@settings(max_examples=EXAMPLES, deadline=None)
@given(c=cases)
def test_add_rms_norm(backend, c):
    x, w = inputs(c)
    r = normal(x.shape, c["seed"] + 2, c["dtype"])
    with msl_settings(order=c["order"], seed=c["seed"]):
        h, out = backend.add_rms_norm(x, r, w, c["eps"])
    # h is the residual stream: exactly what the add stores
    np.testing.assert_array_equal(np.array(f32(h)), np.array(f32(x + r)))
    # and the norm is of that stored h
    assert_close(out, reference.rms_norm(f32(h), f32(w), c["eps"]), c["dtype"])


def test_mixed_dtypes_promote_like_mlx(backend):
    """bfloat16 activations with a float32 weight: float32 out, as mx.fast.rms_norm."""
    x = normal((2, 96), 0, mx.bfloat16)
    w = 1 + normal((96,), 1, std=0.2)
    out = backend.rms_norm(x, w, 1e-6)
    want = reference.rms_norm(x, w, 1e-6)
    assert out.dtype == want.dtype == mx.float32
    assert_close(out, reference.rms_norm(f32(x), w, 1e-6), mx.float32)
    h, out = backend.add_rms_norm(x, x, w, 1e-6)
    assert (h.dtype, out.dtype) == (mx.bfloat16, mx.float32)


def test_fused_equals_unfused(backend):
    """add_rms_norm is the add, then rms_norm: the same kernels' answers."""
    x, r = normal((3, 1024), 5), normal((3, 1024), 6)
    w = 1 + normal((1024,), 7, std=0.2)
    h, out = backend.add_rms_norm(x, r, w, 1e-6)
    np.testing.assert_array_equal(np.array(out), np.array(backend.rms_norm(x + r, w, 1e-6)))
