// geglu: out = gelu_tanh(gate) * up, elementwise (Gemma's gated MLP).
//
//   gelu_tanh(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))
//
// gate, up [n] (any float type, same shape), n (uint) -> out [n] (T).
// Template: T, the output type.
//
// Thread layout (fs_mlx/kernels/swiglu.py: swiglu_geometry, shared with swiglu):
//   grid (ceil(n / 4), 1, 1), threadgroup (256, 1, 1). Thread i owns the
//   four consecutive elements 4i .. 4i + 3 (the last thread fewer).
//
// The expression is evaluated in float and rounded once. For |g| large the
// tanh saturates to +-1: gelu -> g (g > 0) or -> 0 (g < 0), without overflow
// (g^3 overflows to inf only past 6.9e12, where tanh(inf) = 1 is still right).

constexpr uint N_READS = 4;
constexpr float SQRT_2_OVER_PI = 0.7978845608028654f;
uint i0 = thread_position_in_grid.x * N_READS;
for (uint i = i0; i < min(i0 + N_READS, n); i++) {
  float g = float(gate[i]);
  float inner = SQRT_2_OVER_PI * (g + 0.044715f * g * g * g);
  out[i] = static_cast<T>(0.5f * g * (1.0f + metal::precise::tanh(inner)) * float(up[i]));
}
