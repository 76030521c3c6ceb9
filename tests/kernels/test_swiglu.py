"""swiglu through the kernel vs the MLX twin: silu(gate) * up, elementwise.

One thread per 4 elements (metal/swiglu.metal): sizes that are not a
multiple of 4, or of the 256-thread threadgroup, leave a partial last thread
and threadgroup. Gates up to +-20 reach silu's saturated tails.
"""

import mlx.core as mx
import numpy as np
from conftest import DTYPES, EXAMPLES, ORDERS, assert_close, f32, normal
from hypothesis import given, settings
from hypothesis import strategies as st

from fs_mlx.msl import settings as msl_settings
from fs_mlx.model import reference


@settings(max_examples=EXAMPLES, deadline=None)
@given(shape=st.one_of(st.tuples(st.integers(8, 5000)), st.tuples(st.integers(1, 3), st.integers(8, 3072)),
                       st.just((1, 1, 3072))),
       dtype=st.sampled_from(DTYPES), order=st.sampled_from(ORDERS), seed=st.integers(0, 2**16))
def test_swiglu(backend, shape, dtype, order, seed):
    gate = normal(shape, seed, dtype, std=5.0)
    up = normal(shape, seed + 1, dtype)
    with msl_settings(order=order, seed=seed):
        out = backend.swiglu(gate, up)
    assert_close(out, reference.swiglu(f32(gate), f32(up)), dtype)


def test_saturated_gates(backend):
    """silu(g) -> 0 for g -> -inf (exp overflows to inf: g / inf = -0) and -> g for g -> +inf."""
    gate = mx.array([-1e4, -100.0, -20.0, 0.0, 20.0, 100.0, 1e4, 3.0], dtype=mx.float32)
    up = mx.full((8,), 2.0)
    out = backend.swiglu(gate, up)
    assert_close(out, reference.swiglu(gate, up), mx.float32)


@settings(max_examples=EXAMPLES, deadline=None)
@given(shape=st.one_of(st.tuples(st.integers(1, 5000)), st.tuples(st.integers(1, 3), st.integers(8, 2048))),
       dtype=st.sampled_from(DTYPES), order=st.sampled_from(ORDERS), seed=st.integers(0, 2**16))
def test_geglu(backend, shape, dtype, order, seed):
    """Gemma's gelu_tanh(gate) * up (metal/geglu.metal), the same stream as swiglu."""
    gate = normal(shape, seed, dtype, std=5.0)
    up = normal(shape, seed + 1, dtype)
    with msl_settings(order=order, seed=seed):
        out = backend.geglu(gate, up)
    assert_close(out, reference.geglu(f32(gate), f32(up)), dtype)


def test_geglu_saturated_gates_and_transformers_values(backend):
    """gelu_tanh(g) -> 0 for g -> -inf and -> g for g -> +inf; the finite values are
    torch.nn.functional.gelu(g, approximate="tanh") (torch 2.13, float32)."""
    gate = mx.array([-1e4, -100.0, -3.0, -0.5, 0.0, 0.5, 3.0, 100.0], dtype=mx.float32)
    up = mx.full((8,), 2.0)
    torch_gelu = [-0.0, -0.0, -0.0036374330520629883, -0.1542859971523285, 0.0, 0.3457140028476715,
                  2.9963626861572266, 100.0]
    out = backend.geglu(gate, up)
    assert_close(out, reference.geglu(gate, up), mx.float32)
    np.testing.assert_allclose(np.array(reference.geglu(gate, up)), np.array(torch_gelu) * 2, rtol=1e-6, atol=1e-7)
