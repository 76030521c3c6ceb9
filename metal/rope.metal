// rope: rotary position embedding of the first `dims` features of each row.
//
// x [B, NH, L, D] (any leading shape flattened to B, NH; contiguous),
// inv_freq float [dims / 2], offset int [1 or B], scale (float),
// n_heads (int, = NH) -> out like x (T). Template: T, TRADITIONAL (bool).
//
// Position of row l of batch b: p = (l + offset[b]) * scale; unit u < dims / 2
// rotates its pair (rope_pair in common.h) by theta = p * inv_freq[u]; the
// units past dims / 2 copy the untouched tail. inv_freq is computed once on
// the host exactly as the twin does (exp(-u * ln(base) / (dims / 2)), or
// 1 / freqs), so that theta is the same float and sizes stay runtime values.
//
// Thread layout (fs_mlx/kernels/rope.py: rope_geometry):
//   grid (D / 2, L, B * ceil(NH / HPT)), threadgroup (32, 8, 1) clamped.
//   One thread per (unit, position, batch x block of HPT heads): cos and sin
//   depend only on (unit, position, batch), so each thread computes them once
//   and rotates the same pair in HPT heads (MLX's rope kernel does the same
//   with 4 heads per thread). No threadgroup memory, no barriers.

constexpr uint HPT = 4;
uint u = thread_position_in_grid.x;
uint l = thread_position_in_grid.y;
uint D = 2 * threads_per_grid.x;
uint L = threads_per_grid.y;
uint blocks = (uint(n_heads) + HPT - 1) / HPT;
uint b = thread_position_in_grid.z / blocks;
uint h0 = (thread_position_in_grid.z % blocks) * HPT;
uint dims = 2 * inv_freq_shape[0];
int off = offset[offset_shape[0] == 1 ? 0 : b];

uint2 e = rope_pair(u, dims, TRADITIONAL);
bool rotated = u < dims / 2;
float theta = rotated ? (float(l) + float(off)) * scale * inv_freq[u] : 0.0f;
float c = metal::cos(theta);
float s = metal::sin(theta);

// The same pair in each of this thread's heads
for (uint h = h0; h < min(h0 + HPT, uint(n_heads)); h++) {
  size_t row = ((size_t(b) * n_heads + h) * L + l) * D;
  float a = float(x[row + e.x]);
  float bb = float(x[row + e.y]);
  if (rotated) {
    out[row + e.x] = static_cast<T>(a * c - bb * s);
    out[row + e.y] = static_cast<T>(a * s + bb * c);
  } else {
    out[row + e.x] = static_cast<T>(a);
    out[row + e.y] = static_cast<T>(bb);
  }
}
