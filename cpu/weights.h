// weights.h: reading a weight matrix W [N, K] as float32, 32 columns at a time.
//
// Every kernel in matmul.h is written once against this small interface:
//
//   w.block32(n, k, out)   out[0..3] = W[n, k .. k+31] as four f32x8 (k % 32 == 0)
//   w.at(n, k)             W[n, k] as a float (only for K's last K % 32 columns)
//
// and these readers supply it for the layouts fsx holds on a CPU:
//
//   DenseWeights<float | f16 | bf16>   W row-major, row stride `ld` elements
//   AffineWeights<bits, scale type>    MLX's affine quantization: codes q packed
//                                      32/bits per uint32, low bits first;
//                                      W[n, k] = scales[n, k/g] * q + biases[n, k/g]
//                                      bits 4 or 8, group g in {32, 64, 128}
//
// A block of 32 never straddles a quantization group (g is a multiple of 32),
// so a block needs one scale and one bias: 2 scalar loads per 32 weights. The
// dequantized value is computed as fma(q, s, b), the same formula as
// mx.dequantize, so no per-row sum of x is needed for the bias term.

#pragma once

#include <cstdint>

#include "simd.h"

namespace fsx_cpu {

struct f16_t {
  uint16_t bits;
};
struct bf16_t {
  uint16_t bits;
};

inline float to_float(float v) {
  return v;
}
inline float to_float(f16_t v) {
  return f16_to_float(v.bits);
}
inline float to_float(bf16_t v) {
  return bf16_to_float(v.bits);
}

inline f32x8 load8_as_float(const float* p) {
  return load8(p);
}
inline f32x8 load8_as_float(const f16_t* p) {
  return load8_f16(reinterpret_cast<const uint16_t*>(p));
}
inline f32x8 load8_as_float(const bf16_t* p) {
  return load8_bf16(reinterpret_cast<const uint16_t*>(p));
}

template <typename T>
struct DenseWeights {
  const T* w; // [N, ld]
  int64_t ld; // row stride, elements

  void block32(int n, int k, f32x8 out[4]) const {
    const T* p = w + n * ld + k;
    for (int j = 0; j < 4; j++) {
      out[j] = load8_as_float(p + 8 * j);
    }
  }
  float at(int n, int k) const {
    return to_float(w[n * ld + k]);
  }
};

template <int BITS, typename S>
struct AffineWeights {
  static_assert(BITS == 4 || BITS == 8, "affine 4- or 8-bit");
  const uint32_t* w; // [N, K * BITS / 32]
  const S* scales; // [N, K / group]
  const S* biases; // [N, K / group]
  int64_t words_per_row; // K * BITS / 32
  int64_t groups_per_row; // K / group
  int group_shift; // log2(group)

  void block32(int n, int k, f32x8 out[4]) const {
    int64_t g = n * groups_per_row + (k >> group_shift);
    f32x8 s = splat8(to_float(scales[g])), b = splat8(to_float(biases[g]));
    const uint32_t* p = w + n * words_per_row + k * BITS / 32;
    for (int j = 0; j < 4; j++) {
      f32x8 q = BITS == 4 ? unpack8_q4(p[j]) : unpack8_q8(p + 2 * j);
      out[j] = q * s + b;
    }
  }
  float at(int, int) const {
    return 0.0f; // never called: K is a multiple of the group, hence of 32
  }
};

} // namespace fsx_cpu
