"""Run `mx.fast.metal_kernel` kernels on any machine, exactly, for tests and learning.

    from fs_mlx.msl import metal_kernel      # instead of mx.fast.metal_kernel
    k = metal_kernel(name="myexp", input_names=["inp"], output_names=["out"],
                     source="uint i = thread_position_in_grid.x; out[i] = metal::exp(inp[i]);")
    (out,) = k(inputs=[a], grid=(a.size, 1, 1), threadgroup=(256, 1, 1),
               output_shapes=[a.shape], output_dtypes=[a.dtype])

The body is compiled as C++ by clang (see compiler.py) with a header that
stands in for the Metal standard library (metal_runtime.h); every Metal thread
runs as a fiber so that barriers and SIMD-group functions are exact
(fiber_runtime.cpp). docs/msl-executor.md explains the model.
"""

from fs_mlx.msl.errors import (
    MslCompileError,
    MslCompilerMissing,
    MslError,
    MslRuntimeError,
    MslUnsupportedError,
)
from fs_mlx.msl.executor import (
    MetalKernel,
    Settings,
    get_settings,
    metal_kernel,
    settings,
)

__all__ = [
    "metal_kernel",
    "MetalKernel",
    "settings",
    "get_settings",
    "Settings",
    "MslError",
    "MslCompileError",
    "MslCompilerMissing",
    "MslRuntimeError",
    "MslUnsupportedError",
]
