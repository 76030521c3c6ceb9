"""Shared setup for the kernel tests: the executor, thread orders, tolerances.

Every test here runs on this machine (Linux, no Metal): the MSL executor
(fs_mlx.msl) runs each kernel's Metal source on the CPU. Threads run in
forward, reverse or random order (drawn per example): a race between
threads shows up as a result that depends on the order. Where Metal is
available (a Mac), every test runs a second time on the real GPU.

The reference is the op's plain formula (fs_mlx/model/reference.py) applied to
*float32 copies* of the inputs (every float16/bfloat16 value is exact in
float32), rounded to the kernel's dtype at the end: the answer a kernel that
accumulates in float and rounds once should give. The twin run in a narrow
dtype itself rounds after every operation (silu, the RoPE products, the
attention matmuls) and would hide real errors behind a loose bar.

Tolerances (rtol per element, atol relative to the largest |reference|):
  float32   1e-5: sums of up to a few thousand terms in another order
            (lane-strided partials, simd_sum's tree, online-softmax rescaling)
            and the C library's exp/cos/sin for MLX's (within 1-2 ULP);
  float16   1e-3: the output is rounded to half (11 bits, 4.9e-4): ~2 ULP;
  bfloat16  8e-3: rounded to bfloat16 (8 bits, 3.9e-3): ~2 ULP.
The atol term covers outputs near zero, where only the float32 sums' absolute
error (~1e-6 of the output scale) remains.
"""

import os

import mlx.core as mx
import numpy as np
import pytest

from fs_mlx.kernels import MetalBackend

ORDERS = ["forward", "reverse", "random"]
DTYPES = [mx.float32, mx.float16, mx.bfloat16]
TOL = {mx.float32: 1e-5, mx.float16: 1e-3, mx.bfloat16: 8e-3}
# Hypothesis examples per property. Sizes are runtime inputs, so an example
# costs milliseconds once its (dtype, head_dim, ...) pipeline is compiled;
# the compiles (~0.3 s each, cached on disk by source hash) dominate a cold run.
# FSX_KERNEL_EXAMPLES=500 makes a deeper run for when a kernel changes.
EXAMPLES = int(os.environ.get("FSX_KERNEL_EXAMPLES", "30"))

BACKENDS = ["msl"] + (["metal"] if mx.metal.is_available() else [])


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    """The kernels as a backend: built by the executor (always) or by Metal (where there is one)."""
    if request.param == "msl":
        from fs_mlx.msl import MslCompilerMissing
        from fs_mlx.msl.compiler import find_compiler

        try:
            find_compiler()
        except MslCompilerMissing as e:  # a failure with the fix, not a skip
            pytest.fail(str(e), pytrace=False)
    return MetalBackend(executor=request.param == "msl")


def f32(a: mx.array) -> mx.array:
    return a.astype(mx.float32)


def assert_close(out: mx.array, ref: mx.array, dtype, err_msg: str = "") -> None:
    """out (the kernel's, in dtype) against a float32 reference rounded to dtype."""
    assert out.dtype == dtype, (out.dtype, dtype)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    o = np.array(f32(out))
    r = np.array(f32(ref.astype(dtype)))  # the best the dtype can hold
    scale = max(float(np.abs(r).max()), 1e-6)
    np.testing.assert_allclose(o, r, rtol=TOL[dtype], atol=TOL[dtype] * scale, err_msg=err_msg)


def normal(shape, seed: int, dtype=mx.float32, std: float = 1.0) -> mx.array:
    return (std * mx.random.normal(shape, key=mx.random.key(seed))).astype(dtype)
