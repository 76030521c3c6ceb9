"""Optional speed-up: let MLX's CPU backend use the system OpenBLAS.

The Linux `mlx-cpu` wheel links the reference (netlib) BLAS it bundles, which
runs an fp32 GEMM at ~4-8 GFLOPS on one core. Debian's `libopenblas0-pthread`
exports the same `cblas_sgemm`/`sgemm_` symbols; loaded with RTLD_GLOBAL
*before* `mlx.core` is imported, the dynamic linker binds MLX's BLAS calls to
it instead (global-scope symbols win over a library's own dependencies).
Loaded after the import it does nothing, hence this module runs first, from
the top of `fs_mlx/__init__.py`.

Measured on the 2-core x86-64 dev machine (docs/quantization.md, "OpenBLAS";
tools/measure_blas.py): fp32 GEMM ~4 -> 52-86 GFLOPS, a 3072x1024 fp32 matvec
~2x faster, prefill of the quantized default model 15-20x (it dequantizes and
uses BLAS); decoding a quantized model is unchanged (MLX's own qmv, not BLAS).

It is never required: without the library (or on macOS, where MLX uses
Accelerate) MLX keeps its bundled BLAS and `STATUS` says so.
FSX_OPENBLAS=0 turns the preload off; FSX_OPENBLAS=/path/libopenblas.so picks
a library.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

# Debian/Ubuntu (multiarch) and Fedora locations; the pthread flavour first.
_ARCH = f"{platform.machine()}-linux-gnu"
CANDIDATES = (
    f"/usr/lib/{_ARCH}/openblas-pthread/libopenblas.so.0",
    f"/usr/lib/{_ARCH}/libopenblas.so.0",
    "/usr/lib64/libopenblasp.so.0",
    "/usr/lib64/libopenblas.so.0",
)

STATUS = "not attempted"
_handle = None  # keep the library loaded for the life of the process


def preload() -> str:
    """Load OpenBLAS globally if we can and it is still useful; return STATUS."""
    global STATUS, _handle
    if sys.platform != "linux":
        STATUS = "platform BLAS (MLX uses Accelerate on macOS)"
        return STATUS
    choice = os.environ.get("FSX_OPENBLAS", "")
    if choice == "0":
        STATUS = "MLX's bundled BLAS (OpenBLAS preload off: FSX_OPENBLAS=0)"
        return STATUS
    if "mlx.core" in sys.modules:
        STATUS = "MLX's bundled BLAS (mlx.core was imported before fs_mlx: too late to preload)"
        return STATUS
    for path in ([choice] if choice else CANDIDATES):
        if not os.path.exists(path):
            continue
        try:
            _handle = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        STATUS = f"system OpenBLAS ({path})"
        return STATUS
    STATUS = "MLX's bundled BLAS (install libopenblas0-pthread for ~2x fp32 speed)"
    return STATUS


preload()
