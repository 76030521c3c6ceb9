// qmv: affine-quantized matrix x vector, the decode hot path.
//
//   y[m, n] = sum_k x[m, k] * (s[n, g] * q[n, k] + b[n, g]),   g = k / group_size
//
// x [M, K] (T), w uint32 [N, K * BITS / 32], scales/biases [N, K / group_size] (S),
// y [M, N] (T). Template: T, S, BITS (4 or 8), SWIGLU (0 or 1). Runtime:
// group_size (32, 64 or 128); M, N, K come from the shapes.
//
// Thread layout (fs_mlx/kernels/quantized.py: qmv_geometry):
//   grid (64, ceil(N / 8), M), threadgroup (64, 1, 1) = 2 SIMD groups.
//   A SIMD group owns ROWS = 4 consecutive output rows of one vector m. Its 32
//   lanes sweep K together, each lane VPT values (two packed words, 8 bytes)
//   per step, so one step reads 32 * 8 = 256 contiguous bytes of each row;
//   the x values are loaded once per step and reused for the 4 rows.
//   Each row's 32 partial sums are reduced with simd_sum.
//
// SWIGLU = 1 (qmv_swiglu): w holds [gate; up], 2N rows. A SIMD group also
// computes the 4 up rows N below its gate rows and writes silu(gate) * up,
// so the fused gate+up projection and the SwiGLU are one launch.
//
// MLX's qmv_fast/qmv (mlx/backend/metal/kernels/quantized.h) use the same
// layout; this one handles every N and K in one loop: K is a multiple of the
// group size (>= 32) and so of VPT (<= 16), so a lane's chunk never straddles
// the end of a row, and edge rows are clamped for reading and never written.

constexpr int ROWS = 4;
constexpr int VPT = 64 / BITS;  // values per lane per step: 16 (4-bit) or 8 (8-bit)
constexpr int NACC = SWIGLU ? 2 * ROWS : ROWS;

uint lane = thread_index_in_simdgroup;
uint sg = simdgroup_index_in_threadgroup;
uint m = threadgroup_position_in_grid.z;
int K = x_shape[1];
int N = SWIGLU ? w_shape[0] / 2 : w_shape[0];  // output width
int words_per_row = w_shape[1];
int groups_per_row = scales_shape[1];
int row0 = (threadgroup_position_in_grid.y * simdgroups_per_threadgroup + sg) * ROWS;
if (row0 >= N) {
  return;  // a whole SIMD group past the edge: nothing to reduce or write
}

// The weight rows this SIMD group reads: at the edge, clamped to N - 1
// (in bounds, computed, never written); with SWIGLU the up rows follow.
size_t src[NACC];
for (int r = 0; r < NACC; r++) {
  size_t row = size_t(min(row0 + r % ROWS, N - 1));
  src[r] = r < ROWS ? row : row + size_t(N);
}

// Each lane: partial dot products over its chunks of K
auto xm = x + size_t(m) * K;  // (auto: an input may be `constant`, see common.h)
float acc[NACC];
for (int r = 0; r < NACC; r++) {
  acc[r] = 0.0f;
}
float xv[VPT];
for (int k = int(lane) * VPT; k < K; k += 32 * VPT) {
  float xsum = qload_x<VPT>(xm + k, xv);
  int g = k / group_size;
  for (int r = 0; r < NACC; r++) {
    float s = float(scales[src[r] * groups_per_row + g]);
    float b = float(biases[src[r] * groups_per_row + g]);
    acc[r] += qdot<BITS, VPT>(w + src[r] * words_per_row + k * BITS / 32, xv, s, b, xsum);
  }
}

// Reduce each row over the SIMD group
for (int r = 0; r < NACC; r++) {
  acc[r] = simd_sum(acc[r]);
}

// Write the rows that exist (the SwiGLU epilogue in float)
if (lane == 0) {
  for (int r = 0; r < ROWS && row0 + r < N; r++) {
    float v = acc[r];
    if (SWIGLU) {
      v = v / (1.0f + metal::exp(-v)) * acc[ROWS + r];  // silu(gate) * up
    }
    y[size_t(m) * N + row0 + r] = T(v);
  }
}
