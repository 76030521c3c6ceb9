"""The ops seam: every numeric op the model uses, behind one switch.

The model never calls a kernel directly; it calls `ops.rms_norm`, `ops.rope`,
... Which implementation answers is chosen once with `set_kernels`:

- "mlx":   MLX's own ops (fs_mlx/ops/reference.py) — runs anywhere MLX runs;
- "metal": the hand-written kernels in metal/*.metal (Apple GPUs);
- "msl":   the same Metal kernels run by the MSL executor on the CPU
           (fs_mlx/msl): exact but slow — for tests and for learning;
- "auto":  metal where `mx.metal.is_available()`, else mlx.

Every op also counts its calls (`launch_counts`), so the number of kernel
launches per decoded token is measurable on any machine.
"""

from __future__ import annotations

from collections import Counter
from types import ModuleType

import mlx.core as mx

from ..errors import FsxError
from . import reference

KERNEL_CHOICES = ("auto", "metal", "mlx", "msl")

_impl: ModuleType = reference
_name = "mlx"
launch_counts: Counter[str] = Counter()


def set_kernels(choice: str = "auto") -> str:
    """Select the implementation behind the seam; returns the name in use."""
    global _impl, _name
    if choice not in KERNEL_CHOICES:
        raise FsxError(f"--kernels must be one of {', '.join(KERNEL_CHOICES)}, not {choice!r}")
    if choice == "auto":
        choice = "metal" if mx.metal.is_available() else "mlx"
    if choice in ("metal", "msl"):
        if choice == "metal" and not mx.metal.is_available():
            raise FsxError("--kernels metal needs an Apple GPU (Metal is not available here; "
                           "--kernels msl runs the same kernels on the CPU, slowly)")
        from .. import kernels  # imported lazily: builds kernel objects on first use

        kernels.use_executor(choice == "msl")
        _impl, _name = kernels, choice
    else:
        _impl, _name = reference, "mlx"
    return _name


def kernels_in_use() -> str:
    return _name


def rms_norm(x, weight, eps):
    launch_counts["rms_norm"] += 1
    return _impl.rms_norm(x, weight, eps)


def add_rms_norm(x, residual, weight, eps):
    # (h, rms_norm(h)) with h = x + residual: the block's residual add and the next norm
    launch_counts["add_rms_norm"] += 1
    return _impl.add_rms_norm(x, residual, weight, eps)


def qk_norm_rope(q, k, q_weight, k_weight, eps, dims, *, traditional, base, scale, offset, freqs=None):
    # q [B, L, Hq, D], k [B, L, Hkv, D] -> RMSNorm per head (if weights), RoPE, [B, H, L, D]
    launch_counts["qk_norm_rope"] += 1
    return _impl.qk_norm_rope(
        q, k, q_weight, k_weight, eps, dims,
        traditional=traditional, base=base, scale=scale, offset=offset, freqs=freqs,
    )


def rope(x, dims, *, traditional, base, scale, offset, freqs=None):
    launch_counts["rope"] += 1
    return _impl.rope(
        x, dims, traditional=traditional, base=base, scale=scale, offset=offset, freqs=freqs
    )


def attention(q, k, v, *, scale, mask):
    launch_counts["attention"] += 1
    return _impl.attention(q, k, v, scale=scale, mask=mask)


def swiglu(gate, up):
    launch_counts["swiglu"] += 1
    return _impl.swiglu(gate, up)


def linear(x, weight, bias=None):
    launch_counts["matmul"] += 1
    return _impl.linear(x, weight, bias)


def quantized_matmul(x, w, scales, biases, *, transpose=True, group_size=64, bits=4):
    launch_counts["quantized_matmul"] += 1
    return _impl.quantized_matmul(
        x, w, scales, biases, transpose=transpose, group_size=group_size, bits=bits
    )


def quantized_swiglu(x, w, scales, biases, *, group_size=64, bits=4):
    # w = [gate; up] quantized as one matrix (fs_mlx/fuse.py): silu(x @ gate.T) * (x @ up.T)
    launch_counts["quantized_swiglu"] += 1
    return _impl.quantized_swiglu(x, w, scales, biases, group_size=group_size, bits=bits)
