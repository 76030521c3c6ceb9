"""Thread attributes on 3-D grids with partial edge threadgroups, quad-group
functions, and property tests over sizes that vary at run time (one compile)."""

import mlx.core as mx
import numpy as np
from conftest import ORDERS
from hypothesis import given, settings as hsettings, strategies as st
from kernels import rms_norm_kernel, rms_norm_ref

from fs_mlx.msl import metal_kernel, settings

ATTRS = """
uint3 g = thread_position_in_grid;
uint idx = (g.z * threads_per_grid.y + g.y) * threads_per_grid.x + g.x;
device uint* o = out + idx * 16;
o[0] = thread_position_in_threadgroup.x; o[1] = thread_position_in_threadgroup.y;
o[2] = thread_position_in_threadgroup.z; o[3] = threadgroup_position_in_grid.x;
o[4] = threadgroup_position_in_grid.y; o[5] = threadgroup_position_in_grid.z;
o[6] = threads_per_threadgroup.x * 10000 + threads_per_threadgroup.y * 100 + threads_per_threadgroup.z;
o[7] = dispatch_threads_per_threadgroup.x * 10000 + dispatch_threads_per_threadgroup.y * 100 + dispatch_threads_per_threadgroup.z;
o[8] = threadgroups_per_grid.x * 10000 + threadgroups_per_grid.y * 100 + threadgroups_per_grid.z;
o[9] = thread_index_in_threadgroup;
o[10] = thread_index_in_simdgroup + 100 * simdgroup_index_in_threadgroup;
o[11] = simdgroups_per_threadgroup + 100 * dispatch_simdgroups_per_threadgroup;
o[12] = thread_index_in_quadgroup + 100 * quadgroup_index_in_threadgroup;
o[13] = threads_per_simdgroup + 100 * thread_execution_width;
o[14] = quadgroups_per_threadgroup;
o[15] = grid_size.x * 10000 + grid_size.y * 100 + grid_size.z;
"""


def test_thread_attributes_on_a_3d_grid_with_partial_groups():
    k = metal_kernel("attrs", [], ["out"], ATTRS)
    grid, tg = (10, 5, 3), (4, 3, 2)
    n = int(np.prod(grid))
    (out,) = k(inputs=[], grid=grid, threadgroup=tg, output_shapes=[(n, 16)], output_dtypes=[mx.uint32])
    out = np.array(out).reshape(grid[2], grid[1], grid[0], 16)
    ngroups = [-(-g // t) for g, t in zip(grid, tg)]
    for z in range(grid[2]):
        for y in range(grid[1]):
            for x in range(grid[0]):
                pos = (x, y, z)
                gid = [p // t for p, t in zip(pos, tg)]
                loc = [p % t for p, t in zip(pos, tg)]
                size = [min(t, g - i * t) for t, g, i in zip(tg, grid, gid)]  # edge groups are partial
                flat = loc[0] + size[0] * (loc[1] + size[1] * loc[2])
                count = size[0] * size[1] * size[2]
                want = [*loc, *gid, size[0] * 10000 + size[1] * 100 + size[2], 40302,
                        ngroups[0] * 10000 + ngroups[1] * 100 + ngroups[2], flat, flat % 32 + 100 * (flat // 32),
                        -(-count // 32) + 100, flat % 4 + 100 * (flat // 4), 32 + 3200, -(-count // 4), 100503]
                np.testing.assert_array_equal(out[z, y, x], want, err_msg=str(pos))


QUAD = """
uint i = thread_position_in_grid.x;
float v = x[i];
out[4 * i] = quad_sum(v);
out[4 * i + 1] = quad_max(v);
out[4 * i + 2] = quad_shuffle_xor(v, 1);
out[4 * i + 3] = quad_broadcast(v, 3);
"""


def test_quad_group_functions():
    k = metal_kernel("quad", ["x"], ["out"], QUAD)
    x = np.arange(32, dtype=np.float32) ** 1.5
    (out,) = k(inputs=[mx.array(x)], grid=(32, 1, 1), threadgroup=(32, 1, 1), output_shapes=[(32, 4)],
               output_dtypes=[mx.float32])
    q = x.reshape(8, 4)
    want = np.stack([np.repeat(q.sum(1), 4), np.repeat(q.max(1), 4), x[np.arange(32) ^ 1], np.repeat(q[:, 3], 4)], 1)
    # a quad sum of 4 float32 terms, tree order vs numpy's: 1-2 ULP
    np.testing.assert_allclose(np.array(out), want, rtol=3e-7)


_rms = rms_norm_kernel()


@hsettings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 4), D=st.integers(1, 700), tg=st.integers(1, 1024), order=st.sampled_from(ORDERS),
       seed=st.integers(0, 2**16))
def test_rms_norm_any_row_length_and_threadgroup(rows, D, tg, order, seed):
    """Any threadgroup size (partial SIMD groups, more threads than elements)
    and any row length: the same compiled kernel, sizes passed at run time."""
    x = mx.random.normal((rows, D), key=mx.random.key(seed))
    w = mx.random.uniform(0.5, 1.5, (D,), key=mx.random.key(seed + 1))
    with settings(order=order, seed=seed):
        (out,) = _rms(inputs=[x, w, mx.array(1e-6, dtype=mx.float32)], template=[("T", mx.float32)], grid=(rows * tg, 1, 1),
                      threadgroup=(tg, 1, 1), output_shapes=[x.shape], output_dtypes=[mx.float32])
    # float32 sum of <= 700 squares vs float64: rel. ~1e-6 on O(1) outputs
    np.testing.assert_allclose(np.array(out), rms_norm_ref(np.array(x), np.array(w), 1e-6), rtol=1e-5, atol=1e-5)
