"""The MLP's gate: SwiGLU silu(gate) * up (twin: gate * mx.sigmoid(gate) * up),
and Gemma's GeGLU gelu_tanh(gate) * up (metal/geglu.metal, the same stream).

One thread per four elements (metal/swiglu.metal). Prefill and unquantized
models use it; in quantized decode the SwiGLU rides in qmv's epilogue
(fs_mlx/kernels/quantized.py: quantized_swiglu) and this kernel is skipped.
"""

from __future__ import annotations

import mlx.core as mx

from .grid import ceil_div

N_READS = 4  # elements per thread (the kernel's N_READS)


def swiglu_geometry(n: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    return (ceil_div(n, N_READS), 1, 1), (256, 1, 1)


def swiglu(lib, gate: mx.array, up: mx.array, kernel: str = "swiglu") -> mx.array:
    if gate.shape != up.shape:
        raise ValueError(f"{kernel}: gate {gate.shape} and up {up.shape} differ")
    dtype = mx.result_type(gate, up)
    if gate.size == 0:
        return mx.zeros(gate.shape, dtype)
    grid, tg = swiglu_geometry(gate.size)
    (out,) = lib.kernel(kernel, ["gate", "up", "n"], ["out"])(
        inputs=[gate, up, mx.array(gate.size, dtype=mx.uint32)], template=[("T", dtype)],
        grid=grid, threadgroup=tg, output_shapes=[gate.shape], output_dtypes=[dtype],
    )
    return out


def geglu(lib, gate: mx.array, up: mx.array) -> mx.array:
    return swiglu(lib, gate, up, kernel="geglu")
