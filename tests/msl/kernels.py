"""Three realistic kernels in MLX's style, with numpy references.

They are what the project's own kernels (metal/*.metal) look like: a row
reduction with simd_sum and a cross-SIMD-group threadgroup reduce (RMSNorm),
an elementwise kernel (RoPE, rotate-half as in Qwen3/Llama), and a 4-bit
affine quantized matrix-vector product in MLX's format
(w = scale * q + bias, q packed low bits first into uint32).
"""

import numpy as np

# One threadgroup per row; each thread strides over the row, the SIMD groups
# reduce with simd_sum, then SIMD group 0 reduces the per-group partials.
RMS_NORM = """
uint row = threadgroup_position_in_grid.x;
uint tid = thread_index_in_threadgroup;
uint lane = thread_index_in_simdgroup;
uint sg = simdgroup_index_in_threadgroup;
uint D = x_shape[1];
threadgroup float partial[32];

// Sum of squares of this thread's elements
float acc = 0.0f;
for (uint i = tid; i < D; i += threads_per_threadgroup.x) {
  float v = float(x[row * D + i]);
  acc += v * v;
}
// Reduce within the SIMD group, write one partial per group
acc = simd_sum(acc);
if (lane == 0) {
  partial[sg] = acc;
}
threadgroup_barrier(mem_flags::mem_threadgroup);
// Accumulate over SIMD groups
if (sg == 0) {
  float p = lane < simdgroups_per_threadgroup ? partial[lane] : 0.0f;
  p = simd_sum(p);
  if (lane == 0) {
    partial[0] = p;
  }
}
threadgroup_barrier(mem_flags::mem_threadgroup);
float inv = metal::rsqrt(partial[0] / float(D) + eps);
for (uint i = tid; i < D; i += threads_per_threadgroup.x) {
  out[row * D + i] = T(float(x[row * D + i]) * inv * float(w[i]));
}
"""


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


# One SIMD group per output row: lanes stride over the packed words, each
# word holds 8 4-bit values, low bits first; sum(x*(s*q+b)) = s*sum(x*q) + b*sum(x).
QMV_HEADER = """
template <typename T, int GROUP_SIZE>
METAL_FUNC float qdot_word(const device T* x, uint32_t q, thread float& xsum) {
  float qx = 0.0f;
  for (int j = 0; j < 8; j++) {
    float xv = float(x[j]);
    qx += xv * float((q >> (4 * j)) & 0xfu);
    xsum += xv;
  }
  return qx;
}
"""

QMV = """
uint row = thread_position_in_grid.y;
uint lane = thread_index_in_simdgroup;
uint K = x_shape[0];
uint words = K / 8;
uint groups = K / GROUP_SIZE;
const device uint32_t* wrow = w + size_t(row) * words;
float acc = 0.0f;
for (uint wi = lane; wi < words; wi += 32) {
  uint k0 = wi * 8;
  uint g = k0 / GROUP_SIZE;
  float s = float(scales[row * groups + g]);
  float b = float(biases[row * groups + g]);
  float xsum = 0.0f;
  float qx = qdot_word<T, GROUP_SIZE>(x + k0, wrow[wi], xsum);
  acc += s * qx + b * xsum;
}
acc = simd_sum(acc);
if (lane == 0) {
  out[row] = T(acc);
}
"""


def qmv_ref(x, w_q, scales, biases, group_size):
    """Dequantize MLX's 4-bit affine format in numpy and multiply."""
    w_q = np.asarray(w_q, np.uint32)
    N = w_q.shape[0]
    shifts = np.arange(8, dtype=np.uint32) * 4
    q = ((w_q[:, :, None] >> shifts) & 0xF).reshape(N, -1).astype(np.float64)
    s = np.repeat(np.asarray(scales, np.float64), group_size, axis=1)
    b = np.repeat(np.asarray(biases, np.float64), group_size, axis=1)
    return (s * q + b) @ np.asarray(x, np.float64)
