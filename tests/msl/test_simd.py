"""Every SIMD-group function, on full and partial SIMD groups and in divergent branches.

One kernel computes them all (one compile); the thread counts vary at run
time. A numpy model of a SIMD group gives the expected values: reductions over
the *active* lanes, shuffles from a lane that is inactive or missing give
poison (NaN), as documented in docs/msl-executor.md.
"""

import mlx.core as mx
import numpy as np
import pytest
from conftest import ORDERS

from fs_mlx.msl import metal_kernel, settings

NF, NU = 20, 4

SIMD_ALL = """
uint gid = thread_position_in_grid.x;
uint lane = thread_index_in_simdgroup;
float v = vals[gid];
uint iv = ivals[gid];
device float* F = f + gid * 20;
device uint* U = u + gid * 4;
F[0] = simd_sum(v);
F[1] = simd_product(v);
F[2] = simd_max(v);
F[3] = simd_min(v);
F[4] = simd_prefix_inclusive_sum(v);
F[5] = simd_prefix_exclusive_sum(v);
F[6] = simd_prefix_inclusive_product(v);
F[7] = simd_prefix_exclusive_product(v);
F[8] = simd_shuffle(v, (lane * 7 + 3) % 32);
F[9] = simd_shuffle_up(v, 3);
F[10] = simd_shuffle_down(v, 5);
F[11] = simd_shuffle_xor(v, 6);
F[12] = simd_broadcast(v, 2);
F[13] = simd_broadcast_first(v);
F[14] = simd_shuffle_rotate_up(v, 3);
F[15] = simd_shuffle_rotate_down(v, 4);
F[16] = float(simd_any(v > 1.4f)) + 2.0f * float(simd_all(v > 0.6f));
// Divergent branches: each branch's lanes form their own active set.
float d;
if (lane % 3 == 0) {
  d = simd_sum(v);
} else if (lane % 3 == 1) {
  d = simd_max(v) + 1000.0f;
} else {
  d = simd_prefix_exclusive_sum(v);
}
F[17] = d;
// A loop whose last trip only some lanes take: a partial active set, then all again.
float acc = 0.0f;
for (uint k = lane; k < 40; k += 32) {
  acc += simd_sum(1.0f);
}
F[18] = simd_sum(acc);
U[0] = simd_and(iv);
U[1] = simd_or(iv);
U[2] = simd_xor(iv);
U[3] = uint(static_cast<uint64_t>(simd_ballot(v > 1.0f)));
// Lanes that return are inactive for what follows.
if (lane >= 20) {
  return;
}
F[19] = simd_sum(v);
"""


def simd_model(v, iv, tg):
    """Expected f, u for a 1-D grid of len(v) threads in groups of `tg`."""
    n = len(v)
    f = np.full((n, NF), np.nan)
    u = np.zeros((n, NU), np.uint32)
    for g0 in range(0, n, tg):
        gsize = min(tg, n - g0)
        for s0 in range(0, gsize, 32):
            lanes = min(32, gsize - s0)
            idx = g0 + s0 + np.arange(lanes)
            x, xi = v[idx].astype(np.float64), iv[idx]

            def get(src):  # value of source lane, or NaN when that lane does not exist
                return x[src] if 0 <= src < lanes else np.nan

            for l in range(lanes):
                r = f[idx[l]]
                r[0], r[1], r[2], r[3] = x.sum(), x.prod(), x.max(), x.min()
                r[4], r[5] = x[: l + 1].sum(), x[:l].sum()
                r[6], r[7] = x[: l + 1].prod(), x[:l].prod()
                r[8] = get((l * 7 + 3) % 32)
                r[9] = get(l - 3) if l >= 3 else x[l]
                r[10] = get(l + 5) if l + 5 < 32 else x[l]
                r[11] = get(l ^ 6)
                r[12] = get(2)
                r[13] = x[0]
                r[14] = get((l - 3) % 32)
                r[15] = get((l + 4) % 32)
                r[16] = float((x > 1.4).any()) + 2.0 * float((x > 0.6).all())
                branch = [k for k in range(lanes) if k % 3 == l % 3]
                xb = x[branch]
                if l % 3 == 0:
                    r[17] = xb.sum()
                elif l % 3 == 1:
                    r[17] = xb.max() + 1000.0
                else:
                    r[17] = xb[: branch.index(l)].sum()
                accs = [32.0 + (8.0 if k + 32 < 40 else 0.0) if lanes == 32 else float(lanes) + (float(min(lanes, 8)) if k < 8 and lanes > 0 else 0.0) for k in range(lanes)]
                r[18] = sum(accs)
                a = np.bitwise_and.reduce(xi)
                o = np.bitwise_or.reduce(xi)
                xo = np.bitwise_xor.reduce(xi)
                ballot = sum(1 << k for k in range(lanes) if x[k] > 1.0)
                u[idx[l]] = [a, o, xo, ballot]
                r[19] = x[: min(lanes, 20)].sum() if l < 20 else np.nan
    return f, u


@pytest.fixture(scope="module")
def kernel():
    return metal_kernel("simd_all", ["vals", "ivals"], ["f", "u"], SIMD_ALL)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("n,tg", [(64, 64), (96, 48), (45, 45), (7, 32)])
def test_every_simd_function(kernel, order, n, tg):
    rng = np.random.default_rng(n + tg)
    v = rng.uniform(0.5, 1.5, n).astype(np.float32)  # products of 32 stay in range
    iv = rng.integers(0, 2**31, n, dtype=np.uint32)
    with settings(order=order, seed=n):
        f, u = kernel(
            inputs=[mx.array(v), mx.array(iv)], grid=(n, 1, 1), threadgroup=(tg, 1, 1),
            output_shapes=[(n, NF), (n, NU)], output_dtypes=[mx.float32, mx.uint32],
        )
    ef, eu = simd_model(v, iv, tg)
    f = np.array(f)
    # Lanes that returned early never write column 19: it stays poisoned (NaN).
    # float32 sums/products of <= 40 terms of size ~1: a few ULP of the result.
    np.testing.assert_allclose(f, ef, rtol=2e-6, atol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(np.array(u), eu)
