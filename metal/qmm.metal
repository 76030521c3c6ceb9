// qmm: x @ dequant(w).T for many rows (prefill), tiled in threadgroup memory.
//
//   y[m, n] = sum_k x[m, k] * (s[n, g] * q[n, k] + b[n, g]),   g = k / group_size
//
// x [M, K] (T), w uint32 [N, K * BITS / 32], scales/biases [N, K / group_size] (S),
// y [M, N] (T). Template: T, S, BITS (4 or 8). Runtime: group_size; M, N, K
// come from the shapes.
//
// Thread layout (fs_mlx/kernels/quantized.py: qmm_geometry):
//   grid (128, ceil(N / 32), ceil(M / 32)), threadgroup (128, 1, 1).
//   A threadgroup computes a BM x BN = 32 x 32 tile of y. Its 4 SIMD groups
//   sit in a 2 x 2 arrangement, each owning a 16 x 16 quarter held as
//   2 x 2 simdgroup matrices (8 x 8, float). K is swept BK = 32 at a time:
//
//       x tile  [BM, BK]  <- 8 activations per thread, as float
//       w tile  [BN, BK]  <- 8 weights per thread, dequantized to float
//       acc    += x tile @ w tile.T   (simdgroup_multiply_accumulate)
//
//   BK = 32 divides every group size, so a w tile row has one scale and bias;
//   K is a multiple of the group size, so there is no partial K tile. Rows of
//   x past M and of w past N load as zeros; the result goes through
//   threadgroup memory so that edge tiles write only the elements that exist.
//
// Each weight is read from device memory once per 32 rows of x (once per M
// tile), which is what makes prefill compute-bound instead of reading the
// matrix once per token. MLX's qmm_t does the same with its steel GEMM tiles
// (QuantizedBlockLoader + BlockMMA); this is the same idea at one fixed size.

constexpr int BM = 32;
constexpr int BN = 32;
constexpr int BK = 32;
constexpr int LD = BK + 4;  // padded row: consecutive rows start in different banks

threadgroup float xs[BM * LD];
threadgroup float ws[BN * LD];

uint tid = thread_index_in_threadgroup;
uint sg = simdgroup_index_in_threadgroup;
int M = x_shape[0];
int K = x_shape[1];
int N = w_shape[0];
int words_per_row = w_shape[1];
int groups_per_row = scales_shape[1];
int m0 = threadgroup_position_in_grid.z * BM;
int n0 = threadgroup_position_in_grid.y * BN;

// What this thread loads: row `lr` of each tile, columns lc .. lc + 7
int lr = tid / 4;
int lc = (tid % 4) * 8;
// Which 16 x 16 quarter of the tile this SIMD group computes
int sm = (sg / 2) * 16;
int sn = (sg % 2) * 16;

simdgroup_float8x8 acc[2][2];
for (int i = 0; i < 2; i++) {
  for (int j = 0; j < 2; j++) {
    acc[i][j] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  }
}

for (int k0 = 0; k0 < K; k0 += BK) {
  // Stage the x tile (zeros past M): a thread's 8 activations are consecutive
  // and start at a multiple of 8 elements (K, k0 and lc are), so they load
  // as two 4-wide vectors (MLX's loaders read 16 bytes at a time too). x has
  // at least 32 elements, so MLX always passes it as `device`.
  int xm = m0 + lr;
  if (xm < M) {
    auto xv = (const device vec<T, 4>*)(x + size_t(xm) * K + k0 + lc);
    vec<T, 4> lo = xv[0];
    vec<T, 4> hi = xv[1];
    for (int i = 0; i < 4; i++) {
      xs[lr * LD + lc + i] = float(lo[i]);
      xs[lr * LD + lc + 4 + i] = float(hi[i]);
    }
  } else {
    for (int i = 0; i < 8; i++) {
      xs[lr * LD + lc + i] = 0.0f;
    }
  }
  // Stage the dequantized w tile (zeros past N)
  int wn = n0 + lr;
  if (wn < N) {
    size_t gi = size_t(wn) * groups_per_row + k0 / group_size;
    float s = float(scales[gi]);
    float b = float(biases[gi]);
    auto wp = w + size_t(wn) * words_per_row + (k0 + lc) * BITS / 32;  // device, or constant if tiny
    for (int p = 0; p < 8 * BITS / 32; p++) {
      qdequantize_word<BITS>(wp[p], s, b, ws + lr * LD + lc + p * (32 / BITS));
    }
  } else {
    for (int i = 0; i < 8; i++) {
      ws[lr * LD + lc + i] = 0.0f;
    }
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);

  // Multiply the tiles, 8 columns of K at a time
  for (int kk = 0; kk < BK; kk += 8) {
    simdgroup_float8x8 a[2];
    simdgroup_float8x8 bt[2];
    for (int i = 0; i < 2; i++) {
      simdgroup_load(a[i], xs + (sm + 8 * i) * LD + kk, LD);
    }
    for (int j = 0; j < 2; j++) {
      // B[k][n] = w tile[n][k]: load the 8 x 8 block transposed
      simdgroup_load(bt[j], ws + (sn + 8 * j) * LD + kk, LD, ulong2(0, 0), true);
    }
    for (int i = 0; i < 2; i++) {
      for (int j = 0; j < 2; j++) {
        simdgroup_multiply_accumulate(acc[i][j], a[i], bt[j], acc[i][j]);
      }
    }
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);  // before the next tiles overwrite these
}

// Write the accumulators into threadgroup memory (reusing the x tile) ...
for (int i = 0; i < 2; i++) {
  for (int j = 0; j < 2; j++) {
    simdgroup_store(acc[i][j], xs + (sm + 8 * i) * LD + sn + 8 * j, LD);
  }
}
threadgroup_barrier(mem_flags::mem_threadgroup);

// ... and from there the elements of y that exist
int ym = m0 + lr;
if (ym < M) {
  for (int i = 0; i < 8; i++) {
    int yn = n0 + lc + i;
    if (yn < N) {
      y[size_t(ym) * N + yn] = T(xs[lr * LD + lc + i]);
    }
  }
}
