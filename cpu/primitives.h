// primitives.h: fsx's CPU matrix products as MLX primitives.
//
// Each op builds a node in MLX's lazy graph, like any mx op; when MLX
// evaluates it on the CPU stream, eval_cpu encodes one task on that stream
// that runs the kernels of matmul.h. So graphs stay lazy and decode
// pipelining (mx.async_eval) keeps working: the op is just another primitive.
//
//   linear(x, w):                        y = x · wᵀ          (linear.cpp)
//   quantized_matmul(x, w, s, b, g, bits): y = x · dequant(w)ᵀ (quantized_matmul.cpp)
//   quantized_swiglu(x, w, s, b, g, bits): silu(x · gateᵀ) * (x · upᵀ), w = [gate; up]
//                                          (the same product, the SwiGLU applied as it is
//                                          written out: one primitive instead of five ops)
//
// Only eval_cpu exists: on a GPU stream the ops refuse to build (the Python
// side never asks; MLX's own kernels serve the GPU).

#pragma once

#include <string>

#include "mlx/ops.h"
#include "mlx/primitives.h"

namespace fsx_cpu {

namespace mx = mlx::core;

mx::array linear(const mx::array& x, const mx::array& w, mx::StreamOrDevice s = {});

mx::array quantized_matmul(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    int group_size,
    int bits,
    mx::StreamOrDevice s = {});

class Linear : public mx::Primitive {
 public:
  explicit Linear(mx::Stream stream) : mx::Primitive(stream) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs)
      override;
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override;
  const char* name() const override {
    return "FsxCpuLinear";
  }
  bool is_equivalent(const mx::Primitive&) const override {
    return true;
  }
};

mx::array quantized_swiglu(
    const mx::array& x,
    const mx::array& w,
    const mx::array& scales,
    const mx::array& biases,
    int group_size,
    int bits,
    mx::StreamOrDevice s = {});

class QuantizedMatmul : public mx::Primitive {
 public:
  QuantizedMatmul(mx::Stream stream, int group_size, int bits, bool swiglu)
      : mx::Primitive(stream), group_size_(group_size), bits_(bits), swiglu_(swiglu) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs)
      override;
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override;
  const char* name() const override {
    return swiglu_ ? "FsxCpuQuantizedSwiglu" : "FsxCpuQuantizedMatmul";
  }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto& o = static_cast<const QuantizedMatmul&>(other);
    return group_size_ == o.group_size_ && bits_ == o.bits_ && swiglu_ == o.swiglu_;
  }

 private:
  int group_size_;
  int bits_;
  bool swiglu_; // output silu(y[:, :N/2]) * y[:, N/2:] instead of y
};

// The check both ops share: a CPU stream, float activations.
mx::Stream cpu_stream(mx::StreamOrDevice s, const char* op);
bool is_float(mx::Dtype t);

} // namespace fsx_cpu
