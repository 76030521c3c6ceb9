"""fsx's own CPU kernels: the C++ of cpu/, an MLX extension built at install.

On a CPU, decoding is matrix-vector products, and MLX's CPU backend runs them
slowly: float32 as a one-row `cblas_sgemm` that packs the whole matrix, affine
4/8-bit as a matvec bound by unpacking (docs/performance.md, "The matvec").
`cpu/` has our own: a few-row kernel that streams each weight row once for
all rows, and a tiled GEMM for prefill that needs no system BLAS, both split
across cores. They are MLX primitives, so graphs stay lazy.

Once the matrix products were fast, a decoded token's time went to the rest:
on a CPU MLX runs `mx.fast.rms_norm`, `rope` and `scaled_dot_product_attention`
as their fallbacks, ~3,400 graph nodes per SmolLM2 token at ~10 us each to
schedule. So the norms, RoPE and attention have one primitive each here too.

    linear(x, w)                                  x [..., K], w [N, K] float -> x @ w.T
    quantized_matmul(x, w, scales, biases, group_size, bits)
                                                  mx.quantized_matmul(..., transpose=True)
    quantized_swiglu(x, w, scales, biases, group_size, bits)
                                                  w = [gate; up]: silu(x @ gate.T) * (x @ up.T)
    rms_norm(x, w, eps), add_rms_norm(x, r, w, eps)   mx.fast.rms_norm; (x + r, its norm)
    qk_norm_rope(q, k, q_w, k_w, eps, rope, offset)   the backend op of that name
    attention(q, k, v, scale=, mask=, window=)        mx.fast.scaled_dot_product_attention (+ a window)

`setup.py` builds `_kernels` at `pip install` when a C++ compiler and cmake are
there; when they are not, or the build fails, the install still succeeds and
fsx uses MLX's own ops. `STATUS` says which, for `fsx --version`. The module
is refused (with the reason in STATUS) when it was built against another mlx
than the one running: MLX's C++ ABI is not stable across versions.
`FSX_CPU_KERNELS=0` turns it off; `FSX_CPU_THREADS=n` sets the thread count.

The model's backend (model/backends.py, MLXBackend) decides per call:
`handles_*` say whether these kernels take a call.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.machinery
import os
from pathlib import Path

import mlx.core as mx

DTYPES = (mx.float32, mx.float16, mx.bfloat16)
# What the extension must provide (cpu/bindings.cpp)
OPS = ("linear", "quantized_matmul", "quantized_swiglu", "rms_norm", "add_rms_norm",
       "qk_norm_rope", "attention")
BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)

STATUS = "not loaded"
_ext = None  # the extension module fs_mlx.cpu._kernels, when usable


def _built_file() -> Path | None:
    here = Path(__file__).parent
    found = [here / f"_kernels{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES]
    return next((path for path in found if path.exists()), None)


def _same_release(a: str, b: str) -> bool:
    return a.split(".")[:3] == b.split(".")[:3]


def _load():
    """(module or None, status line)."""
    if os.environ.get("FSX_CPU_KERNELS", "") == "0":
        return None, "MLX's ops (fsx CPU kernels off: FSX_CPU_KERNELS=0)"
    path = _built_file()
    if path is None:
        return None, ("MLX's ops (fsx CPU kernels not built: the install found no C++ compiler "
                      "or cmake, or the build failed; `pip install -v` shows why)")
    try:
        # Read the version it was built against before importing it: a module built
        # against another mlx may not even link.
        lib = ctypes.CDLL(str(path))
        lib.fsx_cpu_built_against_mlx.restype = ctypes.c_char_p
        built = lib.fsx_cpu_built_against_mlx().decode()
    except (OSError, AttributeError) as error:
        return None, f"MLX's ops (fsx CPU kernels unloadable: {error})"
    if not _same_release(built, mx.__version__):
        return None, (f"MLX's ops (fsx CPU kernels built against mlx {built}, running "
                      f"{mx.__version__}: reinstall fs-mlx to rebuild them)")
    try:
        module = importlib.import_module("._kernels", __name__)
    except ImportError as error:
        return None, f"MLX's ops (fsx CPU kernels failed to import: {error})"
    missing = [name for name in OPS if not hasattr(module, name)]
    if missing:  # an editable install whose sources moved on since it was built
        return None, (f"MLX's ops (fsx CPU kernels built from older sources: no {', '.join(missing)}; "
                      "reinstall fs-mlx to rebuild them)")
    try:  # the nanobind ABI must be MLX's, or mx.array does not pass
        mx.eval(module.linear(mx.ones((1, 8)), mx.ones((2, 8)), stream=mx.cpu))
    except TypeError:
        return None, "MLX's ops (fsx CPU kernels built with a nanobind that mlx does not share)"
    return module, f"fsx CPU kernels ({module.simd}, {module.num_threads()} threads)"


_ext, STATUS = _load()


def available() -> bool:
    return _ext is not None


def on_cpu() -> bool:
    return mx.default_device() == mx.cpu


def handles_linear(x: mx.array, w: mx.array) -> bool:
    """Whether linear(x, w) runs here: built, on the CPU stream, float x [..., K] and w [N, K]."""
    return (_ext is not None and on_cpu() and w.ndim == 2 and x.ndim >= 1
            and x.dtype in DTYPES and w.dtype in DTYPES and x.shape[-1] == w.shape[1])


def handles_quantized(x: mx.array, scales: mx.array, transpose: bool, group_size: int, bits: int) -> bool:
    """Whether quantized_matmul runs here: affine bits 4/8, group 32/64/128, x @ W.T, float x."""
    return (_ext is not None and on_cpu() and transpose and bits in BITS
            and group_size in GROUP_SIZES and x.dtype in DTYPES and scales.dtype in DTYPES)


def linear(x: mx.array, w: mx.array) -> mx.array:
    # x [..., K], w [N, K] -> [..., N], accumulated in float32
    return _ext.linear(x, w, stream=mx.cpu)


def quantized_matmul(x, w, scales, biases, *, group_size: int, bits: int) -> mx.array:
    # x [..., K], w uint32 [N, K*bits/32], scales/biases [N, K/group_size] -> [..., N]
    return _ext.quantized_matmul(x, w, scales, biases, group_size, bits, stream=mx.cpu)


def quantized_swiglu(x, w, scales, biases, *, group_size: int, bits: int) -> mx.array:
    # w = [gate; up] [2N, K*bits/32] -> [..., N]: the product and the SwiGLU in one primitive
    return _ext.quantized_swiglu(x, w, scales, biases, group_size, bits, stream=mx.cpu)


def handles_norm(x: mx.array, weight: mx.array) -> bool:
    """Whether rms_norm/add_rms_norm run here: float x [..., D], weight [D]."""
    return (_ext is not None and on_cpu() and weight is not None and weight.ndim == 1
            and x.ndim >= 1 and x.shape[-1] == weight.shape[0]
            and x.dtype in DTYPES and weight.dtype in DTYPES)


def handles_rope(q: mx.array, k: mx.array) -> bool:
    """Whether qk_norm_rope runs here: float q [B, L, Hq, D], k [B, L, Hkv, D]."""
    return (_ext is not None and on_cpu() and q.ndim == 4 and k.ndim == 4
            and q.dtype in DTYPES and k.dtype in DTYPES)


def handles_attention(q: mx.array, k: mx.array, v: mx.array, mask, window: int | None = None) -> bool:
    """Whether attention runs here: float q [B, Hq, L, D], k/v [B, Hkv, S, D], and a mask
    that is None, "causal" (with L <= S) or a bool/float array broadcastable to [B, Hq, L, S]."""
    if _ext is None or not on_cpu() or q.ndim != 4 or k.ndim != 4:
        return False
    if not all(a.dtype in DTYPES for a in (q, k, v)):
        return False
    if window is not None and q.shape[2] > k.shape[2]:
        return False
    if isinstance(mask, str):
        return mask == "causal" and q.shape[2] <= k.shape[2]
    return mask is None or (mask.dtype in DTYPES + (mx.bool_,) and mask.ndim <= 4)


def rms_norm(x: mx.array, weight: mx.array, eps: float) -> mx.array:
    # x [..., D], weight [D] -> [..., D]
    return _ext.rms_norm(x, weight, eps, stream=mx.cpu)


def add_rms_norm(x: mx.array, residual: mx.array, weight: mx.array, eps: float):
    # -> (h = x + residual, rms_norm(h)), both [..., D]
    h, normed = _ext.add_rms_norm(x, residual, weight, eps, stream=mx.cpu)
    return h, normed


def qk_norm_rope(q, k, q_weight, k_weight, eps: float, rope, offset):
    # q [B, L, Hq, D], k [B, L, Hkv, D] -> [B, Hq, L, D], [B, Hkv, L, D]; rope: model/rope.Rope;
    # offset: int, or int [B] (one start per batch row)
    per_row = isinstance(offset, mx.array) and offset.ndim == 1  # a 0-d array is one start
    q, k = _ext.qk_norm_rope(q, k, rope.inv_freq, q_weight, k_weight, offset if per_row else None,
                             eps, rope.dims, rope.traditional, rope.scale, rope.mscale,
                             0 if per_row else int(offset), stream=mx.cpu)
    return q, k


def attention(q, k, v, *, scale: float, mask, window: int | None = None) -> mx.array:
    # q [B, Hq, L, D], k/v [B, Hkv, S, D] -> [B, Hq, L, D]; window: query at position
    # p = S - L + l sees keys p - window + 1 .. p only (model/window.py)
    causal = isinstance(mask, str)
    return _ext.attention(q, k, v, None if causal else mask, scale, causal, window or 0,
                          stream=mx.cpu)


def num_threads() -> int:
    return _ext.num_threads() if _ext is not None else 1


def set_num_threads(n: int) -> None:
    """Split each product across n threads (the calling one included) from now on."""
    if _ext is not None:
        _ext.set_num_threads(int(n))
