"""`python -m fs_mlx.msl --bench`: what the executor costs on this machine.

Measures the numbers docs/msl-executor.md quotes: compiling a kernel (a
cache miss), loading a cached one, and running kernels — per Metal thread,
both the whole call (copying arrays in and out included) and the runtime's
part alone.
"""

from __future__ import annotations

import statistics
import time
import uuid

import mlx.core as mx

from fs_mlx.msl import compiler, executor, metal_kernel
from fs_mlx.msl.__main__ import DEMO_SOURCE

QMV4 = """
uint row = thread_position_in_grid.y;
uint lane = thread_index_in_simdgroup;
uint K = x_shape[0];
uint words = K / 8;
uint groups = K / GROUP_SIZE;
const device uint32_t* wrow = w + size_t(row) * words;
float acc = 0.0f;
for (uint wi = lane; wi < words; wi += 32) {
  uint32_t q = wrow[wi];
  uint k0 = wi * 8;
  float s = float(scales[row * groups + k0 / GROUP_SIZE]);
  float b = float(biases[row * groups + k0 / GROUP_SIZE]);
  float qx = 0.0f, xs = 0.0f;
  for (int j = 0; j < 8; j++) {
    float xv = float(x[k0 + j]);
    qx += xv * float((q >> (4 * j)) & 0xfu);
    xs += xv;
  }
  acc += s * qx + b * xs;
}
acc = simd_sum(acc);
if (lane == 0) {
  out[row] = T(acc);
}
"""

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

    # compile: a body no cache has seen
    fresh = metal_kernel("bench_fresh", ["x", "w", "eps"], ["out", "dbg"], DEMO_SOURCE + f"// {uuid.uuid4()}")
    x = mx.random.normal((8, 1024), key=mx.random.key(0))
    w = mx.ones((1024,))
    rms_args = dict(inputs=[x, w, 1e-6], template=[("T", mx.float32)], grid=(8 * 256, 1, 1), threadgroup=(256, 1, 1),
                    output_shapes=[(8, 1024), (8 * 256, 4)], output_dtypes=[mx.float32, mx.float32])
    kname, _, tu, _ = fresh.generate(rms_args["inputs"], rms_args["output_dtypes"], rms_args["template"])
    t = time.perf_counter()
    compiler.kernel_library(tu, kname)
    results["compile_s"] = time.perf_counter() - t

    # cached load: dlopen of the .so on disk (as in a new process)
    executor._loaded.clear()
    t = time.perf_counter()
    executor._load_kernel(tu, kname)
    results["cached_load_s"] = time.perf_counter() - t

    cases = []
    wall, run = _time_calls(lambda: fresh(**rms_args), repeats)
    cases.append(("RMSNorm 8x1024 (threadgroup 256, fibers)", 8 * 256, wall, run))

    N = K = 1024
    wq, scales, biases = mx.quantize(mx.random.normal((N, K), key=mx.random.key(1)), group_size=64, bits=4)
    xv = mx.random.normal((K,), key=mx.random.key(2))
    qmv = metal_kernel("bench_qmv4", ["x", "w", "scales", "biases"], ["out"], QMV4)
    qargs = dict(inputs=[xv, wq, scales, biases], template=[("T", mx.float32), ("GROUP_SIZE", 64)],
                 grid=(32, N, 1), threadgroup=(32, 2, 1), output_shapes=[(N,)], output_dtypes=[mx.float32])
    wall, run = _time_calls(lambda: qmv(**qargs), repeats)
    cases.append(("4-bit qmv 1024x1024, group 64 (32 lanes/row, fibers)", 32 * N, wall, run))

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
        f"load a cached kernel: {results['cached_load_s'] * 1000:.1f} ms",
        "",
        f"{'kernel':58s} {'threads':>8s} {'call ms':>8s} {'run ms':>8s} {'ns/thread':>10s}",
    ]
    for name, threads, wall, run in results["cases"]:
        lines.append(f"{name:58s} {threads:8d} {wall * 1000:8.2f} {run * 1000:8.2f} {run / threads * 1e9:10.0f}")
    lines.append("(medians; call: the whole kernel call; run: the runtime alone; ns/thread from run)")
    return "\n".join(lines)
