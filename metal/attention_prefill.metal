// attention_prefill: many query tokens against the keys, tiled, causal or not,
// optionally through a sliding window.
//
//   out[b, i, h] = softmax(scale * q[b, h, i] . k[b, kv(h), s] (+ mask)) @ v[b, kv(h)]
//
// q [B, Hq, L, D], k/v [B, Hkv, S, D] in their own layouts (*_strides),
// scale (float), window (int: 0 = none) -> out [B, L, Hq, D] (O): the layout
// o_proj reads, so the [B, Hq, L, D] view the op returns needs no copy. The
// queries are the last L of the S keys: query i is at position p = S - L + i
// among them (S - L is the key offset of a chunked prefill, or the keys a
// window cache kept). Causal: query i sees keys s <= p. A window W > 0 also
// hides s <= p - W: query i sees the band (p - W, p] (Mistral, Gemma 3's
// local layers; fs_mlx/model/window.py).
// Template: O, D (head_dim, a multiple of 8, <= 256), CAUSAL (bool). The window
// is a runtime value: every window size runs the same pipeline.
//
// Thread layout (fs_mlx/kernels/attention.py: prefill_geometry):
//   grid (ceil(L / 32) * 128, Hq, B), threadgroup (128, 1, 1).
//   A threadgroup owns BQ = 32 query rows of one head; each of its 4 SIMD
//   groups owns 8 of them as 8x8 simdgroup matrices: its queries (D / 8
//   fragments, pre-scaled), its output accumulator (D / 8 fragments) and one
//   tile of scores (BK / 8 fragments). The keys are swept in tiles of BK
//   (32, or 16 when D > 128 to fit threadgroup memory), each staged in
//   threadgroup memory as float and shared by the 4 SIMD groups:
//
//       K tile [BK, D] -> scores S = Q K^T (8 x BK per SIMD group)
//       mask, online softmax on S's rows: P = 2^(S - m), rescale acc and sum
//       V tile [BK, D] -> acc += P V
//
//   A lane holds two elements of each fragment, always in the same row
//   (MLX's steel layout, which thread_elements() exposes): the row's max and
//   sum are two simd_shuffle_xor steps over the 4 lanes sharing that row, and
//   the per-row rescale of acc is a multiply of the lane's own elements.
//   Only the key tiles some row of the threadgroup can see are swept: causal
//   tiles past the last query's position, and with a window the tiles before
//   the first query's band, are skipped altogether, so a window layer's work
//   is bounded by BQ + W keys per query tile, not by the context.
//   This is the FlashAttention-2 schedule in MLX's steel_attention shape,
//   without its register-blocked loaders.

constexpr int BQ = 32;
constexpr int NSG = 4;
constexpr int BK = D > 128 ? 16 : 32;
constexpr int LD = D + 4;  // padded tile rows: fewer bank conflicts on transposed reads
constexpr int DB = D / 8;  // 8-wide fragments across a head
constexpr int KB = BK / 8;  // 8-wide fragments across a key tile
threadgroup float tile[BK * LD];

uint lane = thread_index_in_simdgroup;
uint sg = simdgroup_index_in_threadgroup;
uint tid = thread_index_in_threadgroup;
int h = threadgroup_position_in_grid.y;
int b = threadgroup_position_in_grid.z;
int Hq = q_shape[1];
int L = q_shape[2];
int Hkv = k_shape[1];
int S = k_shape[2];
int kvh = h / (Hq / Hkv);

// This lane's place in its SIMD group's fragments: row fr, columns fc, fc + 1
int fr = (lane / 4 & 4) + (lane / 2) % 4;
int fc = (lane / 4 & 2) * 2 + (lane % 2) * 2;
int q_first = threadgroup_position_in_grid.x * BQ;
int qi = q_first + sg * 8 + fr;  // the query row of this lane's elements
int q_pos = S - L + qi;  // its position among the keys

// Load the queries, pre-scaled into base-2 units; rows past L are zero
auto qp = q + b * q_strides[0] + h * q_strides[1];
simdgroup_float8x8 qf[DB];
for (int db = 0; db < DB; db++) {
  for (int c = 0; c < 2; c++) {
    int d = db * 8 + fc + c;
    qf[db].thread_elements()[c] = qi < L ? float(qp[qi * q_strides[2] + d * q_strides[3]]) * scale * M_LOG2E_F : 0.0f;
  }
}
simdgroup_float8x8 acc[DB];
for (int db = 0; db < DB; db++) {
  acc[db] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
}
float m = NEG_INF;  // running max of the lane's row (base 2)
float l = 0.0f;  // running sum of 2^(score - m)

// The keys this tile of queries needs: from the first row's band (aligned
// down to a key tile) to the last row's position
int q_last = min(q_first + BQ, L) - 1;
int s_begin = window > 0 ? max(0, S - L + q_first - window + 1) / BK * BK : 0;
int s_end = CAUSAL ? min(S, S - L + q_last + 1) : S;
// 64-bit offsets to this (batch, KV head), 32-bit ones within it (the
// wrapper keeps S * Hkv * D below 2^31)
auto kp = k + b * k_strides[0] + kvh * k_strides[1];
auto vp = v + b * v_strides[0] + kvh * v_strides[1];
int ks = int(k_strides[2]), kd = int(k_strides[3]);
int vs = int(v_strides[2]), vd = int(v_strides[3]);

for (int s0 = s_begin; s0 < s_end; s0 += BK) {
  // Stage the K tile as float; keys past S are zero
  for (int i = tid; i < BK * D; i += NSG * 32) {
    int r = i / D;
    int d = i % D;
    tile[r * LD + d] = s0 + r < S ? float(kp[(s0 + r) * ks + d * kd]) : 0.0f;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);

  // Scores for this SIMD group's 8 rows: S = Q K^T
  simdgroup_float8x8 sc[KB];
  for (int kb = 0; kb < KB; kb++) {
    sc[kb] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
    for (int db = 0; db < DB; db++) {
      simdgroup_float8x8 kt;
      simdgroup_load(kt, &tile[kb * 8 * LD + db * 8], LD, ulong2(0, 0), true);
      simdgroup_multiply_accumulate(sc[kb], qf[db], kt, sc[kb]);
    }
  }
  // Every SIMD group is done reading K before anyone overwrites it with V.
  threadgroup_barrier(mem_flags::mem_threadgroup);

  // Stage the V tile (the K tile is no longer needed)
  for (int i = tid; i < BK * D; i += NSG * 32) {
    int r = i / D;
    int d = i % D;
    tile[r * LD + d] = s0 + r < S ? float(vp[(s0 + r) * vs + d * vd]) : 0.0f;
  }

  // Mask, then the row max of the tile
  float tile_max = NEG_INF;
  for (int kb = 0; kb < KB; kb++) {
    for (int c = 0; c < 2; c++) {
      int s = s0 + kb * 8 + fc + c;
      if (s >= S || (CAUSAL && s > q_pos) || (window > 0 && s <= q_pos - window)) {
        sc[kb].thread_elements()[c] = NEG_INF;
      }
      tile_max = max(tile_max, float(sc[kb].thread_elements()[c]));
    }
  }
  tile_max = max(tile_max, simd_shuffle_xor(tile_max, 1));
  tile_max = max(tile_max, simd_shuffle_xor(tile_max, 8));

  // Online softmax: P = 2^(S - m_new), rescale what came before. A row may
  // see no key of this tile (its band starts in a later one, or it is past L):
  // its max stays -inf and it subtracts 0 instead (-inf - -inf would be NaN),
  // so its P, sum and accumulator stay exactly 0 until its band begins.
  float m_new = max(m, tile_max);
  float m_ref = m_new == NEG_INF ? 0.0f : m_new;
  float factor = metal::exp2(m - m_ref);
  float row_sum = 0.0f;
  for (int kb = 0; kb < KB; kb++) {
    for (int c = 0; c < 2; c++) {
      float p = metal::exp2(float(sc[kb].thread_elements()[c]) - m_ref);
      sc[kb].thread_elements()[c] = p;
      row_sum += p;
    }
  }
  row_sum += simd_shuffle_xor(row_sum, 1);
  row_sum += simd_shuffle_xor(row_sum, 8);
  l = l * factor + row_sum;
  m = m_new;
  for (int db = 0; db < DB; db++) {
    acc[db].thread_elements()[0] *= factor;
    acc[db].thread_elements()[1] *= factor;
  }
  // The whole V tile is staged before anyone reads it
  threadgroup_barrier(mem_flags::mem_threadgroup);

  // acc += P V
  for (int db = 0; db < DB; db++) {
    for (int kb = 0; kb < KB; kb++) {
      simdgroup_float8x8 vf;
      simdgroup_load(vf, &tile[kb * 8 * LD + db * 8], LD);
      simdgroup_multiply_accumulate(acc[db], sc[kb], vf, acc[db]);
    }
  }
  // Everyone is done with V before the next K tile overwrites it
  threadgroup_barrier(mem_flags::mem_threadgroup);
}

// Normalize and write this lane's elements of the rows that exist
if (qi < L) {
  device O* op = out + ((size_t(b) * L + qi) * Hq + h) * D;
  for (int db = 0; db < DB; db++) {
    for (int c = 0; c < 2; c++) {
      op[db * 8 + fc + c] = static_cast<O>(acc[db].thread_elements()[c] / l);
    }
  }
}
