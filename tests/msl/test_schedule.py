"""SIMD groups are not in lock step: a group whose SIMD function completes
runs ahead of the others, so a missing threadgroup barrier between two phases
that only a SIMD function separates shows up in some thread order.

forward runs SIMD group 0 as far as it can (to its next barrier) before group
1, reverse the last group first, random advances a random group one step
(to its next barrier or SIMD function) at a time. A correct kernel gives the
same result in all three.
"""

import mlx.core as mx
import numpy as np
import pytest
from conftest import ORDERS

from fs_mlx import kernels
from fs_mlx.kernels import quantized as q
from fs_mlx.msl import metal_kernel, settings

# The bug report's reproduction: two SIMD groups exchange values through
# threadgroup memory twice; between the read of the first round and the write
# of the second there is only simd_sum. Barrier-correct result: 32*1 + 32*2.
EXCHANGE = """
threadgroup float buf[64];
uint t = thread_index_in_threadgroup;
float acc = 0.0f;
for (int it = 0; it < 2; it++) {
  buf[t] = float(it + 1);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  float v = buf[63 - t];   // written by the other SIMD group
  acc += simd_sum(v);
  // SECOND BARRIER
}
out[t] = acc;
"""
BARRIER = "threadgroup_barrier(mem_flags::mem_threadgroup);"


def run_exchange(src: str, name: str, order: str, seed: int = 0) -> np.ndarray:
    k = metal_kernel(name, [], ["out"], src)
    with settings(order=order, seed=seed):
        (out,) = k(inputs=[], grid=(64, 1, 1), threadgroup=(64, 1, 1), output_shapes=[(64,)],
                   output_dtypes=[mx.float32])
    return np.array(out)


def test_missing_barrier_between_simd_phases_is_caught():
    """Without the second barrier a SIMD group that runs ahead overwrites buf
    (round 2) before the other group read it (round 1)."""
    broken = {o: run_exchange(EXCHANGE, "exchange_no_barrier", o) for o in ORDERS}
    wrong = [o for o, out in broken.items() if not np.array_equal(out, np.full(64, 96.0))]
    assert wrong, broken
    # forward and reverse are serial schedules: each catches it for certain
    assert {"forward", "reverse"} <= set(wrong), broken


def test_with_the_barrier_every_order_agrees():
    fixed = EXCHANGE.replace("// SECOND BARRIER", BARRIER)
    for order in ORDERS:
        for seed in range(3):
            out = run_exchange(fixed, "exchange_barrier", order, seed)
            np.testing.assert_array_equal(out, np.full(64, 96.0), err_msg=f"{order} seed {seed}")


def test_random_order_interleaves_simd_groups():
    """random advances a random SIMD group one step at a time: over a few seeds
    it both catches the race and (sometimes) happens to schedule around it."""
    outs = [run_exchange(EXCHANGE, "exchange_no_barrier", "random", seed) for seed in range(16)]
    assert any(not np.array_equal(o, np.full(64, 96.0)) for o in outs)


# qmm without the barrier at the end of its K loop: a SIMD group that finishes
# its multiply-accumulates stages the next tiles (or, on the last trip, stores
# its accumulators into the x tile) while the others still read these.
QMM_SECOND_BARRIER = (
    "  threadgroup_barrier(mem_flags::mem_threadgroup);  // before the next tiles overwrite these\n"
)


@pytest.fixture
def executor():
    return kernels.MetalBackend(executor=True)


def qmm_without_second_barrier():
    src = kernels.source("qmm")
    assert src.count(QMM_SECOND_BARRIER) == 1
    broken = src.replace(QMM_SECOND_BARRIER, "")
    assert broken.count(BARRIER) == src.count(BARRIER) - 1
    return metal_kernel("fsx_qmm_no_second_barrier", q._IN, ["y"], broken,
                        header=kernels.source("common.h"))


@pytest.mark.parametrize("K", [32, 128])  # one K tile (the store races), several (the loads do)
def test_qmm_missing_second_barrier_is_caught(executor, K):
    M, N, gs, bits = 40, 48, 32, 4
    w = mx.random.normal((N, K), key=mx.random.key(1))
    wq, scales, biases = mx.quantize(w, group_size=gs, bits=bits)
    x = mx.random.normal((M, K), key=mx.random.key(2))
    ref = np.array(mx.quantized_matmul(x, wq, scales, biases, transpose=True, group_size=gs, bits=bits))
    grid, tg = q.qmm_geometry(M, N)
    args = dict(inputs=[x, wq, scales, biases, mx.array(gs, dtype=mx.int32)],
                template=q._template(x.dtype, scales, bits), grid=grid, threadgroup=tg,
                output_shapes=[(M, N)], output_dtypes=[x.dtype])

    def close(out):
        return np.allclose(np.array(out), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())

    # The shipped kernel is right in every order ...
    for order in ORDERS:
        with settings(order=order):
            assert close(q.qmm(executor, x, wq, scales, biases, group_size=gs, bits=bits)), order
    # ... and without the barrier wrong in at least one (forward and reverse both)
    broken = qmm_without_second_barrier()
    wrong = []
    for order in ORDERS:
        with settings(order=order):
            (out,) = broken(**args)
        if not close(out):
            wrong.append(order)
    assert {"forward", "reverse"} <= set(wrong), wrong
