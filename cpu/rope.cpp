// rope.cpp: Qwen3's per-head RMSNorm and RoPE on q and k, as one primitive.
//
//   qk_norm_rope(q, k, inv_freq, q_w?, k_w?, offsets?; eps, dims, traditional, scale, mscale, offset)
//
//   q  [B, L, Hq, D], k [B, L, Hkv, D]   the qkv product's views (any strides)
//   inv_freq [dims / 2] float32          angle per unit of position (model/rope.py, Rope.inv_freq:
//                                        every scaling rule ends up as these numbers)
//   q_w, k_w [D]                         Qwen3's q_norm / k_norm weights, or absent
//   offsets [B] int32                    per-row positions (the server's batched cache), or absent:
//                                        then every row starts at `offset`
//   -> q' [B, Hq, L, D], k' [B, Hkv, L, D]   transposed to heads-first, as attention reads them
//
// For the token at position p = offset + l (offsets[b] + l):
//   x <- x / sqrt(mean(x²) + eps) · w                   (only with q_w/k_w)
//   θ_j = (p · scale) · inv_freq[j],  j < dims/2
//   (x_a, x_b) <- mscale · (x_a cos θ_j − x_b sin θ_j,  x_a sin θ_j + x_b cos θ_j)
// with pairs (j, j + dims/2) (rotate-half), or (2j, 2j+1) when traditional;
// features from dims on pass through (partial rotary, Phi-3). mscale is
// yarn/longrope's attention factor (1 otherwise). The formula is
// model/reference.py's qk_norm_rope, computed in float32 the same way.
//
// On a CPU stream MLX's mx.fast.rope is its fallback: ~15 graph nodes per
// call (arange, the angles, cos, sin, slices, concatenation), two calls per
// layer, plus the norms and transposes — ~40 nodes per layer at ~10 µs each
// to schedule, for a few thousand multiplies. One node here: cos/sin are
// computed once per position and shared by every head.

#include <cmath>
#include <stdexcept>
#include <vector>

#include "primitives.h"
#include "rows.h"

namespace fsx_cpu {

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
    mx::StreamOrDevice s) {
  mx::Stream stream = cpu_stream(s, "qk_norm_rope");
  if (q.ndim() != 4 || k.ndim() != 4 || q.shape(0) != k.shape(0) || q.shape(1) != k.shape(1) ||
      q.shape(3) != k.shape(3)) {
    throw std::invalid_argument("qk_norm_rope: q [B, L, Hq, D] and k [B, L, Hkv, D] expected");
  }
  const int D = q.shape(3);
  if (dims <= 0 || dims % 2 != 0 || dims > D || inv_freq.ndim() != 1 ||
      inv_freq.shape(0) != dims / 2 || inv_freq.dtype() != mx::float32) {
    throw std::invalid_argument("qk_norm_rope: 0 < dims <= D, even, and float32 inv_freq [dims / 2]");
  }
  if (!is_float(q.dtype()) || !is_float(k.dtype())) {
    throw std::invalid_argument("qk_norm_rope: float32, float16 or bfloat16 q and k expected");
  }
  if (q_weight.has_value() != k_weight.has_value()) {
    throw std::invalid_argument("qk_norm_rope: both norm weights or neither");
  }
  std::vector<mx::array> inputs = {q, k, inv_freq};
  if (q_weight) {
    for (const auto* w : {&*q_weight, &*k_weight}) {
      if (w->ndim() != 1 || w->shape(0) != D || !is_float(w->dtype())) {
        throw std::invalid_argument("qk_norm_rope: norm weights [D] expected");
      }
    }
    inputs.push_back(*q_weight);
    inputs.push_back(*k_weight);
  }
  if (offsets) {
    if (offsets->ndim() != 1 || offsets->shape(0) != q.shape(0)) {
      throw std::invalid_argument("qk_norm_rope: offsets [B] expected");
    }
    inputs.push_back(mx::astype(*offsets, mx::int32, stream));
  }
  const int B = q.shape(0), L = q.shape(1);
  return mx::array::make_arrays(
      {{B, q.shape(2), L, D}, {B, k.shape(2), L, D}},
      {q.dtype(), k.dtype()},
      std::make_shared<QKNormRope>(
          stream, QKNormRope::Params{eps, dims, traditional, scale, mscale, offset,
                                     q_weight.has_value(), offsets.has_value()}),
      inputs);
}

namespace {

// x [D] in place: rotate the first dims features by the angles whose cos/sin are given.
void rotate(float* x, const float* cos_t, const float* sin_t, int dims, bool traditional, float mscale) {
  const int half = dims / 2;
  for (int j = 0; j < half; j++) {
    const int a = traditional ? 2 * j : j, b = traditional ? 2 * j + 1 : j + half;
    const float xa = x[a], xb = x[b];
    x[a] = (xa * cos_t[j] - xb * sin_t[j]) * mscale;
    x[b] = (xa * sin_t[j] + xb * cos_t[j]) * mscale;
  }
}

} // namespace

void QKNormRope::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  auto& encoder = start_task(stream(), inputs, outputs);
  encoder.dispatch([inputs, outputs, p = params_]() mutable {
    const mx::array &q = inputs[0], &k = inputs[1], &inv_freq = inputs[2];
    const int B = q.shape(0), L = q.shape(1), D = q.shape(3), half = p.dims / 2;
    const int* offsets = p.per_row_offsets ? inputs.back().data<int32_t>() : nullptr;

    // cos/sin [B or 1, L, half]: one table per distinct starting position
    const int tables = offsets ? B : 1;
    std::vector<float> cos_t(static_cast<size_t>(tables) * L * half), sin_t(cos_t.size());
    const float* f = inv_freq.data<float>();
    for (int t = 0; t < tables; t++) {
      const int start = offsets ? offsets[t] : p.offset;
      for (int l = 0; l < L; l++) {
        const float pos = static_cast<float>(start + l) * p.scale;
        for (int j = 0; j < half; j++) {
          const float theta = pos * f[j];
          cos_t[(t * L + l) * half + j] = std::cos(theta);
          sin_t[(t * L + l) * half + j] = std::sin(theta);
        }
      }
    }

    std::vector<float> wf(D), x(D);
    for (int which = 0; which < 2; which++) { // q, then k
      const mx::array& in = inputs[which];
      mx::array& out = outputs[which];
      const int H = in.shape(2);
      if (p.norm) {
        read_row(inputs[3 + which], 0, wf.data());
      }
      for (int b = 0; b < B; b++) {
        for (int l = 0; l < L; l++) {
          const int t = offsets ? b : 0;
          const float* c = cos_t.data() + (t * L + l) * half;
          const float* s = sin_t.data() + (t * L + l) * half;
          for (int h = 0; h < H; h++) {
            read_row(in, (static_cast<int64_t>(b) * L + l) * H + h, x.data()); // in [B, L, H, D]
            if (p.norm) {
              rms_norm_row(x.data(), wf.data(), D, p.eps, x.data());
              // the normed q/k are an array of the model's dtype before RoPE reads them
              round_to(out.dtype(), x.data(), D);
            }
            rotate(x.data(), c, s, p.dims, p.traditional, p.mscale);
            write_row(out, (static_cast<int64_t>(b) * H + h) * L + l, x.data()); // out [B, H, L, D]
          }
        }
      }
    }
  });
}

void QKNormRope::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  throw std::runtime_error("FsxCpuQKNormRope has no GPU implementation");
}

} // namespace fsx_cpu
