// gather_qmv: each token through its chosen experts' affine-quantized matrices (MoE decode).
//
//   y[m, n] = sum_k x[m / rep, k] * (s[e, n, g] * q[e, n, k] + b[e, n, g]),   e = indices[m]
//
// x [X, K] (T): one row per token (rep = M / X slots share it: the gate/up projections)
// or one per slot (rep = 1: the down projection, each slot has its own input);
// w uint32 [E * N, K * BITS / 32], scales/biases [E * N, K / group_size] (S): the
// experts' matrices stacked, expert e's rows at e * N; indices [M] int32, the expert of
// each slot; y [M, N] (T). Template: T, S, BITS. Runtime: group_size, n_out (N), rep.
// MLX's twin: mx.gather_qmm(x, w, scales, biases, rhs_indices=indices, transpose=True).
//
// This is qmv.metal with one change: a slot's rows start at its expert's block. The
// expert index is read on the GPU, so routing -> experts needs no trip to the host.
// Thread layout (fs_mlx/kernels/moe.py): grid (64, ceil(N / 8), M), threadgroup
// (64, 1, 1) = 2 SIMD groups, each owning ROWS = 4 output rows of one slot m; its 32
// lanes sweep K, each lane VPT values per step; rows reduced with simd_sum.

constexpr int ROWS = 4;
constexpr int VPT = 64 / BITS;  // values per lane per step: 16 (4-bit) or 8 (8-bit)

uint lane = thread_index_in_simdgroup;
uint sg = simdgroup_index_in_threadgroup;
uint m = threadgroup_position_in_grid.z;
int K = x_shape[1];
int N = n_out;
int words_per_row = w_shape[1];
int groups_per_row = scales_shape[1];
int row0 = (threadgroup_position_in_grid.y * simdgroups_per_threadgroup + sg) * ROWS;
if (row0 >= N) {
  return;  // a whole SIMD group past the edge
}

// This slot's expert block; edge rows clamped to N - 1 (read, never written)
size_t expert_row0 = size_t(indices[m]) * size_t(N);
size_t src[ROWS];
for (int r = 0; r < ROWS; r++) {
  src[r] = expert_row0 + size_t(min(row0 + r, N - 1));
}

auto xm = x + size_t(m / uint(rep)) * K;  // (auto: an input may be `constant`, see common.h)
float acc[ROWS];
for (int r = 0; r < ROWS; r++) {
  acc[r] = 0.0f;
}
float xv[VPT];
for (int k = int(lane) * VPT; k < K; k += 32 * VPT) {
  float xsum = qload_x<VPT>(xm + k, xv);
  int g = k / group_size;
  for (int r = 0; r < ROWS; r++) {
    float s = float(scales[src[r] * groups_per_row + g]);
    float b = float(biases[src[r] * groups_per_row + g]);
    acc[r] += qdot<BITS, VPT>(w + src[r] * words_per_row + k * BITS / 32, xv, s, b, xsum);
  }
}

for (int r = 0; r < ROWS; r++) {
  acc[r] = simd_sum(acc[r]);
}
if (lane == 0) {
  for (int r = 0; r < ROWS && row0 + r < N; r++) {
    y[size_t(m) * N + row0 + r] = T(acc[r]);
  }
}
