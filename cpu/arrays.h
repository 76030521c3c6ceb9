// arrays.h: getting MLX arrays into the plain row-major buffers the kernels
// read, and the result back out. Runs inside the task on MLX's CPU stream,
// when the inputs' data exist.
//
// Activations X [..., K] become a float32 [M, K] buffer (a copy only when X is
// not float32 and row-contiguous already: M × K is small next to the weight).
// Weights are read where they lie when row-contiguous (always, for loaded
// checkpoints); otherwise gathered once into a temporary.

#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "mlx/array.h"
#include "weights.h"

namespace fsx_cpu {

namespace mx = mlx::core;

// Byte offset of element `i` (row-major index) of `a`, by its strides.
inline int64_t element_offset(const mx::array& a, int64_t i) {
  int64_t off = 0;
  for (int d = a.ndim() - 1; d >= 0; d--) {
    int64_t dim = a.shape(d);
    off += (i % dim) * a.strides()[d];
    i /= dim;
  }
  return off * a.itemsize();
}

// a's data, row-major: in place when it already is, else copied into `store`.
inline const void* row_major_data(const mx::array& a, std::vector<char>& store) {
  if (a.flags().row_contiguous) {
    return a.data<void>();
  }
  store.resize(a.size() * a.itemsize());
  const char* src = static_cast<const char*>(a.data<void>());
  for (int64_t i = 0; i < static_cast<int64_t>(a.size()); i++) {
    std::memcpy(store.data() + i * a.itemsize(), src + element_offset(a, i), a.itemsize());
  }
  return store.data();
}

// X as float32 row-major, in place or converted into `store`.
inline const float* float_rows(const mx::array& x, std::vector<float>& store) {
  if (x.dtype() == mx::float32 && x.flags().row_contiguous) {
    return x.data<float>();
  }
  std::vector<char> raw;
  const void* p = row_major_data(x, raw);
  store.resize(x.size());
  for (size_t i = 0; i < x.size(); i++) {
    if (x.dtype() == mx::float32) {
      store[i] = static_cast<const float*>(p)[i];
    } else if (x.dtype() == mx::float16) {
      store[i] = to_float(static_cast<const f16_t*>(p)[i]);
    } else {
      store[i] = to_float(static_cast<const bf16_t*>(p)[i]);
    }
  }
  return store.data();
}

// Where the kernel writes Y: the output itself when it is float32, else a
// float32 buffer that finish_output() rounds into the output's dtype.
inline float* float_output(mx::array& out, std::vector<float>& store) {
  if (out.dtype() == mx::float32) {
    return out.data<float>();
  }
  store.resize(out.size());
  return store.data();
}

inline void finish_output(mx::array& out, const std::vector<float>& store) {
  if (out.dtype() == mx::float16) {
    auto* o = out.data<mx::float16_t>();
    for (size_t i = 0; i < out.size(); i++) {
      o[i] = static_cast<mx::float16_t>(store[i]);
    }
  } else if (out.dtype() == mx::bfloat16) {
    auto* o = out.data<mx::bfloat16_t>();
    for (size_t i = 0; i < out.size(); i++) {
      o[i] = static_cast<mx::bfloat16_t>(store[i]);
    }
  }
}

} // namespace fsx_cpu
