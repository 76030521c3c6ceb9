// swiglu: out = silu(gate) * up = gate / (1 + exp(-gate)) * up, elementwise.
//
// gate, up [n] (any float type, same shape), n (uint) -> out [n] (T).
// Template: T, the output type.
//
// Thread layout (fs_mlx/kernels/swiglu.py: swiglu_geometry):
//   grid (ceil(n / 4), 1, 1), threadgroup (256, 1, 1). Thread i owns the
//   four consecutive elements 4i .. 4i + 3 (the last thread fewer). No
//   threadgroup memory, no barriers: a pure stream, 3 * n * sizeof(T) bytes.
//
// The twin (gate * sigmoid(gate) * up in the input type) rounds after every
// operation; here the whole expression is float and rounded once.

constexpr uint N_READS = 4;
uint i0 = thread_position_in_grid.x * N_READS;
for (uint i = i0; i < min(i0 + N_READS, n); i++) {
  float g = float(gate[i]);
  out[i] = static_cast<T>(g / (1.0f + metal::exp(-g)) * float(up[i]));
}
