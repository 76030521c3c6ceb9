// Shared helpers for the kernels in this folder, passed to every kernel as its
// `header`. Kernels are written in MLX's style: float accumulation, the
// storage type only on the final write.
#pragma once

// ===========================================================================
// Affine quantization helpers (qmv.metal, qmm.metal)
//
// MLX's format: row n of a quantized matrix is K / (32 / BITS) uint32 words,
// each holding 32 / BITS unsigned q's, low bits first; every group of
// group_size consecutive weights along K has one scale s and one bias b:
//     w[n, k] = s[n, k / group_size] * q[n, k] + b[n, k / group_size]
// ===========================================================================

// Load VPT consecutive activations into registers as float and return their
// sum: a group's bias contributes b * sum(x), so it costs one multiply.
template <typename T, int VPT>
METAL_FUNC float qload_x(const device T* x, thread float* xv) {
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
template <int BITS, int VPT>
METAL_FUNC float qdot(const device uint32_t* w, const thread float* xv, float s, float b, float xsum) {
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
