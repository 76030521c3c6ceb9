// rows.h: arrays read and written a row at a time, as float32.
//
// The non-matmul kernels (norm.cpp, rope.cpp, attention.cpp) see their inputs
// as rows of the last axis: a row is D consecutive features, the rows are
// wherever the other axes' strides put them. That covers the views the model
// hands over without a copy — q/k/v split out of one qkv product, the KV
// cache's buffer sliced to the tokens so far, a mask broadcast with zero
// strides. Outputs are always new row-contiguous arrays.
//
//   row_offset(a, r)       element offset of row r (r runs over all axes but the last)
//   read_row(a, r, dst)    row r as a.shape(-1) floats (converted from a's dtype)
//   f32_row(a, r)          row r in place, when a is float32 with a contiguous last axis
//   write_row(out, r, src) row r of a row-contiguous output, rounded to its dtype
//   round_to(dtype, x, n)  x rounded as an intermediate array of that dtype would be
//   rms_norm_row(x, w, D, eps, y)   y = x / sqrt(mean(x²) + eps) · w, the float32 math
//                                   norm.cpp and rope.cpp (Qwen3's q/k norm) share

#pragma once

#include <cmath>
#include <cstdint>

#include "arrays.h"
#include "mlx/array.h"
#include "weights.h"

namespace fsx_cpu {

namespace mx = mlx::core;

inline int64_t row_offset(const mx::array& a, int64_t r) {
  return element_offset(a, r * a.shape(-1)) / static_cast<int64_t>(a.itemsize()); // element (r, 0)
}

// The element at `index` of a 4-d array, by its strides (masks: any dtype read as float).
inline int64_t offset4(const mx::array& a, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
  const auto& st = a.strides();
  return i0 * st[0] + i1 * st[1] + i2 * st[2] + i3 * st[3];
}

inline bool f32_rows(const mx::array& a) {
  return a.dtype() == mx::float32 && a.strides().back() == 1;
}

inline const float* f32_row(const mx::array& a, int64_t r) {
  return a.data<float>() + row_offset(a, r);
}

template <class T>
inline void read_typed(const T* p, int64_t stride, int n, float* dst) {
  for (int i = 0; i < n; i++) {
    dst[i] = to_float(p[i * stride]);
  }
}

inline void read_row(const mx::array& a, int64_t r, float* dst) {
  const int n = a.shape(-1);
  const int64_t off = row_offset(a, r), st = a.strides().back();
  switch (a.dtype()) {
    case mx::float32:
      read_typed(a.data<float>() + off, st, n, dst);
      break;
    case mx::float16:
      read_typed(reinterpret_cast<const f16_t*>(a.data<mx::float16_t>()) + off, st, n, dst);
      break;
    default: // bfloat16: the ops' builders admit only these three
      read_typed(reinterpret_cast<const bf16_t*>(a.data<mx::bfloat16_t>()) + off, st, n, dst);
  }
}

inline void write_row(mx::array& out, int64_t r, const float* src) {
  const int n = out.shape(-1);
  switch (out.dtype()) {
    case mx::float32: {
      float* o = out.data<float>() + r * n;
      for (int i = 0; i < n; i++) {
        o[i] = src[i];
      }
      break;
    }
    case mx::float16: {
      auto* o = out.data<mx::float16_t>() + r * n;
      for (int i = 0; i < n; i++) {
        o[i] = static_cast<mx::float16_t>(src[i]);
      }
      break;
    }
    default: {
      auto* o = out.data<mx::bfloat16_t>() + r * n;
      for (int i = 0; i < n; i++) {
        o[i] = static_cast<mx::bfloat16_t>(src[i]);
      }
    }
  }
}

// src [n] rounded to dtype's precision and back: what storing an intermediate
// result in a float16/bfloat16 array would keep (float32: unchanged).
inline void round_to(mx::Dtype dtype, float* x, int n) {
  if (dtype == mx::float16) {
    for (int i = 0; i < n; i++) {
      x[i] = static_cast<float>(static_cast<mx::float16_t>(x[i]));
    }
  } else if (dtype == mx::bfloat16) {
    for (int i = 0; i < n; i++) {
      x[i] = static_cast<float>(static_cast<mx::bfloat16_t>(x[i]));
    }
  }
}

// y may be x (in place).
inline void rms_norm_row(const float* x, const float* w, int D, float eps, float* y) {
  float sum = 0.0f;
  for (int i = 0; i < D; i++) {
    sum += x[i] * x[i];
  }
  const float inv_rms = 1.0f / std::sqrt(sum / static_cast<float>(D) + eps);
  for (int i = 0; i < D; i++) {
    y[i] = x[i] * inv_rms * w[i];
  }
}

// One element of a (any float or bool dtype) as float, at element offset `off`.
inline float read_scalar(const mx::array& a, int64_t off) {
  switch (a.dtype()) {
    case mx::float32:
      return a.data<float>()[off];
    case mx::float16:
      return static_cast<float>(a.data<mx::float16_t>()[off]);
    case mx::bfloat16:
      return static_cast<float>(a.data<mx::bfloat16_t>()[off]);
    default: // bool
      return a.data<bool>()[off] ? 1.0f : 0.0f;
  }
}

} // namespace fsx_cpu
