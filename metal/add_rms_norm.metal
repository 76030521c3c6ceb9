// add_rms_norm: the residual add and the RMSNorm that follows it, in one pass.
//
//   h   = x + r                                  (the residual stream, stored)
//   out = h / sqrt(mean(h^2) + eps) * w          (the next sublayer's input)
//
// x, r [rows, D], w [D], eps (float) -> h [rows, D] (TH), out [rows, D] (T).
// Template: TH (type of h, as x + r promotes), T (type of out).
//
// Every transformer block runs "h = x + attn(...); norm(h)" and
// "x' = h + mlp(...); norm(x')": unfused, that is an add kernel that writes h
// and a norm kernel that reads it back. Here h is rounded to TH exactly as
// the add would store it, and the norm uses that rounded value, so the
// result equals the unfused pair bit for bit (up to the sum's order).
//
// Thread layout: as rms_norm.metal (one threadgroup per row, 4 elements per
// thread per sweep). A thread's first 4 values of h stay in registers for
// the second sweep (rows up to 4 * TG wide: read once); further ones are
// re-read from the thread's own writes of h: no other thread touches those
// elements, so no barrier is needed for them.

constexpr uint N_READS = 4;
threadgroup float partial[32];

uint row = threadgroup_position_in_grid.x;
uint tid = thread_position_in_threadgroup.x;
uint tg = threads_per_threadgroup.x;
uint D = w_shape[0];
size_t base = size_t(row) * D;

// h = x + r, stored; sum of squares of the stored values. The first
// N_READS values of h stay in registers (as stored: rounded to TH).
uint i0 = tid * N_READS;
float hr[N_READS];
float acc = 0.0f;
for (uint j = 0; j < N_READS; j++) {
  hr[j] = 0.0f;
  if (i0 + j < D) {
    TH s = static_cast<TH>(float(x[base + i0 + j]) + float(r[base + i0 + j]));
    h[base + i0 + j] = s;
    hr[j] = float(s);
  }
  acc += hr[j] * hr[j];
}
for (uint i = i0 + tg * N_READS; i < D; i += tg * N_READS) {
  for (uint j = i; j < min(i + N_READS, D); j++) {
    TH s = static_cast<TH>(float(x[base + j]) + float(r[base + j]));
    h[base + j] = s;
    float v = float(s);
    acc += v * v;
  }
}
float total = threadgroup_sum(acc, partial, simdgroup_index_in_threadgroup,
                              thread_index_in_simdgroup, simdgroups_per_threadgroup);
float inv = metal::precise::rsqrt(total / float(D) + eps);

// Write the normalized, weighted row: the first elements from registers
for (uint j = 0; j < N_READS && i0 + j < D; j++) {
  out[base + i0 + j] = static_cast<T>(hr[j] * inv * float(w[i0 + j]));
}
for (uint i = i0 + tg * N_READS; i < D; i += tg * N_READS) {
  for (uint j = i; j < min(i + N_READS, D); j++) {
    out[base + j] = static_cast<T>(float(h[base + j]) * inv * float(w[j]));
  }
}
