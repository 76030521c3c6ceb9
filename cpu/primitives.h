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
// and the rest of a decoded token's ops, which MLX runs on a CPU as its
// fallbacks — many small graph nodes each, at ~10 µs apiece to schedule:
//
//   rms_norm(x, w, eps), add_rms_norm(x, r, w, eps)          (norm.cpp)
//   qk_norm_rope(q, k, inv_freq, ...)                        (rope.cpp)
//   attention(q, k, v, mask?, scale, causal, window)         (attention.cpp)
//
// Only eval_cpu exists: on a GPU stream the ops refuse to build (the Python
// side never asks; MLX's own kernels serve the GPU).

#pragma once

#include <optional>
#include <string>
#include <vector>

#include "mlx/backend/cpu/encoder.h"
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

mx::array rms_norm(const mx::array& x, const mx::array& w, float eps, mx::StreamOrDevice s = {});

std::vector<mx::array> add_rms_norm(
    const mx::array& x,
    const mx::array& residual,
    const mx::array& w,
    float eps,
    mx::StreamOrDevice s = {});

class RMSNorm : public mx::Primitive {
 public:
  RMSNorm(mx::Stream stream, float eps, bool add) : mx::Primitive(stream), eps_(eps), add_(add) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs)
      override;
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override;
  const char* name() const override {
    return add_ ? "FsxCpuAddRMSNorm" : "FsxCpuRMSNorm";
  }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto& o = static_cast<const RMSNorm&>(other);
    return eps_ == o.eps_ && add_ == o.add_;
  }

 private:
  float eps_;
  bool add_; // inputs (x, residual, w) -> (x + residual, its norm); else (x, w) -> norm
};

std::vector<mx::array> qk_norm_rope(
    const mx::array& q,
    const mx::array& k,
    const mx::array& inv_freq,
    const std::optional<mx::array>& q_weight,
    const std::optional<mx::array>& k_weight,
    const std::optional<mx::array>& offsets,
    float eps,
    int dims,
    bool traditional,
    float scale,
    float mscale,
    int offset,
    mx::StreamOrDevice s = {});

class QKNormRope : public mx::Primitive {
 public:
  struct Params {
    float eps;
    int dims;
    bool traditional;
    float scale;
    float mscale;
    int offset;
    bool norm; // inputs carry q_w, k_w
    bool per_row_offsets; // the last input is offsets [B]
    bool operator==(const Params&) const = default;
  };
  QKNormRope(mx::Stream stream, Params p) : mx::Primitive(stream), params_(p) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs)
      override;
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override;
  const char* name() const override {
    return "FsxCpuQKNormRope";
  }
  bool is_equivalent(const mx::Primitive& other) const override {
    return params_ == static_cast<const QKNormRope&>(other).params_;
  }

 private:
  Params params_;
};

mx::array attention(
    const mx::array& q,
    const mx::array& k,
    const mx::array& v,
    const std::optional<mx::array>& mask,
    float scale,
    bool causal,
    int window,
    mx::StreamOrDevice s = {});

class Attention : public mx::Primitive {
 public:
  Attention(mx::Stream stream, float scale, bool causal, int window, bool has_mask)
      : mx::Primitive(stream), scale_(scale), causal_(causal), window_(window), has_mask_(has_mask) {}
  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs)
      override;
  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override;
  const char* name() const override {
    return "FsxCpuAttention";
  }
  bool is_equivalent(const mx::Primitive& other) const override {
    auto& o = static_cast<const Attention&>(other);
    return scale_ == o.scale_ && causal_ == o.causal_ && window_ == o.window_ &&
        has_mask_ == o.has_mask_;
  }

 private:
  float scale_;
  bool causal_;
  int window_; // > 0: query at position p sees keys p - window + 1 .. p only
  bool has_mask_; // a fourth input: the mask broadcast to [B, Hq, L, S]
};

// The checks every op shares: a CPU stream, float activations.
mx::Stream cpu_stream(mx::StreamOrDevice s, const char* op);

// The start of every eval_cpu here: allocate the outputs and tell the stream's
// encoder what the task reads and writes; the caller then dispatch()es the work.
mx::cpu::CommandEncoder& start_task(
    mx::Stream stream,
    const std::vector<mx::array>& inputs,
    std::vector<mx::array>& outputs);
bool is_float(mx::Dtype t);

} // namespace fsx_cpu
