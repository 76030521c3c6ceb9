// attention_decode_combine: the second pass of split decode attention.
//
// o_part float [B, Hq * L, splits, D] (each split's softmax-weighted values,
// normalized by its own sum), ml float [B, Hq * L, splits, 2] (each split's
// max score, base 2, and sum of exponentials; an empty split: -inf, 0)
// -> out [B, Hq, L, D] (O).
// Template: O.
//
//   M = max_s m_s,   w_s = l_s * 2^(m_s - M),   out = sum_s w_s o_s / sum_s w_s
//
// Thread layout (fs_mlx/kernels/attention.py: combine_geometry):
//   grid (D, B * Hq * L, 1), threadgroup (min(D, 256), 1, 1): one thread per
//   output element, looping over the splits (at most a few dozen). Every
//   thread of a row re-reads the same ml entries, from cache. No barriers.

int D = o_part_shape[3];
int splits = o_part_shape[2];
int d = thread_position_in_grid.x;
int row = thread_position_in_grid.y;  // (b * Hq + h) * L + l
// (auto: with B * Hq * splits <= 3, ml has fewer than 8 elements and MLX
// passes it as `constant`; a `const device float*` would not compile)
auto mlr = ml + row * splits * 2;

float m_all = NEG_INF;
for (int s = 0; s < splits; s++) {
  m_all = max(m_all, mlr[2 * s]);
}
float num = 0.0f;
float den = 0.0f;
for (int s = 0; s < splits; s++) {
  float w = mlr[2 * s + 1] * metal::exp2(mlr[2 * s] - m_all);
  num += w * o_part[(row * splits + s) * D + d];
  den += w;
}
out[row * D + d] = static_cast<O>(num / den);
