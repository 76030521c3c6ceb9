// norm.cpp: RMSNorm, and the residual add that feeds it, as one primitive each.
//
//   rms_norm(x, w, eps)              y = x / sqrt(mean(x²) + eps) · w     over the last axis
//   add_rms_norm(x, r, w, eps)       h = x + r;  (h, rms_norm(h, w, eps))  two outputs
//
//   x, r  [..., D]  float32 | float16 | bfloat16 (any strides; the last axis contiguous or not)
//   w     [D]
//   y     [..., D]  promote(x, w)    h [..., D] promote(x, r), rounded before it is normed
//
// Why a primitive for something this small: on a CPU stream MLX runs
// mx.fast.rms_norm as its fallback, eight graph nodes (astype, square, mean,
// add, rsqrt, two multiplies and their broadcasts), and each node costs
// ~10 µs to schedule whatever its size — more than the arithmetic of a
// decode-sized norm (576 features). One node here. Accumulated in float32,
// the same formula as model/reference.py's rms_norm. One thread: a norm reads
// a few KB per token.

#include <cmath>
#include <stdexcept>
#include <vector>

#include "primitives.h"
#include "rows.h"

namespace fsx_cpu {

namespace {

void check_norm_args(const mx::array& x, const mx::array& w, const char* op) {
  if (x.ndim() < 1 || w.ndim() != 1 || w.shape(0) != x.shape(-1)) {
    throw std::invalid_argument(std::string(op) + ": x [..., D] and w [D] expected");
  }
  if (!is_float(x.dtype()) || !is_float(w.dtype())) {
    throw std::invalid_argument(std::string(op) + ": float32, float16 or bfloat16 inputs expected");
  }
}

} // namespace

mx::array rms_norm(const mx::array& x, const mx::array& w, float eps, mx::StreamOrDevice s) {
  mx::Stream stream = cpu_stream(s, "rms_norm");
  check_norm_args(x, w, "rms_norm");
  return mx::array(
      x.shape(), mx::promote_types(x.dtype(), w.dtype()),
      std::make_shared<RMSNorm>(stream, eps, false), {x, w});
}

std::vector<mx::array> add_rms_norm(
    const mx::array& x, const mx::array& residual, const mx::array& w, float eps,
    mx::StreamOrDevice s) {
  mx::Stream stream = cpu_stream(s, "add_rms_norm");
  check_norm_args(x, w, "add_rms_norm");
  if (residual.shape() != x.shape() || !is_float(residual.dtype())) {
    throw std::invalid_argument("add_rms_norm: the residual must be a float array shaped as x");
  }
  const mx::Dtype h_type = mx::promote_types(x.dtype(), residual.dtype());
  return mx::array::make_arrays(
      {x.shape(), x.shape()}, {h_type, mx::promote_types(h_type, w.dtype())},
      std::make_shared<RMSNorm>(stream, eps, true), {x, residual, w});
}

void RMSNorm::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  auto& encoder = start_task(stream(), inputs, outputs);
  encoder.dispatch([inputs, outputs, eps = eps_, add = add_]() mutable {
    const mx::array& x = inputs[0];
    const mx::array& w = inputs.back();
    const int D = x.shape(-1);
    const int64_t rows = D > 0 ? static_cast<int64_t>(x.size() / D) : 0;
    std::vector<float> wf(D), h(D), r(D), y(D);
    read_row(w, 0, wf.data());
    for (int64_t row = 0; row < rows; row++) {
      read_row(x, row, h.data());
      if (add) { // h = x + residual, rounded to h's dtype as the separate add would
        read_row(inputs[1], row, r.data());
        for (int i = 0; i < D; i++) {
          h[i] += r[i];
        }
        write_row(outputs[0], row, h.data());
        if (outputs[0].dtype() != mx::float32) {
          read_row(outputs[0], row, h.data());
        }
      }
      rms_norm_row(h.data(), wf.data(), D, eps, y.data());
      write_row(outputs.back(), row, y.data());
    }
  });
}

void RMSNorm::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  throw std::runtime_error("FsxCpuRMSNorm has no GPU implementation");
}

} // namespace fsx_cpu
