"""The hand-written Metal kernels as a backend: `MetalBackend(executor=False|True)`.

Each op has one `.metal` file in the top-level `metal/` folder holding the
kernel *body* (what `mx.fast.metal_kernel` takes as `source`), plus shared
helpers in `metal/common.h` (passed as `header`). Each op has one Python
module here that owns its dispatch geometry; its function takes the backend
first (`norm.rms_norm(backend, x, weight, eps)`) and otherwise has the
signature of the MLX backend's method (fs_mlx/model/backends.py).

A backend builds its kernels with a *factory*: `mx.fast.metal_kernel` on an
Apple GPU, or `fs_mlx.msl.metal_kernel` — the MSL executor — with
`executor=True`, which runs the very same source on any CPU (slowly,
exactly). Two backends of either kind can live side by side in one process.

Kernel objects are built once per (factory, name): MLX compiles a Metal
library per kernel object, so building one per call would recompile.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

import mlx.core as mx

from ..errors import FsxError
from ..model.backends import MLXBackend
from . import attention, moe, norm, quantized, rope, swiglu


def _metal_dir() -> Path:
    # A source checkout (or editable install) keeps metal/ beside fs_mlx/; a
    # wheel carries it as the package data fs_mlx/metal (pyproject.toml: the
    # link fs_mlx/metal -> ../metal; tests/test_wheel.py).
    for d in (Path(__file__).resolve().parents[2] / "metal", Path(__file__).resolve().parents[1] / "metal"):
        if (d / "common.h").is_file():
            return d
    raise FsxError("the Metal kernel sources (metal/*.metal) are missing from this installation")


@lru_cache(maxsize=None)
def source(name: str) -> str:
    """The body of metal/<name>.metal (or a header, with its extension)."""
    path = _metal_dir() / (name if "." in name else f"{name}.metal")
    return path.read_text()


@lru_cache(maxsize=None)
def _build(executor: bool, name: str, inputs: tuple[str, ...], outputs: tuple[str, ...],
           atomic_outputs: bool, row_contiguous: bool) -> Callable:
    if executor:
        from ..msl import metal_kernel
    else:
        metal_kernel = mx.fast.metal_kernel
    return metal_kernel(
        name=f"fsx_{name}", input_names=list(inputs), output_names=list(outputs),
        source=source(name), header=source("common.h"), atomic_outputs=atomic_outputs,
        ensure_row_contiguous=row_contiguous,
    )


class MetalBackend:
    """The ops of fs_mlx/model/backends.py, computed by the kernels in metal/."""

    def __init__(self, executor: bool = False):
        self.executor = executor  # True: the MSL executor runs the kernels on the CPU
        self.name = "msl" if executor else "metal"

    def kernel(self, name: str, inputs: list[str], outputs: list[str], atomic_outputs: bool = False,
               row_contiguous: bool = True) -> Callable:
        """The kernel object for metal/<name>.metal, built once and reused.

        row_contiguous=False hands inputs over in their own layout (the kernel
        reads `<name>_strides`), e.g. a KV cache sliced to its filled length,
        instead of MLX copying them first.
        """
        return _build(self.executor, name, tuple(inputs), tuple(outputs), atomic_outputs, row_contiguous)

    def rms_norm(self, x, weight, eps):
        return norm.rms_norm(self, x, weight, eps)

    def add_rms_norm(self, x, residual, weight, eps):
        return norm.add_rms_norm(self, x, residual, weight, eps)

    def qk_norm_rope(self, q, k, q_weight, k_weight, eps, rope_, offset):
        return rope.qk_norm_rope(self, q, k, q_weight, k_weight, eps, rope_, offset)

    def attention(self, q, k, v, *, scale, mask, window=None):
        return attention.attention(self, q, k, v, scale=scale, mask=mask, window=window)

    def swiglu(self, gate, up):
        return swiglu.swiglu(self, gate, up)

    def geglu(self, gate, up):
        return swiglu.geglu(self, gate, up)

    def linear(self, x, weight, bias=None):
        # Dense GEMM has no kernel of ours: MLX's own matmul serves it.
        y = x @ weight.T
        return y if bias is None else y + bias

    def quantized_matmul(self, x, w, scales, biases, *, transpose=True, group_size=64, bits=4):
        return quantized.quantized_matmul(self, x, w, scales, biases, transpose=transpose,
                                          group_size=group_size, bits=bits)

    # Mixture of experts, float experts: MLX's gather_mm (the MLX backend's method).
    def gather_linear(self, x, w, indices):
        return MLXBackend.gather_linear(self, x, w, indices)

    def gather_quantized_matmul(self, x, w, scales, biases, indices, *, group_size=64, bits=4):
        # Decode: metal/gather_qmv.metal; many token x expert slots: MLX's gather_qmm
        return moe.gather_quantized_matmul(
            self, x, w, scales, biases, indices, group_size=group_size, bits=bits,
            fallback=lambda *a, **kw: MLXBackend.gather_quantized_matmul(self, *a, **kw))

    def quantized_swiglu(self, x, w, scales, biases, *, group_size=64, bits=4):
        return quantized.quantized_swiglu(self, x, w, scales, biases, group_size=group_size, bits=bits)
