// quantized_matmul.cpp: Y = X · dequantize(W)ᵀ for MLX's affine quantization,
// on MLX's CPU stream: mx.quantized_matmul(x, w, scales, biases,
// transpose=True, group_size, bits) in the cases fsx holds.
//
//   x       [..., K]            float32 | float16 | bfloat16
//   w       [N, K · bits / 32]  uint32: 32 / bits codes each, low bits first
//   scales  [N, K / group]      float32 | float16 | bfloat16
//   biases  [N, K / group]      same dtype as scales
//   y       [..., N]            promote(x, scales); accumulated in float32
//
//   y[m, n] = Σ_k x[m, k] · (scales[n, k/g] · q[n, k] + biases[n, k/g])
//
// bits 4 or 8, group g 32, 64 or 128 (GGUF Q4_0/Q4_1/Q8_0 load as affine with
// g = 32; mlx-community checkpoints use 64). The weight is dequantized in
// registers, 32 values at a time, never written out (weights.h,
// AffineWeights); kernels and threads: matmul.h.
//
// quantized_swiglu is the same product over w = [gate; up] ([2N, K] rows),
// written out as silu(y[:, :N]) * y[:, N:] -> [..., N]: the MLP's gate and up
// projections and its activation in one primitive (the model stacks them).
//
// Unlike MLX's CPU qmv with bfloat16 x, which accumulates in bfloat16 (5-8 %
// error: docs/quantization.md), every dtype accumulates in float32 here.

#include <cmath>
#include <stdexcept>

#include "arrays.h"
#include "matmul.h"
#include "primitives.h"

namespace fsx_cpu {

namespace {

mx::array affine_product(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    int group_size,
    int bits,
    bool swiglu,
    mx::StreamOrDevice s) {
  mx::Stream stream = cpu_stream(s, "quantized_matmul");
  if (bits != 4 && bits != 8) {
    throw std::invalid_argument("quantized_matmul: bits must be 4 or 8");
  }
  if (group_size != 32 && group_size != 64 && group_size != 128) {
    throw std::invalid_argument("quantized_matmul: group_size must be 32, 64 or 128");
  }
  if (x.ndim() < 1 || w.ndim() != 2 || w.dtype() != mx::uint32) {
    throw std::invalid_argument("quantized_matmul: x [..., K] and uint32 w [N, K*bits/32] expected");
  }
  const int K = x.shape(-1), N = w.shape(0);
  if (K <= 0 || K % group_size != 0 || w.shape(1) * 32 / bits != K) {
    throw std::invalid_argument("quantized_matmul: w's packed width does not match x's K and bits");
  }
  const mx::Shape groups = {N, K / group_size};
  if (scales.shape() != groups || biases.shape() != groups) {
    throw std::invalid_argument("quantized_matmul: scales and biases must be [N, K / group_size]");
  }
  if (!is_float(x.dtype()) || !is_float(scales.dtype()) || biases.dtype() != scales.dtype()) {
    throw std::invalid_argument("quantized_matmul: float x, and scales and biases of one float dtype expected");
  }
  if (swiglu && N % 2 != 0) {
    throw std::invalid_argument("quantized_swiglu: w must stack gate and up: an even number of rows");
  }
  auto shape = x.shape();
  shape.back() = swiglu ? N / 2 : N;
  return mx::array(
      shape,
      mx::promote_types(x.dtype(), scales.dtype()),
      std::make_shared<QuantizedMatmul>(stream, group_size, bits, swiglu),
      {x, w, scales, biases});
}

// out[m, n] = silu(y[m, n]) * y[m, N + n], y [M, 2N]: the SwiGLU of mx's swiglu, g·σ(g)·u.
void swiglu_rows(const float* y, int M, int N, float* out) {
  for (int m = 0; m < M; m++) {
    const float* g = y + int64_t(m) * 2 * N;
    const float* u = g + N;
    float* o = out + int64_t(m) * N;
    for (int n = 0; n < N; n++) {
      o[n] = g[n] / (1.0f + std::exp(-g[n])) * u[n];
    }
  }
}

} // namespace

mx::array quantized_matmul(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    int group_size,
    int bits,
    mx::StreamOrDevice s) {
  return affine_product(x, w, scales, biases, group_size, bits, false, s);
}

mx::array quantized_swiglu(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    int group_size,
    int bits,
    mx::StreamOrDevice s) {
  return affine_product(x, w, scales, biases, group_size, bits, true, s);
}

namespace {

template <int BITS, typename S>
void run_affine(
    const float* x,
    const void* w,
    const void* scales,
    const void* biases,
    int M,
    int K,
    int N,
    int group_size,
    float* y) {
  int shift = group_size == 32 ? 5 : (group_size == 64 ? 6 : 7);
  AffineWeights<BITS, S> reader{
      static_cast<const uint32_t*>(w),
      static_cast<const S*>(scales),
      static_cast<const S*>(biases),
      int64_t(K) * BITS / 32,
      int64_t(K) / group_size,
      shift};
  matmul(reader, x, M, K, N, y);
}

template <int BITS>
void run_bits(
    mx::Dtype scale_dtype,
    const float* x,
    const void* w,
    const void* scales,
    const void* biases,
    int M,
    int K,
    int N,
    int group_size,
    float* y) {
  if (scale_dtype == mx::float32) {
    run_affine<BITS, float>(x, w, scales, biases, M, K, N, group_size, y);
  } else if (scale_dtype == mx::float16) {
    run_affine<BITS, f16_t>(x, w, scales, biases, M, K, N, group_size, y);
  } else {
    run_affine<BITS, bf16_t>(x, w, scales, biases, M, K, N, group_size, y);
  }
}

} // namespace

void QuantizedMatmul::eval_cpu(
    const std::vector<mx::array>& inputs,
    std::vector<mx::array>& outputs) {
  mx::array x = inputs[0], w = inputs[1], scales = inputs[2], biases = inputs[3];
  auto& encoder = start_task(stream(), inputs, outputs);
  mx::array out = outputs[0];
  encoder.dispatch([x, w, scales, biases, out, g = group_size_, bits = bits_, swiglu = swiglu_]() mutable {
    const int K = x.shape(-1), N = w.shape(0);
    const int M = static_cast<int>(x.size() / K);
    std::vector<float> x_store, y_store, product;
    std::vector<char> w_store, s_store, b_store;
    const float* xf = float_rows(x, x_store);
    float* o = float_output(out, y_store);
    if (swiglu) {
      product.resize(size_t(M) * N);
    }
    float* y = swiglu ? product.data() : o;
    const void* wp = row_major_data(w, w_store);
    const void* sp = row_major_data(scales, s_store);
    const void* bp = row_major_data(biases, b_store);
    if (bits == 4) {
      run_bits<4>(scales.dtype(), xf, wp, sp, bp, M, K, N, g, y);
    } else {
      run_bits<8>(scales.dtype(), xf, wp, sp, bp, M, K, N, g, y);
    }
    if (swiglu) {
      swiglu_rows(y, M, N / 2, o);
    }
    finish_output(out, y_store);
  });
}

void QuantizedMatmul::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  throw std::runtime_error("FsxCpuQuantizedMatmul has no GPU implementation");
}

} // namespace fsx_cpu
