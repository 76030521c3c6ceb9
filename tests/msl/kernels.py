"""Three realistic kernels, with numpy references.

Two are the project's own (metal/*.metal, loaded from there: one copy): a row
reduction with simd_sum and a cross-SIMD-group threadgroup reduce (RMSNorm)
and a 4-bit affine quantized matrix-vector product in MLX's format
(w = scale * q + bias, q packed low bits first into uint32). The third is a
plain elementwise kernel written here (RoPE, rotate-half as in Qwen3/Llama,
frequencies computed in the kernel).
"""

import numpy as np

from fs_mlx.kernels import source
from fs_mlx.msl import metal_kernel

# The project's RMSNorm (metal/rms_norm.metal; its threadgroup_sum in
# metal/common.h): one threadgroup per row, 4 elements per thread per sweep,
# simd_sum, then SIMD group 0 reduces the per-group partials.
RMS_NORM_INPUTS = ["x", "w", "eps"]


def rms_norm_kernel(name: str = "rms_norm", header: str | None = None):
    """metal/rms_norm.metal as the model runs it (`header` replaces common.h, for broken variants)."""
    return metal_kernel(name, RMS_NORM_INPUTS, ["out"], source("rms_norm"),
                        header=source("common.h") if header is None else header)


def rms_norm_ref(x, w, eps):
    x = np.asarray(x, np.float64)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * np.asarray(w, np.float64)


# One thread per (pair i, position s, batch*head); rotate-half RoPE.
ROPE = """
uint i = thread_position_in_grid.x;
uint s = thread_position_in_grid.y;
uint bh = thread_position_in_grid.z;
uint D = x_shape[x_ndim - 1];
uint S = x_shape[x_ndim - 2];
uint half_d = D / 2;
size_t base = (size_t(bh) * S + s) * D;
float pos = float(offset + int(s));
float inv_freq = metal::exp2(-(2.0f * float(i) / float(D)) * metal::log2(rope_base));
float theta = pos * inv_freq;
float c = metal::cos(theta);
float sn = metal::sin(theta);
float x1 = float(x[base + i]);
float x2 = float(x[base + i + half_d]);
out[base + i] = T(x1 * c - x2 * sn);
out[base + i + half_d] = T(x2 * c + x1 * sn);
"""


def rope_ref(x, offset, base):
    x = np.asarray(x, np.float64)
    D = x.shape[-1]
    S = x.shape[-2]
    inv_freq = base ** (-(np.arange(D // 2) * 2.0) / D)
    theta = (offset + np.arange(S))[:, None] * inv_freq[None, :]
    c, s = np.cos(theta), np.sin(theta)
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


# The project's decode matvec (metal/qmv.metal): 2 SIMD groups of 4 rows per
# threadgroup, lanes sweeping K 16 4-bit values at a time, simd_sum per row.
def qmv_kernel():
    return metal_kernel("qmv", ["x", "w", "scales", "biases", "group_size"], ["y"], source("qmv"),
                        header=source("common.h"))


def qmv_ref(x, w_q, scales, biases, group_size):
    """Dequantize MLX's 4-bit affine format in numpy and multiply."""
    w_q = np.asarray(w_q, np.uint32)
    N = w_q.shape[0]
    shifts = np.arange(8, dtype=np.uint32) * 4
    q = ((w_q[:, :, None] >> shifts) & 0xF).reshape(N, -1).astype(np.float64)
    s = np.repeat(np.asarray(scales, np.float64), group_size, axis=1)
    b = np.repeat(np.asarray(biases, np.float64), group_size, axis=1)
    return (s * q + b) @ np.asarray(x, np.float64)
