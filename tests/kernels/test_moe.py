"""gather_qmv (metal/gather_qmv.metal) vs mx.gather_qmm and the plain reference.

Each token's k chosen experts, quantized, as Qwen3-MoE decodes: the x row is
shared by the token's k slots (gate/up projections) or each slot has its own
(the down projection). Experts are drawn with repeats and out of order; N that
is not a multiple of the 8 rows per threadgroup leaves clamped edge rows.
"""

import mlx.core as mx
from conftest import DTYPES, EXAMPLES, ORDERS, assert_close, f32, normal
from hypothesis import given, settings
from hypothesis import strategies as st

from fs_mlx.msl import settings as msl_settings
from fs_mlx.model import reference


@settings(max_examples=EXAMPLES, deadline=None)
@given(E=st.integers(1, 9), N=st.integers(1, 40), K=st.sampled_from([64, 128, 256]), bits=st.sampled_from([4, 8]),
       group=st.sampled_from([32, 64]), T=st.integers(1, 3), k=st.integers(1, 4), shared=st.booleans(),
       dtype=st.sampled_from(DTYPES), order=st.sampled_from(ORDERS), seed=st.integers(0, 2**16))
def test_gather_qmv(backend, E, N, K, bits, group, T, k, shared, dtype, order, seed):
    W = normal((E, N, K), seed, std=0.05)
    w, s, b = mx.quantize(W, group_size=group, bits=bits)
    s, b = s.astype(dtype), b.astype(dtype)
    x = normal((T, 1 if shared else k, 1, K), seed + 1, dtype)
    idx = mx.random.randint(0, E, (T, k), key=mx.random.key(seed + 2)).astype(mx.int32)
    with msl_settings(order=order, seed=seed):
        out = backend.gather_quantized_matmul(x, w, s, b, idx, group_size=group, bits=bits)
    ref = reference.gather_quantized_matmul(f32(x), w, f32(s), f32(b), idx, group_size=group, bits=bits)
    assert_close(out, ref, dtype)
    if dtype == mx.float32:  # and MLX's own op, the twin
        twin = mx.gather_qmm(x, w, s, b, rhs_indices=idx, transpose=True, group_size=group, bits=bits)
        assert_close(out, twin, dtype)


def test_gather_qmv_runs_the_kernel_for_decode(backend):
    """A decode step (1 token x 8 of 32 experts) goes to the kernel, not the fallback."""
    calls = []
    w, s, b = mx.quantize(normal((32, 48, 128), 3, std=0.05), group_size=32, bits=4)
    x = normal((1, 1, 1, 128), 4)
    idx = mx.array([[31, 0, 7, 7, 12, 3, 30, 1]], dtype=mx.int32)
    from fs_mlx.kernels import moe

    out = moe.gather_quantized_matmul(backend, x, w, s, b, idx, group_size=32, bits=4,
                                      fallback=lambda *a, **kw: calls.append(1))
    assert not calls and out.shape == (1, 8, 1, 48)
    assert_close(out, reference.gather_quantized_matmul(x, w, s, b, idx, group_size=32, bits=4), mx.float32)


def test_quantized_moe_model_through_the_kernels(backend):
    """qwen3-moe-tiny quantized to 4 bits, every op through the kernels (gather_qmv for the
    experts in decode): the logits of the MLX path (fp32 both, another summation order:
    2e-4 as tests/kernels/test_model_kernels.py) and the same greedy tokens."""
    from pathlib import Path

    import numpy as np

    from fs_mlx.generation.forward import logits_for
    from fs_mlx.generation.generate import generate
    from fs_mlx.loader import load
    from fs_mlx.model.backends import CountingBackend

    path = Path(__file__).resolve().parents[2] / "golden" / "checkpoints" / "qwen3-moe-tiny"
    mlx_lm = load(path, kernels="mlx", quantize=(4, 32))
    kernel_lm = load(path, kernels=CountingBackend(backend), quantize=(4, 32))
    ids = [5, 60, 7, 300, 41]
    np.testing.assert_allclose(logits_for(kernel_lm, ids), logits_for(mlx_lm, ids), atol=2e-4, rtol=0)
    want = generate(mlx_lm, ids, max_tokens=12, ignore_eos=True)[1]
    assert generate(kernel_lm, ids, max_tokens=12, ignore_eos=True)[1] == want
    assert kernel_lm.model.ops.calls["gather_quantized_matmul"] > 0
