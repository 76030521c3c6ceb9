"""fs_mlx/cpu: fsx's CPU matrix products (cpu/*.cpp) against MLX's own ops.

Properties (hypothesis) over the shapes the kernels cut differently: rows 1..16
(the few-row kernel up to 8, the tiled GEMM above, with its 6-row micro-kernel
tails), K odd and not a multiple of 32 (the dense tail), N not a multiple of
the 16-output tile, every dtype, bits 4/8, groups 32/64/128, 1-3 threads, and
strided inputs. Then the model: MLXBackend with and without the kernels
computes the same logits and the same greedy tokens (the fallback path agrees).

Without the extension built (no compiler at install) the kernel tests are
skipped with the reason, and the fallback tests say what fsx does instead.
Budget: ~15 s.

Tolerances. Both sides accumulate float32 in different orders, so an error is
bounded by a few ulps of the sum of |x_k · w_k|: we allow 1e-5 of that sum
(~80 float32 ulps: far above rounding noise for K <= 1000, far below the
error of a misplaced element). For float16/bfloat16 outputs add one ulp of
the output dtype (2^-10, 2^-7 relative; 2^-24 absolute for float16's subnormals):
the kernels round a float32 result once, and the reference is that float32 result.
"""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fs_mlx import cpu
from fs_mlx.generation.forward import logits_for
from fs_mlx.generation.generate import generate
from fs_mlx.loader import load
from fs_mlx.model.backends import MLXBackend

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "golden"
DTYPES = [mx.float32, mx.float16, mx.bfloat16]
OUTPUT_ULP = {mx.float32: 0.0, mx.float16: 2.0**-10, mx.bfloat16: 2.0**-7}
# below float16's smallest normal (6.1e-5) its steps are 2^-24 apart, whatever the value
OUTPUT_TINY = {mx.float32: 0.0, mx.float16: 2.0**-24, mx.bfloat16: 0.0}
EXAMPLES = int(os.environ.get("FSX_KERNEL_EXAMPLES", "150"))

needs_kernels = pytest.mark.skipif(not cpu.available(), reason=f"fsx CPU kernels unavailable: {cpu.STATUS}")


def f32(a):
    return np.array(a.astype(mx.float32))


def assert_close(y, ref, bound, dtype):
    """|y - ref| <= 1e-5 * bound + ulp(dtype) * |ref|, elementwise (see the module docstring)."""
    assert y.shape == ref.shape, (y.shape, ref.shape)
    err = np.abs(f32(y) - f32(ref))
    allowed = 1e-5 * f32(bound) + OUTPUT_ULP[dtype] * np.abs(f32(ref)) + OUTPUT_TINY[dtype] + 1e-30
    worst = np.unravel_index(np.argmax(err / allowed), err.shape)
    assert (err <= allowed).all(), f"at {worst}: {f32(y)[worst]} vs {f32(ref)[worst]}"


class threads:
    """Run the kernels on n threads inside the block."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.before = cpu.num_threads()
        cpu.set_num_threads(self.n)

    def __exit__(self, *exc):
        cpu.set_num_threads(self.before)


def rand(shape, seed, dtype=mx.float32):
    return mx.random.normal(shape, key=mx.random.key(seed)).astype(dtype)


rows = st.one_of(st.integers(1, 16), st.sampled_from([17, 25, 40]))  # few-row kernel, GEMM + tails


@needs_kernels
@settings(max_examples=EXAMPLES, deadline=None)
@given(m=rows, k=st.integers(1, 300), n=st.integers(1, 90), x_dtype=st.sampled_from(DTYPES),
       w_dtype=st.sampled_from(DTYPES), n_threads=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_linear_matches_matmul(m, k, n, x_dtype, w_dtype, n_threads, seed):
    x, w = rand((m, k), seed, x_dtype), rand((n, k), seed + 1, w_dtype)
    with threads(n_threads):
        y = cpu.linear(x, w)
        mx.eval(y)
    out_dtype = mx.result_type(x, w)
    assert y.dtype == out_dtype
    xf, wf = x.astype(mx.float32), w.astype(mx.float32)
    assert_close(y, xf @ wf.T, mx.abs(xf) @ mx.abs(wf).T, out_dtype)


@needs_kernels
@settings(max_examples=EXAMPLES, deadline=None)
@given(m=rows, groups=st.integers(1, 5), n=st.integers(1, 70), bits=st.sampled_from([4, 8]),
       group_size=st.sampled_from([32, 64, 128]), x_dtype=st.sampled_from(DTYPES),
       scale_dtype=st.sampled_from(DTYPES), n_threads=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_quantized_matmul_matches_mlx(m, groups, n, bits, group_size, x_dtype, scale_dtype, n_threads, seed):
    k = groups * group_size
    q, s, b = mx.quantize(rand((n, k), seed), group_size=group_size, bits=bits)
    s, b = s.astype(scale_dtype), b.astype(scale_dtype)
    x = rand((2, m, k), seed + 1, x_dtype)[1]  # a slice: data at an offset
    with threads(n_threads):
        y = cpu.quantized_matmul(x, q, s, b, group_size=group_size, bits=bits)
        mx.eval(y)
    out_dtype = mx.result_type(x, s)
    assert y.dtype == out_dtype
    xf = x.astype(mx.float32)
    W = mx.dequantize(q, s.astype(mx.float32), b.astype(mx.float32), group_size=group_size, bits=bits)
    # |s| q + |b| >= |s q| and |b|: bounds the terms MLX's order of summation sees too
    absW = mx.dequantize(q, mx.abs(s).astype(mx.float32), mx.abs(b).astype(mx.float32),
                         group_size=group_size, bits=bits)
    if x_dtype == scale_dtype == mx.float32:  # MLX's own op, where it accumulates in float32
        ref = mx.quantized_matmul(x, q, s, b, transpose=True, group_size=group_size, bits=bits)
    else:  # MLX accumulates bf16/f16 in that dtype (5-8 % off): compare with float32 math
        ref = xf @ W.T
    assert_close(y, ref, mx.abs(xf) @ absW.T, out_dtype)


@needs_kernels
def test_strided_and_batched_inputs():
    """Transposed x, a column slice of w, a [B, L, K] batch: the layouts MLX can hand a primitive."""
    x = rand((70, 6), 0).T  # [6, 70], column-major
    big = rand((33, 100), 1)
    w = big[:, 5:75]  # [33, 70], rows 100 apart
    assert_close(cpu.linear(x, w), x @ w.T, mx.abs(x) @ mx.abs(w).T, mx.float32)
    xb = rand((2, 3, 64), 2)
    q, s, b = mx.quantize(rand((40, 64), 3), group_size=32, bits=4)
    y = cpu.quantized_matmul(xb, q, s, b, group_size=32, bits=4)
    ref = mx.quantized_matmul(xb, q, s, b, transpose=True, group_size=32, bits=4)
    assert y.shape == (2, 3, 40)
    absW = mx.dequantize(q, mx.abs(s), mx.abs(b), group_size=32, bits=4)
    assert_close(y, ref, mx.abs(xb) @ absW.T, mx.float32)


@needs_kernels
def test_bad_shapes_are_refused():
    q, s, b = mx.quantize(rand((8, 64), 0), group_size=64, bits=4)
    with pytest.raises(ValueError, match="packed width"):
        cpu.quantized_matmul(rand((1, 32), 1), q, s, b, group_size=64, bits=4)
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        cpu.linear(rand((1, 5), 1), rand((3, 6), 2))


@needs_kernels
def test_the_backend_takes_cpu_products_only_it_supports():
    """transpose=False, bits 2 or a GPU default device go to MLX's ops (checked, not assumed)."""
    s = mx.zeros((4, 2))
    assert cpu.handles_quantized(mx.zeros((1, 64)), s, True, 32, 4)
    assert not cpu.handles_quantized(mx.zeros((1, 64)), s, False, 32, 4)
    assert not cpu.handles_quantized(mx.zeros((1, 64)), s, True, 32, 2)
    assert not cpu.handles_linear(mx.zeros((1, 4), dtype=mx.int32), mx.zeros((3, 4)))


@needs_kernels
def test_a_build_for_another_mlx_is_refused(monkeypatch):
    monkeypatch.setattr(mx, "__version__", "0.1.0")
    module, status = cpu._load()
    assert module is None
    assert "running 0.1.0" in status and "reinstall" in status


@needs_kernels
def test_a_build_from_older_sources_is_refused(monkeypatch):
    """An editable install whose cpu/ gained ops since it was built: MLX's ops, and why."""
    module = importlib.import_module("fs_mlx.cpu._kernels")
    monkeypatch.delattr(module, "attention")
    loaded, status = cpu._load()
    assert loaded is None
    assert "built from older sources: no attention" in status and "reinstall" in status


# --- the model: with and without the kernels ------------------------------------------

@pytest.mark.parametrize("quantize", [None, (4, 32), (8, 64)])
def test_model_agrees_with_and_without_the_kernels(quantize):
    """qwen3-tiny, 12-token prompt (many-row path) and 6 greedy tokens (one row): MLXBackend
    with fsx's CPU kernels and with MLX's own matmuls (the fallback) agree."""
    path = GOLDEN / "checkpoints" / "qwen3-tiny"
    own = load(path, kernels=MLXBackend(cpu_kernels=True), quantize=quantize)
    fallback = load(path, kernels=MLXBackend(cpu_kernels=False), quantize=quantize)
    assert fallback.model.ops.cpu_kernels is False
    assert own.model.ops.cpu_kernels is cpu.available()
    prompt = list(range(3, 15))
    # float32 both; the logits of this model are O(1), their sums run over <= 1024 terms
    np.testing.assert_allclose(logits_for(own, prompt), logits_for(fallback, prompt), rtol=0, atol=1e-4)
    assert (generate(own, prompt, max_tokens=6, ignore_eos=True)[1]
            == generate(fallback, prompt, max_tokens=6, ignore_eos=True)[1])


def test_fsx_version_says_which_matmuls_run():
    """`fsx --version` names the CPU kernels: the kernels (SIMD, threads), or MLX's ops and why."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    on = subprocess.run([sys.executable, "-m", "fs_mlx.apps.cli", "--version"], env=env,
                        capture_output=True, text=True, timeout=60)
    off = subprocess.run([sys.executable, "-m", "fs_mlx.apps.cli", "--version"],
                         env={**env, "FSX_CPU_KERNELS": "0"}, capture_output=True, text=True, timeout=60)
    assert on.returncode == off.returncode == 0, on.stderr + off.stderr
    assert "CPU kernels: MLX's ops (fsx CPU kernels off: FSX_CPU_KERNELS=0)" in off.stdout
    if cpu.available():
        assert "CPU kernels: fsx CPU kernels (" in on.stdout and "threads)" in on.stdout
    else:
        assert f"CPU kernels: {cpu.STATUS}" in on.stdout


@needs_kernels
@settings(max_examples=EXAMPLES // 3, deadline=None)
@given(m=rows, groups=st.integers(1, 3), n=st.integers(1, 40), bits=st.sampled_from([4, 8]),
       group_size=st.sampled_from([32, 64, 128]), seed=st.integers(0, 2**16))
def test_quantized_swiglu_is_silu_gate_times_up(m, groups, n, bits, group_size, seed):
    """w = [gate; up] as one matrix: silu(x @ gate.T) * (x @ up.T), written in plain MLX ops."""
    k = groups * group_size
    q, s, b = mx.quantize(rand((2 * n, k), seed), group_size=group_size, bits=bits)
    x = rand((m, k), seed + 1)
    y = cpu.quantized_swiglu(x, q, s, b, group_size=group_size, bits=bits)
    h = mx.quantized_matmul(x, q, s, b, transpose=True, group_size=group_size, bits=bits)
    gate, up = h[:, :n], h[:, n:]
    ref = gate * mx.sigmoid(gate) * up
    assert y.shape == (m, n)
    # the product's float32 error, carried through silu and the multiply: bounded by
    # the bound of each factor times the other's size
    absW = mx.dequantize(q, mx.abs(s), mx.abs(b), group_size=group_size, bits=bits)
    bound = mx.abs(x) @ absW.T
    bound = bound[:, :n] * (mx.abs(up) + bound[:, n:]) + mx.abs(gate) * bound[:, n:]
    assert_close(y, ref, 2 * bound, mx.float32)
