// linear.cpp: Y = X · Wᵀ with float weights, on MLX's CPU stream.
//
//   x [..., K]  float32 | float16 | bfloat16
//   w [N, K]    float32 | float16 | bfloat16   (an nn.Linear weight: rows are outputs)
//   y [..., N]  promote(x, w); accumulated in float32
//
// What mx.matmul(x, w.T) does on a CPU, but with M = 1 (decode) read as a
// matrix-vector product that streams W once instead of one cblas_sgemm call
// (docs/performance.md, "The matvec"), a few rows reading W once for all of
// them, and many rows in matmul.h's own tiled GEMM instead of the wheel's
// bundled BLAS. Kernels: matmul.h; weight layouts: weights.h; threads: threads.h.

#include <stdexcept>

#include "mlx/allocator.h"

#include "arrays.h"
#include "matmul.h"
#include "primitives.h"

namespace fsx_cpu {

mx::Stream cpu_stream(mx::StreamOrDevice s, const char* op) {
  mx::Stream stream = mx::to_stream(s);
  if (stream.device != mx::Device::cpu) {
    throw std::invalid_argument(std::string(op) + ": fsx's CPU kernels run on a CPU stream only");
  }
  return stream;
}

mx::cpu::CommandEncoder& start_task(
    mx::Stream stream,
    const std::vector<mx::array>& inputs,
    std::vector<mx::array>& outputs) {
  for (auto& out : outputs) {
    out.set_data(mx::allocator::malloc(out.nbytes()));
  }
  auto& encoder = mx::cpu::get_command_encoder(stream);
  for (auto& in : inputs) {
    encoder.set_input_array(in);
  }
  for (auto& out : outputs) {
    encoder.set_output_array(out);
  }
  return encoder;
}

bool is_float(mx::Dtype t) {
  return t == mx::float32 || t == mx::float16 || t == mx::bfloat16;
}

mx::array linear(const mx::array& x, const mx::array& w, mx::StreamOrDevice s) {
  mx::Stream stream = cpu_stream(s, "linear");
  if (x.ndim() < 1 || w.ndim() != 2 || x.shape(-1) != w.shape(1)) {
    throw std::invalid_argument("linear: x [..., K] and w [N, K] expected");
  }
  if (!is_float(x.dtype()) || !is_float(w.dtype())) {
    throw std::invalid_argument("linear: float32, float16 or bfloat16 inputs expected");
  }
  auto shape = x.shape();
  shape.back() = w.shape(0);
  return mx::array(
      shape,
      mx::promote_types(x.dtype(), w.dtype()),
      std::make_shared<Linear>(stream),
      {x, w});
}

void Linear::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  mx::array x = inputs[0], w = inputs[1];
  auto& encoder = start_task(stream(), inputs, outputs);
  mx::array out = outputs[0];
  encoder.dispatch([x, w, out]() mutable {
    const int K = w.shape(1), N = w.shape(0);
    const int M = K > 0 ? static_cast<int>(x.size() / K) : static_cast<int>(out.size() / std::max(N, 1));
    std::vector<float> x_store, y_store;
    std::vector<char> w_store;
    const float* xf = float_rows(x, x_store);
    float* y = float_output(out, y_store);
    const void* wp = row_major_data(w, w_store);
    if (w.dtype() == mx::float32) {
      matmul(DenseWeights<float>{static_cast<const float*>(wp), K}, xf, M, K, N, y);
    } else if (w.dtype() == mx::float16) {
      matmul(DenseWeights<f16_t>{static_cast<const f16_t*>(wp), K}, xf, M, K, N, y);
    } else {
      matmul(DenseWeights<bf16_t>{static_cast<const bf16_t*>(wp), K}, xf, M, K, N, y);
    }
    finish_output(out, y_store);
  });
}

void Linear::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  throw std::runtime_error("FsxCpuLinear has no GPU implementation");
}

} // namespace fsx_cpu
