"""Debugging aids: poison, watchdog, strict barriers, out-of-bounds reports,
compile errors in the author's line numbers, unsupported constructs, the
address-space check, the compile cache."""

import subprocess
import sys
import textwrap
import time

import mlx.core as mx
import numpy as np
import pytest

from fs_mlx.msl import (
    MslCompileError,
    MslRuntimeError,
    MslUnsupportedError,
    executor,
    metal_kernel,
    settings,
)

COPY_SOME = """
uint i = thread_position_in_grid.x;
if (i % 2 == 0) {
  out[i] = x[i];
  iout[i] = int(i);
}
"""


def test_outputs_are_poisoned_unless_init_value():
    k = metal_kernel("copy_some", ["x"], ["out", "iout"], COPY_SOME)
    x = mx.arange(8).astype(mx.float32)
    args = dict(inputs=[x], grid=(8, 1, 1), threadgroup=(8, 1, 1), output_shapes=[(8,), (8,)],
                output_dtypes=[mx.float32, mx.int32])
    out, iout = k(**args)
    out, iout = np.array(out), np.array(iout)
    assert np.isnan(out[1::2]).all() and (iout[1::2] == -1).all()  # never written: poison
    np.testing.assert_array_equal(out[::2], [0, 2, 4, 6])
    out, iout = k(**args, init_value=3)
    np.testing.assert_array_equal(np.array(out), [0, 3, 2, 3, 4, 3, 6, 3])
    np.testing.assert_array_equal(np.array(iout), [0, 3, 2, 3, 4, 3, 6, 3])


def test_watchdog_stops_a_spin_wait():
    """Thread 0 waits for thread 1's write; fibers are not preempted, so it
    never sees it. The watchdog turns the hang into an error."""
    src = """
    uint i = thread_position_in_grid.x;
    if (i == 0) {
      while (atomic_load_explicit(&flag[0], memory_order_relaxed) == 0) {}
    } else {
      atomic_store_explicit(&flag[0], 1, memory_order_relaxed);
    }
    """
    k = metal_kernel("spin", [], ["flag"], src, atomic_outputs=True)
    t0 = time.time()
    with settings(watchdog_s=0.3), pytest.raises(MslRuntimeError, match="watchdog"):
        k(inputs=[], grid=(2, 1, 1), threadgroup=(2, 1, 1), output_shapes=[(1,)], output_dtypes=[mx.int32],
          init_value=0)
    assert time.time() - t0 < 5
    # the runtime is usable afterwards
    test_outputs_are_poisoned_unless_init_value()


DIVERGENT_BARRIER = """
uint t = thread_index_in_threadgroup;
if (t < 16) {
  threadgroup_barrier(mem_flags::mem_threadgroup);
} else {
  threadgroup_barrier(mem_flags::mem_threadgroup);
}
out[t] = float(t);
"""


def test_strict_mode_reports_divergent_barriers():
    k = metal_kernel("div_barrier", [], ["out"], DIVERGENT_BARRIER)
    args = dict(inputs=[], grid=(32, 1, 1), threadgroup=(32, 1, 1), output_shapes=[(32,)], output_dtypes=[mx.float32])
    (out,) = k(**args)  # lenient by default: like most GPUs, it happens to work
    np.testing.assert_array_equal(np.array(out), np.arange(32))
    with settings(strict=True), pytest.raises(MslRuntimeError, match=r"divergent threadgroup_barrier.*line 4 .*line 6"):
        k(**args)


def test_strict_mode_reports_a_barrier_after_an_early_return():
    src = "uint t = thread_index_in_threadgroup;\nif (t >= 20) return;\nthreadgroup_barrier(mem_flags::mem_none);\nout[t] = 1.0f;"
    k = metal_kernel("return_barrier", [], ["out"], src)
    with settings(strict=True), pytest.raises(MslRuntimeError, match="returned while"):
        k(inputs=[], grid=(32, 1, 1), threadgroup=(32, 1, 1), output_shapes=[(32,)], output_dtypes=[mx.float32])


def test_out_of_bounds_read_is_reported():
    k = metal_kernel("oob", ["x"], ["out"], "uint i = thread_position_in_grid.x;\nout[i] = x[i + 64];")
    with pytest.raises(MslRuntimeError, match=r"out-of-bounds access to `x`: element 64 .* 64 elements.*\(0, 0, 0\)"):
        k(inputs=[mx.zeros((64,))], grid=(4, 1, 1), threadgroup=(4, 1, 1), output_shapes=[(4,)],
          output_dtypes=[mx.float32])


def test_integer_division_by_zero_is_reported():
    k = metal_kernel("div0", ["x"], ["out"], "uint i = thread_position_in_grid.x;\nout[i] = 10 / x[i];")
    with pytest.raises(MslRuntimeError, match="division by zero"):
        k(inputs=[mx.zeros((8,), dtype=mx.int32)], grid=(8, 1, 1), threadgroup=(8, 1, 1), output_shapes=[(8,)],
          output_dtypes=[mx.int32])


def test_threadgroup_memory_limit():
    src = "threadgroup float big[9000];\nbig[thread_index_in_threadgroup] = 0;\nout[0] = big[0];"
    k = metal_kernel("too_big", [], ["out"], src)
    with pytest.raises(MslRuntimeError, match="32768 bytes"):
        k(inputs=[], grid=(1, 1, 1), threadgroup=(1, 1, 1), output_shapes=[(1,)], output_dtypes=[mx.float32])


def test_compile_errors_point_at_the_kernel_body():
    src = "uint i = thread_position_in_grid.x;\nfloat y = x[i];\nout[i] = y + undefined_name;\n"
    k = metal_kernel("bad", ["x"], ["out"], src)
    with pytest.raises(MslCompileError) as e:
        k(inputs=[mx.zeros((4,))], grid=(4, 1, 1), threadgroup=(4, 1, 1), output_shapes=[(4,)],
          output_dtypes=[mx.float32])
    msg = str(e.value)
    assert "kernel body line 3" in msg and "undefined_name" in msg
    assert "out[i] = y + undefined_name;" in msg  # the offending line is shown


def test_compile_errors_in_the_header_too():
    k = metal_kernel("bad_header", ["x"], ["out"], "out[0] = helper(x[0]);",
                     header="\nMETAL_FUNC float helper(float v) {\n  return v +;\n}\n")
    with pytest.raises(MslCompileError, match="kernel header line 3"):
        k(inputs=[mx.zeros((4,))], grid=(1, 1, 1), threadgroup=(1, 1, 1), output_shapes=[(1,)],
          output_dtypes=[mx.float32])


def test_complex_arrays_are_refused_by_name():
    k = metal_kernel("cplx", ["x"], ["out"], "out[0] = 0;")
    with pytest.raises(MslUnsupportedError, match="complex64"):
        k(inputs=[mx.zeros((2,), dtype=mx.complex64)], grid=(1, 1, 1), threadgroup=(1, 1, 1), output_shapes=[(1,)],
          output_dtypes=[mx.float32])


@pytest.mark.parametrize("src,what", [
    ("texture2d<float> t;\nout[0] = 0;", "texture types"),
    ("\n\nsampler s;", "samplers"),
    ("threadgroup float a[4] = {0, 0, 0, 0};\nout[0] = a[0];", "threadgroup declaration"),
])
def test_unsupported_constructs_are_named(src, what):
    k = metal_kernel("unsupported", [], ["out"], src)
    with pytest.raises(MslUnsupportedError, match=what):
        k(inputs=[], grid=(1, 1, 1), threadgroup=(1, 1, 1), output_shapes=[(1,)], output_dtypes=[mx.float32])


ADDRESS_SPACES = """
uint i = thread_position_in_grid.x;
{PTR} p = out + i;
const device float* q = x + i;
threadgroup float tmp[32];
threadgroup float* t = tmp;
t[i] = q[0];
threadgroup_barrier(mem_flags::mem_threadgroup);
p[0] = t[i] * 2.0f;
"""


def test_address_space_check():
    ok = metal_kernel("as_ok", ["x"], ["out"], ADDRESS_SPACES.replace("{PTR}", "device float*"))
    bad = metal_kernel("as_bad", ["x"], ["out"], ADDRESS_SPACES.replace("{PTR}", "float*"))
    args = dict(inputs=[mx.arange(8).astype(mx.float32)], grid=(8, 1, 1), threadgroup=(8, 1, 1),
                output_shapes=[(8,)], output_dtypes=[mx.float32])
    with settings(address_space_check=False):
        (out,) = bad(**args)  # flat memory lets the Metal error through ...
    np.testing.assert_array_equal(np.array(out), np.arange(8) * 2)
    (out,) = ok(**args)  # the check is on by default
    np.testing.assert_array_equal(np.array(out), np.arange(8) * 2)
    with pytest.raises(MslCompileError, match=r"(?s)Metal check failed.*kernel body line 3"):
        bad(**args)  # ... the check catches it, also for a kernel already compiled and loaded


def test_compiled_kernels_are_cached_and_load_fast():
    src = "uint i = thread_position_in_grid.x;\nout[i] = x[i] + 1.0f;  // cache test"
    args = dict(inputs=[mx.zeros((4,))], grid=(4, 1, 1), threadgroup=(4, 1, 1), output_shapes=[(4,)],
                output_dtypes=[mx.float32])
    k = metal_kernel("cached", ["x"], ["out"], src)
    k(**args)
    executor._loaded.clear()  # forget the dlopen'ed library, keep the .so on disk
    k2 = metal_kernel("cached", ["x"], ["out"], src)
    t0 = time.perf_counter()
    (out,) = k2(**args)
    assert k2.last_compile_cached
    assert time.perf_counter() - t0 < 0.5  # a cached kernel loads in well under a second
    np.testing.assert_array_equal(np.array(out), np.ones(4))


def test_ucontext_fallback_runs_the_same_kernel():
    """The portable fiber switch (used where no hand-written one exists)."""
    code = textwrap.dedent("""
        import sys; sys.path.insert(0, "tests/msl")
        import mlx.core as mx, numpy as np
        from kernels import rms_norm_kernel, rms_norm_ref
        from fs_mlx.msl import settings
        k = rms_norm_kernel()
        x = mx.random.normal((3, 100), key=mx.random.key(0)); w = mx.ones((100,))
        with settings(order="random"):
            (o,) = k(inputs=[x, w, mx.array(1e-6)], template=[("T", mx.float32)], grid=(3 * 64, 1, 1),
                     threadgroup=(64, 1, 1), output_shapes=[x.shape], output_dtypes=[mx.float32])
        np.testing.assert_allclose(np.array(o), rms_norm_ref(np.array(x), np.array(w), 1e-6), rtol=1e-5, atol=1e-5)
        print("ok")
    """)
    import os

    env = dict(os.environ, FSX_MSL_FIBER="ucontext")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_missing_compiler_is_a_clear_error(monkeypatch):
    from fs_mlx.msl import MslCompilerMissing, compiler

    monkeypatch.setitem(sys.modules, "ziglang", None)  # `import ziglang` fails
    monkeypatch.setattr(compiler.shutil, "which", lambda name: None)
    monkeypatch.delenv("FSX_MSL_CC", raising=False)
    compiler.find_compiler.cache_clear()
    try:
        with pytest.raises(MslCompilerMissing, match=r"pip install ziglang"):
            compiler.find_compiler()
    finally:
        monkeypatch.undo()
        compiler.find_compiler.cache_clear()
    assert compiler.find_compiler()  # and back to normal
