// metal_runtime.h — the Metal Shading Language surface, as plain C++ for clang.
//
// Included first in every kernel the executor compiles. It stands in for
// <metal_stdlib> and MLX's utils.h: scalar and vector types (clang's
// ext_vector_type gives Metal's swizzles), half and bfloat (_Float16 and
// __bf16, rounded per operation by -f*float16-excess-precision=none), the
// metal:: math namespace with fast:: and precise::, atomics, as_type,
// barriers and SIMD-group functions. Nothing here includes a system header:
// kernel names like abs, min or select must not meet libc's.
//
// It is assembled from three parts: metal_types.h (scalars, vectors, limits),
// metal_math.h (the math namespace) and metal_sync.h (atomics, barriers,
// SIMD-group functions); this file adds MLX's utils.h, Metal's constants,
// threadgroup variables and the keyword and constructor macros.
#pragma once
#include "metal_sync.h"

// ------------------------------------------------------------ address spaces
// Metal's address spaces are all one flat memory here; the Metal check
// (compiler.py: check_metal_rules) maps them to clang address spaces.
#ifndef MSL_ADDRESS_SPACES
#define device
#define constant
#define thread
#define threadgroup
#else
#define device __attribute__((address_space(1)))
#define constant __attribute__((address_space(2)))
#define threadgroup __attribute__((address_space(3)))
#define thread
#endif
#define threadgroup_imageblock

// ------------------------------------------------ the parts of MLX's utils.h
#define METAL_FUNC inline __attribute__((always_inline))
#define MLX_MTL_CONST static constant constexpr const
#define MLX_MTL_PRAGMA_UNROLL _Pragma("clang loop unroll(full)")
#define MLX_MTL_LOOP_UNROLL _Pragma("clang loop unroll(full)")

template <typename U> struct Limits {
  static constexpr U max = metal::numeric_limits<U>::max();
  static constexpr U min = metal::numeric_limits<U>::min();
  static constexpr U finite_max = metal::numeric_limits<U>::max();
  static constexpr U finite_min = metal::numeric_limits<U>::min();
};
#define MSL_FLOAT_LIMIT(T)                                                     \
  template <> struct Limits<T> {                                               \
    static constexpr T max = metal::numeric_limits<T>::infinity();             \
    static constexpr T min = -metal::numeric_limits<T>::infinity();            \
    static constexpr T finite_max = metal::numeric_limits<T>::max();           \
    static constexpr T finite_min = -metal::numeric_limits<T>::max();          \
  };
MSL_FLOAT_LIMIT(float)
MSL_FLOAT_LIMIT(half)
MSL_FLOAT_LIMIT(bfloat)

template <typename IdxT = int64_t, typename E, typename S>
METAL_FUNC IdxT elem_to_loc(E elem, const constant int* shape, const constant S* strides, int ndim) {
  IdxT loc = 0;
  IdxT e = IdxT(elem);
  for (int i = ndim - 1; i >= 0 && e > 0; --i) {
    loc += IdxT(e % shape[i]) * IdxT(strides[i]);
    e /= shape[i];
  }
  return loc;
}
template <typename IdxT = int64_t, typename S>
METAL_FUNC IdxT elem_to_loc(metal::uint3 elem, const constant int* shape, const constant S* strides, int ndim) {
  IdxT loc = IdxT(elem.x) * IdxT(strides[ndim - 1]) + IdxT(elem.y) * IdxT(strides[ndim - 2]);
  for (int d = ndim - 3; d >= 0; --d) {
    loc += IdxT(elem.z % shape[d]) * IdxT(strides[d]);
    elem.z /= shape[d];
  }
  return loc;
}
template <typename S> METAL_FUNC int64_t elem_to_loc_1(uint elem, S stride) { return int64_t(elem) * int64_t(stride); }
template <typename S> METAL_FUNC int64_t elem_to_loc_2(metal::uint2 elem, const constant S* strides) {
  return int64_t(elem.x) * int64_t(strides[1]) + int64_t(elem.y) * int64_t(strides[0]);
}
template <typename S> METAL_FUNC int64_t elem_to_loc_3(metal::uint3 elem, const constant S* strides) {
  return int64_t(elem.x) * int64_t(strides[2]) + int64_t(elem.y) * int64_t(strides[1]) +
         int64_t(elem.z) * int64_t(strides[0]);
}
template <typename T, typename U> METAL_FUNC T ceildiv(T N, U M) { return (N + M - 1) / M; }

// ----------------------------------------------------------------- constants
#define INFINITY __builtin_inff()
#define NAN __builtin_nanf("")
#define MAXFLOAT 3.40282347e+38f
#define HUGE_VALF __builtin_inff()
#define FLT_MAX 3.40282347e+38f
#define FLT_MIN 1.17549435e-38f
#define FLT_EPSILON 1.1920929e-7f
#define HALF_MAX ((half)65504.0f)
#define HALF_MIN ((half)6.103515625e-05f)
#define HALF_EPSILON ((half)0.0009765625f)
#define M_PI_F 3.14159265358979323846f
#define M_PI_2_F 1.57079632679489661923f
#define M_PI_4_F 0.78539816339744830962f
#define M_1_PI_F 0.31830988618379067154f
#define M_2_PI_F 0.63661977236758134308f
#define M_2_SQRTPI_F 1.12837916709551257390f
#define M_E_F 2.71828182845904523536f
#define M_LOG2E_F 1.44269504088896340736f
#define M_LOG10E_F 0.43429448190325182765f
#define M_LN2_F 0.69314718055994530942f
#define M_LN10_F 2.30258509299404568402f
#define M_SQRT2_F 1.41421356237309504880f
#define M_SQRT1_2_F 0.70710678118654752440f
#define M_PI_H ((half)M_PI_F)
#define M_E_H ((half)M_E_F)
#define M_LN2_H ((half)M_LN2_F)
#define M_SQRT2_H ((half)M_SQRT2_F)

// ------------------------------------------------------------- threadgroup
// `threadgroup T name[N];` in a kernel body is rewritten (keeping the line) to
// `auto& name = msl_tg_var<T[N]>();`: every thread of the threadgroup gets
// the same, poisoned, memory for that declaration.
template <class T> MSL_INLINE T& msl_tg_var(MSL_SITE_PARAMS) {
  msl_thread* t = msl_rt->current;
  return *(T*)msl_rt->tg_alloc(t, MSL_SITE, sizeof(T), alignof(T));
}
MSL_INLINE metal::uint3 msl_u3(const unsigned* a) { return metal::uint3{a[0], a[1], a[2]}; }

using namespace metal;


// float4(a, b, c, d) is a functional cast with several arguments, which C++
// has no meaning for: function-like macros turn each constructor into
// msl_make_vec<T, N>(...). A bare `float4 x;` is untouched.
#define float2(...) msl_make_vec<float, 2>(__VA_ARGS__)
#define float3(...) msl_make_vec<float, 3>(__VA_ARGS__)
#define float4(...) msl_make_vec<float, 4>(__VA_ARGS__)
#define half2(...) msl_make_vec<half, 2>(__VA_ARGS__)
#define half3(...) msl_make_vec<half, 3>(__VA_ARGS__)
#define half4(...) msl_make_vec<half, 4>(__VA_ARGS__)
#define bfloat2(...) msl_make_vec<bfloat, 2>(__VA_ARGS__)
#define bfloat3(...) msl_make_vec<bfloat, 3>(__VA_ARGS__)
#define bfloat4(...) msl_make_vec<bfloat, 4>(__VA_ARGS__)
#define int2(...) msl_make_vec<int, 2>(__VA_ARGS__)
#define int3(...) msl_make_vec<int, 3>(__VA_ARGS__)
#define int4(...) msl_make_vec<int, 4>(__VA_ARGS__)
#define uint2(...) msl_make_vec<uint, 2>(__VA_ARGS__)
#define uint3(...) msl_make_vec<uint, 3>(__VA_ARGS__)
#define uint4(...) msl_make_vec<uint, 4>(__VA_ARGS__)
#define short2(...) msl_make_vec<short, 2>(__VA_ARGS__)
#define short3(...) msl_make_vec<short, 3>(__VA_ARGS__)
#define short4(...) msl_make_vec<short, 4>(__VA_ARGS__)
#define ushort2(...) msl_make_vec<ushort, 2>(__VA_ARGS__)
#define ushort3(...) msl_make_vec<ushort, 3>(__VA_ARGS__)
#define ushort4(...) msl_make_vec<ushort, 4>(__VA_ARGS__)
#define char2(...) msl_make_vec<signed char, 2>(__VA_ARGS__)
#define char3(...) msl_make_vec<signed char, 3>(__VA_ARGS__)
#define char4(...) msl_make_vec<signed char, 4>(__VA_ARGS__)
#define uchar2(...) msl_make_vec<uchar, 2>(__VA_ARGS__)
#define uchar3(...) msl_make_vec<uchar, 3>(__VA_ARGS__)
#define uchar4(...) msl_make_vec<uchar, 4>(__VA_ARGS__)
#define long2(...) msl_make_vec<long, 2>(__VA_ARGS__)
#define long3(...) msl_make_vec<long, 3>(__VA_ARGS__)
#define long4(...) msl_make_vec<long, 4>(__VA_ARGS__)
#define ulong2(...) msl_make_vec<ulong, 2>(__VA_ARGS__)
#define ulong3(...) msl_make_vec<ulong, 3>(__VA_ARGS__)
#define ulong4(...) msl_make_vec<ulong, 4>(__VA_ARGS__)
#define bool2(...) msl_make_bvec<2>(__VA_ARGS__)
#define bool3(...) msl_make_bvec<3>(__VA_ARGS__)
#define bool4(...) msl_make_bvec<4>(__VA_ARGS__)
