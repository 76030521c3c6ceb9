// rms_norm: out = x / sqrt(mean(x^2) + eps) * w over the last axis.
//
// x [rows, D] (any float type), w [D], eps (float) -> out [rows, D] (T).
// Template: T, the output type. D comes from w's shape; rows from the grid.
//
// Thread layout (fs_mlx/kernels/norm.py: norm_geometry):
//   grid (rows * TG, 1, 1), threadgroup (TG, 1, 1), TG = D / 4 rounded up to
//   a multiple of 32 (at most 1024). One threadgroup per row; thread t owns
//   elements 4t .. 4t + 3, then 4(t + TG) .. and so on for rows wider than
//   4 * TG. Two sweeps over the row: the sum of squares (SIMD sums, then a
//   threadgroup sum across SIMD groups), then the scaled write. A thread's
//   first 4 elements stay in registers between the sweeps, so a row of up
//   to 4 * TG elements (every row up to 4096 wide: all the models here) is
//   read from memory once, as in MLX's rms_single_row; wider rows re-read
//   their further elements in the second sweep (MLX's rms_looped).
//
// The layout of MLX's rms_single_row/rms_looped, with float accumulation.
// The rounding differs: MLX rounds x * inv to T and then multiplies by w in
// T (two roundings in half types); this kernel computes x * inv * w in float
// and rounds once, on the write. In float16/bfloat16 the two can differ by
// an ULP of the output.

constexpr uint N_READS = 4;
threadgroup float partial[32];

uint row = threadgroup_position_in_grid.x;
uint tid = thread_position_in_threadgroup.x;
uint tg = threads_per_threadgroup.x;
uint D = w_shape[0];
size_t base = size_t(row) * D;

// Sum of squares: this thread's first N_READS elements, kept in registers,
// then (rows wider than N_READS * tg) its further ones
uint i0 = tid * N_READS;
float xr[N_READS];
float acc = 0.0f;
for (uint j = 0; j < N_READS; j++) {
  xr[j] = i0 + j < D ? float(x[base + i0 + j]) : 0.0f;
  acc += xr[j] * xr[j];
}
for (uint i = i0 + tg * N_READS; i < D; i += tg * N_READS) {
  for (uint j = i; j < min(i + N_READS, D); j++) {
    float v = float(x[base + j]);
    acc += v * v;
  }
}
float total = threadgroup_sum(acc, partial, simdgroup_index_in_threadgroup,
                              thread_index_in_simdgroup, simdgroups_per_threadgroup);
float inv = metal::precise::rsqrt(total / float(D) + eps);

// Write the normalized, weighted row: the first elements from registers
for (uint j = 0; j < N_READS && i0 + j < D; j++) {
  out[base + i0 + j] = static_cast<T>(xr[j] * inv * float(w[i0 + j]));
}
for (uint i = i0 + tg * N_READS; i < D; i += tg * N_READS) {
  for (uint j = i; j < min(i + N_READS, D); j++) {
    out[base + j] = static_cast<T>(float(x[base + j]) * inv * float(w[j]));
  }
}
