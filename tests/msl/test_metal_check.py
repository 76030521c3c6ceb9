"""The Metal check: what Metal's compiler rejects fails here too.

The executor compiles kernels as flat C++, where `device`, `constant` and
`threadgroup` are one memory and `double` or a recursive helper are fine. The
check (compiler.check_metal_rules, on by default) is a second clang pass with
Metal's rules; each test below is a kernel that runs on flat memory and that
the check must reject, with the kernel author's line in the message. The
first is the bug the check was built for: a `const device` pointer into an
input MLX passes as `constant` (fewer than 8 elements), inside a template,
which only an instantiation with the call's own types exposes.
"""

import mlx.core as mx
import numpy as np
import pytest

from fs_mlx.msl import MslCompileError, metal_kernel, settings

ARGS = dict(grid=(4, 1, 1), threadgroup=(4, 1, 1), output_shapes=[(4,)], output_dtypes=[mx.float32])

# Reads x through a `const device T*`: fine for 8 elements, not for 4.
TEMPLATED_DEVICE_POINTER = """
uint i = thread_position_in_grid.x;
const device T* p = x + i;
out[i] = float(p[0]) * 2.0f;
"""


def run(kernel, n=4, template=(("T", mx.float32),)):
    (out,) = kernel(inputs=[mx.arange(n).astype(mx.float32)], template=list(template), **ARGS)
    return np.array(out)


def test_a_const_device_pointer_into_a_4_element_input_fails_the_check():
    k = metal_kernel("dev_ptr", ["x"], ["out"], TEMPLATED_DEVICE_POINTER)
    np.testing.assert_array_equal(run(k, n=8), [0, 2, 4, 6])  # device memory: correct and compiles
    with settings(address_space_check=False):
        np.testing.assert_array_equal(run(k, n=4), [0, 2, 4, 6])  # flat memory runs it ...
    with pytest.raises(MslCompileError, match=r"(?s)Metal check failed.*kernel body line 3.*constant float"):
        run(k, n=4)  # ... Metal would not compile it: x is `const constant float*`


@pytest.mark.parametrize("name, body, message", [
    ("double", "double d = x[i];\nout[i] = float(d);", r"kernel body line 2.*Metal has no double type"),
    ("vla", "int n = int(x[0]) + 1;\nfloat tmp[n];\ntmp[0] = x[i];\nout[i] = tmp[0];",
     r"kernel body line 3.*variable length arrays"),
    ("minmax", "size_t a = i;\nout[i] = float(min(a, 3));", r"min/max/clamp of two different types"),
    ("thread_ref", "out[i] = twice(x[i]);", r"kernel body line 2.*cannot bind reference"),
    ("recursion", "out[i] = float(fact(i));", r"`fact` is recursive"),
    ("fn_pointer", "int (*f)(int) = inc;\nout[i] = float(f(int(i)));", r"function pointer"),
])
def test_what_metal_rejects_fails_the_check(name, body, message):
    header = """
    METAL_FUNC float twice(const thread float& v) { return 2.0f * v; }
    int fact(uint n) { return n <= 1 ? 1 : int(n) * fact(n - 1); }
    int inc(int v) { return v + 1; }
    """
    k = metal_kernel(f"bad_{name}", ["x"], ["out"], "uint i = thread_position_in_grid.x;\n" + body, header=header)
    with settings(address_space_check=False):
        run(k, n=8)  # flat C++ compiles and runs every one of them
    with pytest.raises(MslCompileError, match="(?s)Metal check failed.*" + message):
        run(k, n=8)


def test_the_check_passes_what_metal_accepts():
    """auto pointers, address-space references and same-type min/max pass."""
    body = """
    uint i = thread_position_in_grid.x;
    auto p = x + i;                       // constant or device: whatever MLX passes
    const constant float& first = x[0];   // a reference with its address space
    threadgroup float tmp[4];
    tmp[i] = p[0] + first;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    out[i] = max(tmp[3 - i], 0.0f) + float(min(i, 2u));
    """
    k = metal_kernel("good", ["x"], ["out"], body)
    np.testing.assert_array_equal(run(k, n=4), [3, 3, 3, 2])
