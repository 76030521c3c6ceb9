// Shared helpers for the kernels in this folder, passed to every kernel as its
// `header`. Kernels are written in MLX's style: float accumulation, the
// storage type only on the final write.
#pragma once

// ===========================================================================
// Reductions and softmax helpers (rms_norm, add_rms_norm, qk_norm_rope,
// attention_decode, attention_prefill)
// ===========================================================================

// The sum of `v` over the whole threadgroup, returned to every thread.
// `partial` is a threadgroup float[32] declared by the kernel (threadgroup
// memory must be declared in the body). Two barriers: the partials must be
// written before SIMD group 0 reads them, and the total before anyone does.
METAL_FUNC float threadgroup_sum(float v, threadgroup float* partial, uint sg, uint lane, uint n_sg) {
  // Reduce within the SIMD group, one partial per group
  v = simd_sum(v);
  if (lane == 0) {
    partial[sg] = v;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  // Accumulate over SIMD groups (in SIMD group 0), publish in partial[0]
  if (sg == 0) {
    float p = simd_sum(lane < n_sg ? partial[lane] : 0.0f);
    if (lane == 0) {
      partial[0] = p;
    }
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  return partial[0];
}

// The element pair a RoPE "unit" u of a D-wide row rotates (dims <= D, even).
// Units u < dims / 2 rotate; the rest are the untouched tail, also in pairs.
//   rotate-half (Llama/Qwen, traditional = false): (u, u + dims / 2)
//   interleaved (GPT-J, traditional = true):       (2u, 2u + 1)
//   tail (u >= dims / 2):                          (dims + 2t, dims + 2t + 1), t = u - dims / 2
METAL_FUNC uint2 rope_pair(uint u, uint dims, bool traditional) {
  uint half_dims = dims / 2;
  if (u >= half_dims) {
    uint e = dims + 2 * (u - half_dims);
    return uint2(e, e + 1);
  }
  return traditional ? uint2(2 * u, 2 * u + 1) : uint2(u, u + half_dims);
}

// Rotate (a, b) by theta: (a cos - b sin, a sin + b cos).
METAL_FUNC float2 rotate(float a, float b, float theta) {
  float c = metal::cos(theta);
  float s = metal::sin(theta);
  return float2(a * c - b * s, a * s + b * c);
}

// -infinity, the running max of an online softmax before its first score.
constant constexpr float NEG_INF = -metal::numeric_limits<float>::infinity();

// ===========================================================================
// Affine quantization helpers (qmv.metal, qmm.metal)
//
// MLX's format: row n of a quantized matrix is K / (32 / BITS) uint32 words,
// each holding 32 / BITS unsigned q's, low bits first; every group of
// group_size consecutive weights along K has one scale s and one bias b:
//     w[n, k] = s[n, k / group_size] * q[n, k] + b[n, k / group_size]
// ===========================================================================

// Pointers into kernel inputs are template parameters (`P`) in these helpers:
// MLX passes an input of fewer than 8 elements as `constant`, not `device`
// (a 4-bit row of K = 32 is 4 words), and a `const device T*` parameter would
// not compile for it.

// Load VPT consecutive activations into registers as float and return their
// sum: a group's bias contributes b * sum(x), so it costs one multiply.
template <int VPT, typename P>
METAL_FUNC float qload_x(P x, thread float* xv) {
  float sum = 0.0f;
  for (int i = 0; i < VPT; i++) {
    xv[i] = float(x[i]);
    sum += xv[i];
  }
  return sum;
}

// sum_i x_i * (s * q_i + b) = s * sum_i x_i * q_i + b * sum_i x_i
// over VPT values packed in VPT * BITS / 32 consecutive words (all in one group).
// (MLX pre-scales x by 1/16, 1/256, ... to skip the shifts; we keep them: clearer.)
template <int BITS, int VPT, typename P>
METAL_FUNC float qdot(P w, const thread float* xv, float s, float b, float xsum) {
  constexpr int PER_WORD = 32 / BITS;
  constexpr uint MASK = (1u << BITS) - 1u;
  float acc = 0.0f;
  for (int p = 0; p < VPT / PER_WORD; p++) {
    uint32_t word = w[p];
    for (int j = 0; j < PER_WORD; j++) {
      acc += xv[p * PER_WORD + j] * float((word >> (BITS * j)) & MASK);
    }
  }
  return s * acc + b * xsum;
}

// Dequantize the 32 / BITS values of one word into threadgroup memory.
template <int BITS>
METAL_FUNC void qdequantize_word(uint32_t word, float s, float b, threadgroup float* out) {
  constexpr int PER_WORD = 32 / BITS;
  constexpr uint MASK = (1u << BITS) - 1u;
  for (int j = 0; j < PER_WORD; j++) {
    out[j] = s * float((word >> (BITS * j)) & MASK) + b;
  }
}
