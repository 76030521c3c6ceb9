"""The hand-written Metal kernels, behind the ops seam.

Each op has one `.metal` file in the top-level `metal/` folder holding the
kernel *body* (what `mx.fast.metal_kernel` takes as `source`), plus shared
helpers in `metal/common.h` (passed as `header`). Each op has one Python
module here that owns its dispatch geometry and exposes the same signature
as its MLX twin in `fs_mlx/ops/reference.py`.

The kernels are built by a *factory*: `mx.fast.metal_kernel` on an Apple GPU,
or `fs_mlx.msl.metal_kernel` — the MSL executor — anywhere else, which runs
the very same source on the CPU (slowly, exactly). `use_executor()` picks it;
`--kernels msl` does so from the command line.

Kernel objects are built once per (factory, name): MLX compiles a Metal
library per kernel object, so building one per call would recompile.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

import mlx.core as mx

from ..errors import FsxError


def _metal_dir() -> Path:
    # A source checkout (or editable install) keeps metal/ beside fs_mlx/;
    # a wheel installs it as the package data fs_mlx/metal.
    for d in (Path(__file__).resolve().parents[2] / "metal", Path(__file__).resolve().parents[1] / "metal"):
        if (d / "common.h").is_file():
            return d
    raise FsxError("the Metal kernel sources (metal/*.metal) are missing from this installation")


_executor = False


def use_executor(on: bool = True) -> None:
    """Build kernels with the MSL executor (runs on any CPU) instead of Metal."""
    global _executor
    _executor = on


def using_executor() -> bool:
    return _executor


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


def kernel(name: str, inputs: list[str], outputs: list[str], atomic_outputs: bool = False,
           row_contiguous: bool = True) -> Callable:
    """The kernel object for metal/<name>.metal, built once and reused.

    row_contiguous=False hands inputs over in their own layout (the kernel
    reads `<name>_strides`), e.g. a KV cache sliced to its filled length,
    instead of MLX copying them first.
    """
    return _build(_executor, name, tuple(inputs), tuple(outputs), atomic_outputs, row_contiguous)


# The ops, each with its twin's signature (these modules need kernel() above).
from .attention import attention  # noqa: E402
from .norm import add_rms_norm, rms_norm  # noqa: E402
from .quantized import quantized_matmul, quantized_swiglu  # noqa: E402
from .rope import qk_norm_rope, rope  # noqa: E402
from .swiglu import swiglu  # noqa: E402

# Dense GEMM has no kernel of ours: MLX's own matmul serves it on every path.
from ..ops.reference import linear  # noqa: E402

# What the ops seam dispatches to (fs_mlx/ops: the same names in reference.py)
__all__ = [
    "add_rms_norm", "attention", "linear", "qk_norm_rope", "quantized_matmul", "quantized_swiglu",
    "rms_norm", "rope", "swiglu",
]
