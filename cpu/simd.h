// simd.h: the 8-lane float vector every CPU kernel here is written in.
//
// GCC/Clang vector extensions, not intrinsics: `f32x8` is 8 floats, `a * b + c`
// compiles to one FMA per 8 lanes where the target has it (-ffp-contract=fast),
// AVX2 / AVX-512VL ymm registers on x86-64, two NEON q registers on arm64.
// The same source is the kernel on every CPU; the build's -march=native
// (cpu/CMakeLists.txt) picks the instructions. Lanes are always 8: on AVX-512
// machines 16 lanes would halve the loop trips but double the tail cases, and
// these kernels are bound by loads and unpacking, not by FMA width.
//
// Loads and stores go through memcpy (unaligned, no aliasing hazards); compilers
// emit a single vmovups / ldp for each.

#pragma once

#include <cstdint>
#include <cstring>

#if defined(__AVX2__) && defined(__F16C__)
#include <immintrin.h>
#define FSX_AVX2 1
#endif

namespace fsx_cpu {

typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef uint16_t u16x8 __attribute__((vector_size(16)));
typedef uint8_t u8x8 __attribute__((vector_size(8)));
// The half-precision scalar: _Float16 where the compiler has it in C++ (clang;
// GCC on x86-64), __fp16 on arm64 (GCC before 13 has no _Float16 in C++ there).
#if defined(__aarch64__) && defined(__GNUC__) && !defined(__clang__)
typedef __fp16 half_t;
#else
typedef _Float16 half_t;
#endif
typedef half_t f16x8 __attribute__((vector_size(16)));

inline f32x8 load8(const float* p) {
  f32x8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void store8(float* p, f32x8 v) {
  std::memcpy(p, &v, sizeof(v));
}

inline f32x8 splat8(float a) {
  return f32x8{} + a;
}

inline float hsum(f32x8 v) {
  // Pairwise: (0+4, 1+5, 2+6, 3+7) then halves again: 3 adds, not 7.
  float a0 = v[0] + v[4], a1 = v[1] + v[5], a2 = v[2] + v[6], a3 = v[3] + v[7];
  return (a0 + a2) + (a1 + a3);
}

// float16 / bfloat16 -> float32, 8 at a time.
inline f32x8 load8_f16(const uint16_t* p) {
#ifdef FSX_AVX2
  // GCC's generic conversion goes one lane at a time; F16C does 8 in one.
  return (f32x8)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p));
#else
  f16x8 h;
  std::memcpy(&h, p, sizeof(h));
  return __builtin_convertvector(h, f32x8);
#endif
}

inline f32x8 load8_bf16(const uint16_t* p) {
  // bfloat16 is the top half of a float32: widen and shift into place.
  u16x8 h;
  std::memcpy(&h, p, sizeof(h));
  u32x8 w = __builtin_convertvector(h, u32x8) << 16;
  f32x8 f;
  std::memcpy(&f, &w, sizeof(f));
  return f;
}

// MLX's affine 4-bit: one uint32 holds 8 codes, element i in bits 4i..4i+3.
inline f32x8 unpack8_q4(uint32_t word) {
  // Broadcast the word to 8 lanes, shift lane i right by 4i, keep 4 bits.
  const u32x8 shifts = {0, 4, 8, 12, 16, 20, 24, 28};
  u32x8 q = ((u32x8{} + word) >> shifts) & 15u;
  return __builtin_convertvector((i32x8)q, f32x8);
}

// MLX's affine 8-bit: 8 codes are 8 consecutive bytes (4 per uint32, low byte first).
inline f32x8 unpack8_q8(const uint32_t* p) {
#ifdef FSX_AVX2
  __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)p));
  return (f32x8)_mm256_cvtepi32_ps(q);
#else
  const u32x8 shifts = {0, 8, 16, 24, 0, 8, 16, 24};
  u32x8 w = {p[0], p[0], p[0], p[0], p[1], p[1], p[1], p[1]};
  u32x8 q = (w >> shifts) & 255u;
  return __builtin_convertvector((i32x8)q, f32x8);
#endif
}

inline float f16_to_float(uint16_t h) {
  half_t f;
  std::memcpy(&f, &h, 2);
  return static_cast<float>(f);
}

inline float bf16_to_float(uint16_t h) {
  uint32_t w = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &w, 4);
  return f;
}

} // namespace fsx_cpu
