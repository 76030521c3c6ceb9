// attention.cpp: scaled dot-product attention with grouped-query heads, one primitive.
//
//   attention(q, k, v, mask?; scale, causal, window)
//
//   q    [B, Hq, L, D]      the L newest positions' queries
//   k, v [B, Hkv, S, D]     every key/value they may read: the KV cache's
//                           buffer sliced to the tokens so far (any strides)
//   mask [B, Hq, L, S]      optional, broadcast (zero strides) by the builder:
//                           bool (true = visible) or float (added to the scores)
//   -> o [B, Hq, L, D]      in q's dtype
//
//   o[b, h, i] = Σ_j softmax_j(scale · q[b,h,i] · k[b,g,j] + mask[b,h,i,j]) · v[b,g,j]
//   g = h / (Hq / Hkv)   (query heads share kv heads in groups)
//   causal: query i sees keys j <= S − L + i (the queries are the last L positions)
//   window W > 0: query i, at position p = S − L + i, sees keys p − W < j <= p only
//            (causal too, and on top of any mask: model/window.py)
//
// The formula is model/reference.py's attention. Why a primitive: on a CPU
// stream mx.fast.scaled_dot_product_attention is MLX's fallback — reshapes
// for the groups, two matmuls through the BLAS, a softmax, a mask — about a
// dozen graph nodes per layer at ~10 µs each to schedule, more than the
// arithmetic of a decode step (S × D multiply-adds per head).
//
// Layout of the work: one task per (batch row, kv head, query position); a
// task scores all the query heads of its group against each key as it is
// loaded (GQA reads each key once per group, not once per head), then does
// each row's softmax in float32 and accumulates the values the same way, key
// by key. A key a row may not see is skipped, never multiplied by zero: a
// masked-out slot may hold anything (a padded row of the server's batch).
// A row that sees no key at all gives zeros. Tasks go to the thread pool when
// there is enough work to share (prefill, long contexts); a decode step at a
// short context runs on the calling thread.

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "primitives.h"
#include "rows.h"
#include "simd.h"
#include "threads.h"

namespace fsx_cpu {

mx::array attention(
    const mx::array& q,
    const mx::array& k,
    const mx::array& v,
    const std::optional<mx::array>& mask,
    float scale,
    bool causal,
    int window,
    mx::StreamOrDevice s) {
  mx::Stream stream = cpu_stream(s, "attention");
  if (q.ndim() != 4 || k.ndim() != 4 || v.shape() != k.shape() || q.shape(0) != k.shape(0) ||
      q.shape(3) != k.shape(3)) {
    throw std::invalid_argument("attention: q [B, Hq, L, D] and k, v [B, Hkv, S, D] expected");
  }
  const int B = q.shape(0), Hq = q.shape(1), L = q.shape(2), Hkv = k.shape(1), S = k.shape(2);
  if (Hkv == 0 || Hq % Hkv != 0) {
    throw std::invalid_argument("attention: query heads must be a multiple of kv heads");
  }
  if ((causal || window > 0) && L > S) {
    throw std::invalid_argument("attention: a causal mask or a window needs at least as many keys as queries");
  }
  if (window < 0) {
    throw std::invalid_argument("attention: the window must be positive (0: none)");
  }
  if (!is_float(q.dtype()) || !is_float(k.dtype()) || !is_float(v.dtype())) {
    throw std::invalid_argument("attention: float32, float16 or bfloat16 q, k, v expected");
  }
  std::vector<mx::array> inputs = {q, k, v};
  if (mask) {
    if (!is_float(mask->dtype()) && mask->dtype() != mx::bool_) {
      throw std::invalid_argument("attention: a bool or float mask expected");
    }
    inputs.push_back(mx::broadcast_to(*mask, {B, Hq, L, S}, stream));
  }
  return mx::array(
      q.shape(), q.dtype(),
      std::make_shared<Attention>(stream, scale, causal, window, mask.has_value()), inputs);
}

namespace {

float dot(const float* a, const float* b, int D) {
  f32x8 acc{};
  int d = 0;
  for (; d + 8 <= D; d += 8) {
    acc += load8(a + d) * load8(b + d);
  }
  float sum = hsum(acc);
  for (; d < D; d++) {
    sum += a[d] * b[d];
  }
  return sum;
}

void axpy(float a, const float* x, float* y, int D) { // y += a · x
  int d = 0;
  const f32x8 av = splat8(a);
  for (; d + 8 <= D; d += 8) {
    store8(y + d, load8(y + d) + av * load8(x + d));
  }
  for (; d < D; d++) {
    y[d] += a * x[d];
  }
}

// Rows of k or v [B, Hkv, S, D] as float32: in place when they already are, else
// converted once per task into `store` (all S keys of one (b, kv head)).
struct KeyRows {
  const mx::array& a;
  std::vector<float> store;
  const float* base = nullptr;
  int64_t stride = 0;

  KeyRows(const mx::array& a_, int b, int g) : a(a_) {
    const int S = a.shape(2), D = a.shape(3);
    const int64_t first = (static_cast<int64_t>(b) * a.shape(1) + g) * S;
    if (f32_rows(a)) {
      base = f32_row(a, first);
      stride = a.strides()[2];
    } else {
      store.resize(static_cast<size_t>(S) * D);
      for (int j = 0; j < S; j++) {
        read_row(a, first + j, store.data() + static_cast<size_t>(j) * D);
      }
      base = store.data();
      stride = D;
    }
  }
  const float* row(int j) const {
    return base + j * stride;
  }
};

} // namespace

void Attention::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  auto& encoder = start_task(stream(), inputs, outputs);
  mx::array out = outputs[0];
  encoder.dispatch([inputs, out, scale = scale_, causal = causal_, window = window_,
                    has_mask = has_mask_]() mutable {
    const mx::array &q = inputs[0], &k = inputs[1], &v = inputs[2];
    const int B = q.shape(0), Hq = q.shape(1), L = q.shape(2), D = q.shape(3);
    const int Hkv = k.shape(1), S = k.shape(2), G = Hq / Hkv;
    const float neg_inf = -std::numeric_limits<float>::infinity();

    auto task = [&](int t) { // t = (b · Hkv + g) · L + i
      const int i = t % L, g = (t / L) % Hkv, b = t / (L * Hkv);
      // keys first .. last-1 may be seen: the causal bound, and the window's band
      const int p = S - L + i;
      const int last = causal || window > 0 ? p + 1 : S;
      const int first = window > 0 ? std::max(0, p - window + 1) : 0;
      KeyRows keys(k, b, g), values(v, b, g);
      // queries of this group [G, D], pre-multiplied by the scale
      std::vector<float> qs(static_cast<size_t>(G) * D), scores(static_cast<size_t>(G) * S);
      for (int h = 0; h < G; h++) {
        float* qh = qs.data() + h * D;
        read_row(q, (static_cast<int64_t>(b) * Hq + g * G + h) * L + i, qh);
        for (int d = 0; d < D; d++) {
          qh[d] *= scale;
        }
      }
      // scores[h, j]; -inf where the key is not visible
      for (int j = 0; j < S; j++) {
        if (j < first || j >= last) {
          for (int h = 0; h < G; h++) {
            scores[h * S + j] = neg_inf;
          }
          continue;
        }
        const float* kj = keys.row(j);
        for (int h = 0; h < G; h++) {
          float sc = dot(qs.data() + h * D, kj, D);
          if (has_mask) {
            const mx::array& m = inputs[3];
            const float mv = read_scalar(m, offset4(m, b, g * G + h, i, j));
            sc = m.dtype() == mx::bool_ ? (mv != 0.0f ? sc : neg_inf) : sc + mv;
          }
          scores[h * S + j] = sc;
        }
      }
      // softmax per row in float32, then o = Σ_j p_j v_j over the visible keys
      std::vector<float> o(D);
      for (int h = 0; h < G; h++) {
        float* sc = scores.data() + h * S;
        const float mx_score = *std::max_element(sc, sc + S);
        std::fill(o.begin(), o.end(), 0.0f);
        if (mx_score != neg_inf) {
          float total = 0.0f;
          for (int j = 0; j < S; j++) {
            sc[j] = sc[j] == neg_inf ? 0.0f : std::exp(sc[j] - mx_score);
            total += sc[j];
          }
          const float inv_total = 1.0f / total;
          for (int j = 0; j < S; j++) {
            if (sc[j] != 0.0f) {
              axpy(sc[j] * inv_total, values.row(j), o.data(), D);
            }
          }
        }
        write_row(out, (static_cast<int64_t>(b) * Hq + g * G + h) * L + i, o.data());
      }
    };

    const int n_tasks = B * Hkv * L;
    // Share the tasks between threads only when each thread gets real work:
    // waking the pool costs a few microseconds, a short decode step less.
    const double work = static_cast<double>(B) * Hq * L * S * D;
    if (work >= (1 << 18) && n_tasks > 1) {
      ThreadPool::instance().run(n_tasks, task);
    } else {
      for (int t = 0; t < n_tasks; t++) {
        task(t);
      }
    }
  });
}

void Attention::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  throw std::runtime_error("FsxCpuAttention has no GPU implementation");
}

} // namespace fsx_cpu
