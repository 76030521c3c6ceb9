// qk_norm_rope: Qwen3's per-head RMSNorm of q and k, RoPE, and the
// [B, L, H, D] -> [B, H, L, D] transpose, for q and k in one launch.
//
//   x = norm(x) * w (NORM),  then for each rotated pair (a, c) at position p:
//   (a, c) <- mscale * (a cos t - c sin t, a sin t + c cos t),  t = p * scale * inv_freq[u]
//
// q [B, L, Hq, D], k [B, L, Hkv, D] (the projections' outputs, read through
// q_strides/k_strides: with q/k/v from one fused matmul they are column
// slices of it, and a copy to make them contiguous would be two launches),
// q_w, k_w [D] (the norms' weights; unread when NORM is false), eps (float),
// inv_freq float [dims / 2], offset int [1 or B], scale (float), mscale
// (float: YaRN's and LongRoPE's attention factor on the rotated features,
// 1.0 for the others; fs_mlx/model/rope.py: Rope.mscale)
//   -> q_out [B, Hq, L, D], k_out [B, Hkv, L, D] (T).
// Template: T, TRADITIONAL (bool), NORM (bool: Qwen3 true, Llama false).
//
// Unfused this is rms_norm(q), rms_norm(k), two transposes that the next
// kernels must copy to make contiguous, rope(q), rope(k): six launches and
// three round trips of q and k through memory. Here every row of q and k is
// read once and written once, already in the layout attention reads.
//
// Thread layout (fs_mlx/kernels/rope.py: qk_geometry):
//   grid (32, B * L * (Hq + Hkv), 1), threadgroup (32, 4, 1).
//   One SIMD group per row: rows 0 .. B*L*Hq - 1 are q's, the rest k's. Lane
//   i owns the RoPE units i, i + 32, ... (pairs of elements, rope_pair in
//   common.h), so a row's norm is one simd_sum and each lane rotates its own
//   pairs: no threadgroup memory, no barriers. Positions and frequencies are
//   as in rope.metal.

uint lane = thread_index_in_simdgroup;
uint r = thread_position_in_grid.y;
uint B = q_shape[0];
uint L = q_shape[1];
uint Hq = q_shape[2];
uint Hkv = k_shape[2];
uint D = q_shape[3];
uint dims = 2 * inv_freq_shape[0];

// Which tensor, batch, position and head this SIMD group's row is
bool is_q = r < B * L * Hq;
uint H = is_q ? Hq : Hkv;
uint rr = is_q ? r : r - B * L * Hq;
uint h = rr % H;
uint l = (rr / H) % L;
uint b = rr / (H * L);
// Offsets into q or k rather than a pointer to either: MLX passes an input of
// fewer than 8 elements as `constant`, and `is_q ? q + ... : k + ...` between
// a constant and a device pointer does not compile.
int64_t so = is_q ? b * q_strides[0] + l * q_strides[1] + h * q_strides[2]
                  : b * k_strides[0] + l * k_strides[1] + h * k_strides[2];
int es = int(is_q ? q_strides[3] : k_strides[3]);  // element stride (1 in practice): 32-bit multiplies
device T* dst = (is_q ? q_out : k_out) + ((size_t(b) * H + h) * L + l) * D;  // outputs are device

// RMSNorm over the row: one simd_sum of the lanes' sums of squares
float inv = 1.0f;
if (NORM) {
  float acc = 0.0f;
  for (uint u = lane; u < D / 2; u += 32) {
    uint2 e = rope_pair(u, dims, TRADITIONAL);
    float a = is_q ? float(q[so + e.x * es]) : float(k[so + e.x * es]);
    float c = is_q ? float(q[so + e.y * es]) : float(k[so + e.y * es]);
    acc += a * a + c * c;
  }
  inv = metal::precise::rsqrt(simd_sum(acc) / float(D) + eps);
}

// Normalize, rotate and write each of this lane's pairs
float p = (float(l) + float(offset[offset_shape[0] == 1 ? 0 : b])) * scale;
for (uint u = lane; u < D / 2; u += 32) {
  uint2 e = rope_pair(u, dims, TRADITIONAL);
  float a = (is_q ? float(q[so + e.x * es]) : float(k[so + e.x * es])) * inv;
  float c = (is_q ? float(q[so + e.y * es]) : float(k[so + e.y * es])) * inv;
  if (NORM) {
    a *= is_q ? float(q_w[e.x]) : float(k_w[e.x]);
    c *= is_q ? float(q_w[e.y]) : float(k_w[e.y]);
  }
  if (u < dims / 2) {  // rotated, and scaled in float before the one rounding
    float2 ro = rotate(a, c, p * inv_freq[u]);
    a = ro.x * mscale;
    c = ro.y * mscale;
  }
  dst[e.x] = static_cast<T>(a);
  dst[e.y] = static_cast<T>(c);
}
