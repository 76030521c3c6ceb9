// attention_decode: a few query tokens per head against the whole KV cache.
//
//   out[b, h, i] = softmax(scale * q[b, h, i] . k[b, kv(h), s]) over s  @  v[b, kv(h)]
//
// q [B, Hq, L, D] (L = 1 when decoding; up to 8 for a short prompt after a
// long context), k/v [B, Hkv, S, D], all in their own layouts (read through
// *_strides: the cache is a slice of a bigger buffer), scale (float), chunk
// (int, keys per split), causal (int: query row i sees keys 0 .. S - L + i; with
// L = 1 that is every key), window (int: W > 0 also hides the keys before
// S - L + i - W + 1: a sliding window; 0 = none)
//   -> out, and ml (float [B, Hq * L, splits, 2]).
// Template: O (out's type), D (head_dim <= 256), G (query heads per
// threadgroup: a divisor of Hq / Hkv, at most 8).
//
// Thread layout (fs_mlx/kernels/attention.py: decode_geometry):
//   grid (128, splits, B * Hq / G * L), threadgroup (128, 1, 1).
//   A threadgroup takes G query heads that share one KV head, one query
//   row qi, and one split of the keys [split * chunk, (split + 1) * chunk) (cut at
//   the query's causal limit and window; a split outside them is empty): every key and value row
//   is read once for all G heads (grouped-query attention's saving). Its 4
//   SIMD groups take every 4th key; lane i holds elements i, i + 32, ... of
//   each row (coalesced, and any D works). Per key: G dot products, each one
//   simd_sum, then an online-softmax update of the lane's G accumulators.
//   The 4 SIMD groups' (max, sum, acc) are merged through threadgroup memory.
//
//   One split (short contexts): out [B, Hq, L, D] (O) is the answer. Several
//   splits (long contexts: more threadgroups to fill the GPU): out is float
//   [B, Hq * L, splits, D], each split normalized by its own sum (an empty
//   split: zeros, sum 0), with (max, sum) in ml; attention_decode_combine.metal
//   merges them. Scores are kept in
//   base-2 units (q pre-scaled by log2 e) so that every exp is an exp2.

constexpr int NSG = 4;
constexpr int E = (D + 31) / 32;  // row elements per lane
threadgroup float tg_m[NSG * G];
threadgroup float tg_l[NSG * G];
threadgroup float tg_o[NSG * D];

uint lane = thread_index_in_simdgroup;
uint sg = simdgroup_index_in_threadgroup;
uint tid = thread_index_in_threadgroup;
int split = threadgroup_position_in_grid.y;
int splits = threadgroups_per_grid.y;
int Hq = q_shape[1];
int L = q_shape[2];
int Hkv = k_shape[1];
int S = k_shape[2];
int blocks = Hq / G;  // head blocks per batch row
int z = threadgroup_position_in_grid.z;
int qi = z % L;  // the query row
int b = z / L / blocks;
int h0 = (z / L % blocks) * G;  // first query head
int kvh = h0 / (Hq / Hkv);
int s_begin = max(split * chunk, window > 0 ? S - L + qi - window + 1 : 0);  // the split, cut to the band
int s_end = min(causal ? S - L + qi + 1 : S, (split + 1) * chunk);

// This lane's slice of the G query rows, pre-scaled
float qv[G][E];
for (int g = 0; g < G; g++) {
  auto qp = q + b * q_strides[0] + (h0 + g) * q_strides[1] + qi * q_strides[2];
  for (int e = 0; e < E; e++) {
    int d = lane + 32 * e;
    qv[g][e] = d < D ? float(qp[d * q_strides[3]]) * scale * M_LOG2E_F : 0.0f;
  }
}

// Online softmax over this SIMD group's keys
float m[G];
float l[G];
float acc[G][E];
for (int g = 0; g < G; g++) {
  m[g] = NEG_INF;
  l[g] = 0.0f;
  for (int e = 0; e < E; e++) {
    acc[g][e] = 0.0f;
  }
}
// 64-bit offsets to this (batch, KV head), then 32-bit ones within it: the
// inner loop multiplies ints (the wrapper keeps S * Hkv * D below 2^31)
auto kp = k + b * k_strides[0] + kvh * k_strides[1];
auto vp = v + b * v_strides[0] + kvh * v_strides[1];
int ks = int(k_strides[2]), kd = int(k_strides[3]);
int vs = int(v_strides[2]), vd = int(v_strides[3]);
for (int s = s_begin + sg; s < s_end; s += NSG) {
  float kr[E];
  float vr[E];
  for (int e = 0; e < E; e++) {
    int d = lane + 32 * e;
    kr[e] = d < D ? float(kp[s * ks + d * kd]) : 0.0f;
    vr[e] = d < D ? float(vp[s * vs + d * vd]) : 0.0f;
  }
  for (int g = 0; g < G; g++) {
    float dot = 0.0f;
    for (int e = 0; e < E; e++) {
      dot += qv[g][e] * kr[e];
    }
    float score = simd_sum(dot);
    float m_new = max(m[g], score);
    float factor = metal::exp2(m[g] - m_new);
    float p = metal::exp2(score - m_new);
    l[g] = l[g] * factor + p;
    for (int e = 0; e < E; e++) {
      acc[g][e] = acc[g][e] * factor + p * vr[e];
    }
    m[g] = m_new;
  }
}

// Publish each SIMD group's max and sum
if (lane == 0) {
  for (int g = 0; g < G; g++) {
    tg_m[sg * G + g] = m[g];
    tg_l[sg * G + g] = l[g];
  }
}
threadgroup_barrier(mem_flags::mem_threadgroup);

// Merge the SIMD groups, one query head at a time. A SIMD group (or a whole
// split, past a short query's causal limit) that saw no key has max -inf
// and sum 0: measured against a finite reference it weighs exactly 0.
for (int g = 0; g < G; g++) {
  float m_all = NEG_INF;
  for (int i = 0; i < NSG; i++) {
    m_all = max(m_all, tg_m[i * G + g]);
  }
  float m_ref = m_all == NEG_INF ? 0.0f : m_all;  // (-inf - -inf would be NaN)
  float l_all = 0.0f;
  for (int i = 0; i < NSG; i++) {
    l_all += tg_l[i * G + g] * metal::exp2(tg_m[i * G + g] - m_ref);
  }
  // This SIMD group's accumulator, rescaled to the common max
  float factor = metal::exp2(m[g] - m_ref);
  for (int e = 0; e < E; e++) {
    int d = lane + 32 * e;
    if (d < D) {
      tg_o[sg * D + d] = acc[g][e] * factor;
    }
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  // Sum over SIMD groups and normalize; the whole threadgroup writes the row
  int row = (b * Hq + h0 + g) * L + qi;  // of out [B, Hq, L, D] (or o_part's rows)
  for (int d = tid; d < D; d += NSG * 32) {
    float o = 0.0f;
    for (int i = 0; i < NSG; i++) {
      o += tg_o[i * D + d];
    }
    o = l_all > 0.0f ? o / l_all : 0.0f;
    if (splits == 1) {
      out[row * D + d] = static_cast<O>(o);
    } else {
      out[(row * splits + split) * D + d] = static_cast<O>(o);
    }
  }
  if (splits > 1 && tid == 0) {
    ml[(row * splits + split) * 2] = m_all;
    ml[(row * splits + split) * 2 + 1] = l_all;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
}
