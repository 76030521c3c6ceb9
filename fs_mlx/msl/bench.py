"""`python -m fs_mlx.msl --bench`: what the executor costs on this machine.

Measures the numbers docs/msl-executor.md quotes: compiling a kernel (a
cache miss), loading a cached one, and running kernels — per Metal thread,
both the whole call (copying arrays in and out included) and the runtime's
part alone. The kernels are the project's own (metal/rms_norm.metal,
metal/qmv.metal) with the geometry fs_mlx/kernels gives them, plus a plain
copy for the cost of a thread without fibers.
"""

from __future__ import annotations

import statistics
import time
import uuid

import mlx.core as mx

from fs_mlx.msl import compiler, executor, metal_kernel

COPY = "uint i = thread_position_in_grid.x;\nout[i] = x[i];"


class _RunTimer:
    """Wraps the runtime's msl_run to time the part spent running threads."""

    def __init__(self):
        self.rt = executor._get_runtime()
        self.inner = self.rt.lib.msl_run
        self.times: list[float] = []

    def __call__(self, *args):
        t = time.perf_counter()
        r = self.inner(*args)
        self.times.append(time.perf_counter() - t)
        return r


def _time_calls(fn, repeats):
    rt = executor._get_runtime()
    timer = _RunTimer()

    class Lib:  # stand-in for the ctypes library with a timed msl_run
        msl_run = timer

    real = rt.lib
    rt.lib = Lib
    try:
        fn()  # warm up
        timer.times = []
        walls = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            walls.append(time.perf_counter() - t)
    finally:
        rt.lib = real
    return statistics.median(walls), statistics.median(timer.times)


def bench(repeats: int = 15) -> dict:
    compiler.runtime_library()
    executor._get_runtime()
    results = {"compiler": compiler.find_compiler()[1]}

    from fs_mlx.kernels import source
    from fs_mlx.kernels.norm import norm_geometry
    from fs_mlx.kernels.quantized import qmv_geometry

    # compile: the RMSNorm body with a comment no cache has seen
    fresh = metal_kernel("bench_fresh", ["x", "w", "eps"], ["out"], source("rms_norm") + f"// {uuid.uuid4()}",
                         header=source("common.h"))
    x = mx.random.normal((8, 1024), key=mx.random.key(0))
    w = mx.ones((1024,))
    grid, tg = norm_geometry(8, 1024)
    rms_args = dict(inputs=[x, w, mx.array(1e-6, dtype=mx.float32)], template=[("T", mx.float32)], grid=grid,
                    threadgroup=tg, output_shapes=[(8, 1024)], output_dtypes=[mx.float32])
    kname, _, tu, _ = fresh.generate(rms_args["inputs"], rms_args["output_dtypes"], rms_args["template"])
    t = time.perf_counter()
    compiler.kernel_library(tu, kname)
    results["compile_s"] = time.perf_counter() - t
    # the Metal check of the same source (the executor runs it once per new source)
    t = time.perf_counter()
    compiler.kernel_library(tu, kname, metal_check=True, instantiation=kname + "<float>")
    results["check_s"] = time.perf_counter() - t

    # cached load: dlopen of the .so on disk (as in a new process)
    executor._loaded.clear()
    t = time.perf_counter()
    executor._load_kernel(tu, kname)
    results["cached_load_s"] = time.perf_counter() - t

    cases = []
    wall, run = _time_calls(lambda: fresh(**rms_args), repeats)
    cases.append((f"RMSNorm 8x1024 (threadgroup {tg[0]}, fibers)", grid[0], wall, run))

    N = K = 1024
    wq, scales, biases = mx.quantize(mx.random.normal((N, K), key=mx.random.key(1)), group_size=64, bits=4)
    xv = mx.random.normal((1, K), key=mx.random.key(2))
    qmv = metal_kernel("bench_qmv", ["x", "w", "scales", "biases", "group_size"], ["y"], source("qmv"),
                       header=source("common.h"))
    grid, tg = qmv_geometry(1, N)
    qargs = dict(inputs=[xv, wq, scales, biases, mx.array(64, dtype=mx.int32)],
                 template=[("T", mx.float32), ("S", mx.float32), ("BITS", 4), ("SWIGLU", 0)],
                 grid=grid, threadgroup=tg, output_shapes=[(1, N)], output_dtypes=[mx.float32])
    wall, run = _time_calls(lambda: qmv(**qargs), repeats)
    cases.append(("4-bit qmv 1024x1024, group 64 (metal/qmv.metal, fibers)", grid[0] * grid[1] * grid[2], wall, run))

    n = 1 << 20
    cp = metal_kernel("bench_copy", ["x"], ["out"], COPY)
    big = mx.ones((n,))
    cargs = dict(inputs=[big], grid=(n, 1, 1), threadgroup=(256, 1, 1), output_shapes=[(n,)], output_dtypes=[mx.float32])
    wall, run = _time_calls(lambda: cp(**cargs), repeats)
    cases.append(("copy 1M floats (no barriers: plain calls)", n, wall, run))
    results["cases"] = cases
    return results


def report(results: dict) -> str:
    lines = [
        f"compiler: {results['compiler']}",
        f"compile one kernel (cache miss): {results['compile_s'] * 1000:.0f} ms",
        f"Metal check of one kernel (once per new source): {results['check_s'] * 1000:.0f} ms",
        f"load a cached kernel: {results['cached_load_s'] * 1000:.1f} ms",
        "",
        f"{'kernel':58s} {'threads':>8s} {'call ms':>8s} {'run ms':>8s} {'ns/thread':>10s}",
    ]
    for name, threads, wall, run in results["cases"]:
        lines.append(f"{name:58s} {threads:8d} {wall * 1000:8.2f} {run * 1000:8.2f} {run / threads * 1e9:10.0f}")
    lines.append("(medians; call: the whole kernel call; run: the runtime alone; ns/thread from run)")
    return "\n".join(lines)
