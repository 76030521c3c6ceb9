// attention_decode: one query token per head against the whole KV cache.
//
//   out[b, h] = softmax(scale * q[b, h] . k[b, kv(h), s]) over s  @  v[b, kv(h)]
//
// q [B, Hq, 1, D], k/v [B, Hkv, S, D] in their own layouts (read through
// *_strides: the cache is a slice of a bigger buffer), scale (float),
// chunk (int, keys per split) -> out, and ml (float [B, Hq, splits, 2]).
// Template: O (out's type), D (head_dim <= 256), G (query heads per
// threadgroup: a divisor of Hq / Hkv, at most 8).
//
// Thread layout (fs_mlx/kernels/attention.py: decode_geometry):
//   grid (128, splits, B * Hq / G), threadgroup (128, 1, 1).
//   A threadgroup takes G query heads that share one KV head, and one split
//   of the keys [split * chunk, (split + 1) * chunk): every key and value row
//   is read once for all G heads (grouped-query attention's saving). Its 4
//   SIMD groups take every 4th key; lane i holds elements i, i + 32, ... of
//   each row (coalesced, and any D works). Per key: G dot products, each one
//   simd_sum, then an online-softmax update of the lane's G accumulators.
//   The 4 SIMD groups' (max, sum, acc) are merged through threadgroup memory.
//
//   One split (short contexts): out [B, Hq, 1, D] (O) is the answer. Several
//   splits (long contexts: more threadgroups to fill the GPU): out is float
//   [B, Hq, splits, D], each split normalized by its own sum, with (max, sum)
//   in ml; attention_decode_combine.metal merges them. Scores are kept in
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
int Hkv = k_shape[1];
int S = k_shape[2];
int blocks = Hq / G;  // head blocks per batch row
int b = threadgroup_position_in_grid.z / blocks;
int h0 = (threadgroup_position_in_grid.z % blocks) * G;  // first query head
int kvh = h0 / (Hq / Hkv);
int s_begin = split * chunk;
int s_end = min(S, s_begin + chunk);

// This lane's slice of the G query rows, pre-scaled
float qv[G][E];
for (int g = 0; g < G; g++) {
  auto qp = q + b * q_strides[0] + (h0 + g) * q_strides[1];
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
auto kp = k + b * k_strides[0] + kvh * k_strides[1];
auto vp = v + b * v_strides[0] + kvh * v_strides[1];
for (int s = s_begin + sg; s < s_end; s += NSG) {
  float kr[E];
  float vr[E];
  for (int e = 0; e < E; e++) {
    int d = lane + 32 * e;
    kr[e] = d < D ? float(kp[s * k_strides[2] + d * k_strides[3]]) : 0.0f;
    vr[e] = d < D ? float(vp[s * v_strides[2] + d * v_strides[3]]) : 0.0f;
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

// Merge the SIMD groups, one query head at a time
for (int g = 0; g < G; g++) {
  float m_all = NEG_INF;
  for (int i = 0; i < NSG; i++) {
    m_all = max(m_all, tg_m[i * G + g]);
  }
  float l_all = 0.0f;
  for (int i = 0; i < NSG; i++) {
    l_all += tg_l[i * G + g] * metal::exp2(tg_m[i * G + g] - m_all);
  }
  // This SIMD group's accumulator, rescaled to the common max
  float factor = metal::exp2(m[g] - m_all);
  for (int e = 0; e < E; e++) {
    int d = lane + 32 * e;
    if (d < D) {
      tg_o[sg * D + d] = acc[g][e] * factor;
    }
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  // Sum over SIMD groups and normalize; the whole threadgroup writes the row
  int h = h0 + g;
  for (int d = tid; d < D; d += NSG * 32) {
    float o = 0.0f;
    for (int i = 0; i < NSG; i++) {
      o += tg_o[i * D + d];
    }
    o /= l_all;
    if (splits == 1) {
      out[(b * Hq + h) * D + d] = static_cast<O>(o);
    } else {
      out[((b * Hq + h) * splits + split) * D + d] = static_cast<O>(o);
    }
  }
  if (splits > 1 && tid == 0) {
    ml[((b * Hq + h) * splits + split) * 2] = m_all;
    ml[((b * Hq + h) * splits + split) * 2 + 1] = l_all;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
}
