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
// Barriers and SIMD-group functions do not compute anything in the calling
// fiber: they record what the lane waits for (kind, call site, operand) and
// block. The runtime resumes the lane once every lane of the operation has
// arrived, after a "resolve" function below combined the operands.
#pragma once
#include "msl_abi.h"

#define MSL_INLINE inline __attribute__((always_inline))

// The runtime's services, set once per loaded kernel by msl_bind().
static const msl_api* msl_rt;
extern "C" __attribute__((visibility("default"))) void msl_bind(const msl_api* api) { msl_rt = api; }

// ------------------------------------------------------------------ scalars
typedef __INT8_TYPE__ int8_t;
typedef __UINT8_TYPE__ uint8_t;
typedef __INT16_TYPE__ int16_t;
typedef __UINT16_TYPE__ uint16_t;
typedef __INT32_TYPE__ int32_t;
typedef __UINT32_TYPE__ uint32_t;
typedef __INT64_TYPE__ int64_t;
typedef __UINT64_TYPE__ uint64_t;
typedef __SIZE_TYPE__ size_t;
typedef __PTRDIFF_TYPE__ ptrdiff_t;
typedef __UINTPTR_TYPE__ uintptr_t;
typedef unsigned int uint;
typedef unsigned short ushort;
typedef unsigned char uchar;
typedef unsigned long ulong;
typedef _Float16 half;
typedef __bf16 bfloat;
typedef half float16_t;     // MLX's names for the dtypes
typedef bfloat bfloat16_t;

// float -> bfloat conversion (round to nearest even) is a compiler-rt
// routine that a -shared link does not always bring; define it here.
extern "C" __attribute__((weak, visibility("hidden"))) bfloat __truncsfbf2(float f) {
  unsigned u = __builtin_bit_cast(unsigned, f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return __builtin_bit_cast(bfloat, (unsigned short)((u >> 16) | 0x40u));
  u += 0x7fffu + ((u >> 16) & 1u);
  return __builtin_bit_cast(bfloat, (unsigned short)(u >> 16));
}
extern "C" __attribute__((weak, visibility("hidden"))) bfloat __truncdfbf2(double d) {
  return __truncsfbf2((float)d);  // (double rounding; Metal has no double)
}

namespace metal {

// --------------------------------------------------------------- type traits
// (a tiny <type_traits>; the real one would need libc++)
template <bool B, class T = void> struct enable_if {};
template <class T> struct enable_if<true, T> { typedef T type; };
template <bool B, class T = void> using enable_if_t = typename enable_if<B, T>::type;
template <class A, class B> struct is_same { static constexpr bool value = false; };
template <class A> struct is_same<A, A> { static constexpr bool value = true; };
template <class A, class B> constexpr bool is_same_v = is_same<A, B>::value;
template <class T> struct remove_cv { typedef T type; };
template <class T> struct remove_cv<const T> { typedef T type; };
template <class T> struct remove_cv<volatile T> { typedef T type; };
template <class T> struct remove_cv<const volatile T> { typedef T type; };
template <class T> using remove_cv_t = typename remove_cv<T>::type;
template <class T> struct is_floating_point { static constexpr bool value = false; };
template <> struct is_floating_point<float> { static constexpr bool value = true; };
template <> struct is_floating_point<half> { static constexpr bool value = true; };
template <> struct is_floating_point<bfloat> { static constexpr bool value = true; };
template <> struct is_floating_point<double> { static constexpr bool value = true; };
template <class T> constexpr bool is_floating_point_v = is_floating_point<remove_cv_t<T>>::value;
template <class T> constexpr bool is_integral_v = __is_integral(T);
template <class T> constexpr bool is_signed_v = T(-1) < T(0);
template <class T> constexpr bool is_arithmetic_v = is_integral_v<T> || is_floating_point_v<T>;
template <bool B, class T, class F> struct conditional { typedef T type; };
template <class T, class F> struct conditional<false, T, F> { typedef F type; };
template <bool B, class T, class F> using conditional_t = typename conditional<B, T, F>::type;

// ------------------------------------------------------------------ vectors
template <class T, int N> using vec = T __attribute__((ext_vector_type(N)));

template <class T> struct vec_traits { static constexpr int n = 0; typedef T elem; };
template <class T, int N> struct vec_traits<vec<T, N>> { static constexpr int n = N; typedef T elem; };
template <class V> constexpr bool is_vector_v = vec_traits<remove_cv_t<V>>::n > 0;

// Metal's boolN: a vector of bools. clang's vector comparisons give -1 per
// true lane; converting them through boolN (or select/all/any) gives Metal's
// true/false.
template <int N> struct bvec;
#define MSL_BVEC_COMMON(N)                                                       \
  MSL_INLINE bool& operator[](int i) { return (&x)[i]; }                        \
  MSL_INLINE bool operator[](int i) const { return (&x)[i]; }                   \
  template <class E> MSL_INLINE bvec(vec<E, N> m) {                             \
    for (int i = 0; i < N; i++) (*this)[i] = m[i] != 0;                         \
  }                                                                             \
  MSL_INLINE bvec operator!() const { bvec r; for (int i = 0; i < N; i++) r[i] = !(*this)[i]; return r; } \
  MSL_INLINE bvec operator&&(bvec o) const { bvec r; for (int i = 0; i < N; i++) r[i] = (*this)[i] && o[i]; return r; } \
  MSL_INLINE bvec operator||(bvec o) const { bvec r; for (int i = 0; i < N; i++) r[i] = (*this)[i] || o[i]; return r; } \
  MSL_INLINE bvec operator==(bvec o) const { bvec r; for (int i = 0; i < N; i++) r[i] = (*this)[i] == o[i]; return r; } \
  MSL_INLINE bvec operator!=(bvec o) const { bvec r; for (int i = 0; i < N; i++) r[i] = (*this)[i] != o[i]; return r; }
template <> struct bvec<2> {
  bool x, y;
  MSL_INLINE bvec(bool s = false) : x(s), y(s) {}
  MSL_INLINE bvec(bool a, bool b) : x(a), y(b) {}
  MSL_BVEC_COMMON(2)
};
template <> struct bvec<3> {
  bool x, y, z;
  MSL_INLINE bvec(bool s = false) : x(s), y(s), z(s) {}
  MSL_INLINE bvec(bool a, bool b, bool c) : x(a), y(b), z(c) {}
  MSL_BVEC_COMMON(3)
};
template <> struct bvec<4> {
  bool x, y, z, w;
  MSL_INLINE bvec(bool s = false) : x(s), y(s), z(s), w(s) {}
  MSL_INLINE bvec(bool a, bool b, bool c, bool d) : x(a), y(b), z(c), w(d) {}
  MSL_BVEC_COMMON(4)
};
template <int N> struct vec_traits<bvec<N>> { static constexpr int n = N; typedef bool elem; };

// make_vec<T, N>(args...): Metal's vector constructors. One scalar splats,
// one vector of the same width converts lane by lane, anything else is
// concatenated (float4(v.xy, 0, 1)).
template <class T, class X> MSL_INLINE void msl_push(T* d, int& i, X x) {
  constexpr int n = vec_traits<X>::n;
  if constexpr (n == 0) {
    d[i++] = T(x);
  } else {
    for (int k = 0; k < n; k++) d[i++] = T(x[k]);
  }
}
template <class T, int N, class... A> MSL_INLINE vec<T, N> msl_make_vec(A... a) {
  vec<T, N> r;
  if constexpr (sizeof...(A) == 0) {
    r = T(0);
  } else if constexpr (sizeof...(A) == 1 && (vec_traits<A>::n + ...) == 0) {
    r = (T)(a, ...);
  } else {
    static_assert((((vec_traits<A>::n == 0) ? 1 : vec_traits<A>::n) + ...) == N,
                  "vector constructor: the arguments do not add up to the vector's width");
    T d[N];
    int i = 0;
    (msl_push(d, i, a), ...);
    for (int k = 0; k < N; k++) r[k] = d[k];
  }
  return r;
}
template <int N, class... A> MSL_INLINE bvec<N> msl_make_bvec(A... a) {
  vec<int, N> v = msl_make_vec<int, N>(a...);
  return bvec<N>(v);
}

// ----------------------------------------------------------------- limits
template <class T> struct numeric_limits;
#define MSL_INT_LIMITS(T, LO, HI)                                            \
  template <> struct numeric_limits<T> {                                     \
    static constexpr bool is_integer = true;                                 \
    static constexpr T min() { return LO; }                                  \
    static constexpr T lowest() { return LO; }                               \
    static constexpr T max() { return HI; }                                  \
  };
MSL_INT_LIMITS(bool, false, true)
MSL_INT_LIMITS(int8_t, -128, 127)
MSL_INT_LIMITS(uint8_t, 0, 255)
MSL_INT_LIMITS(int16_t, -32768, 32767)
MSL_INT_LIMITS(uint16_t, 0, 65535)
MSL_INT_LIMITS(int32_t, (-2147483647 - 1), 2147483647)
MSL_INT_LIMITS(uint32_t, 0u, 4294967295u)
MSL_INT_LIMITS(int64_t, (-9223372036854775807L - 1), 9223372036854775807L)
MSL_INT_LIMITS(uint64_t, 0ul, 18446744073709551615ul)
#define MSL_FLOAT_LIMITS(T, MAXV, MINV, EPS)                                  \
  template <> struct numeric_limits<T> {                                      \
    static constexpr bool is_integer = false;                                 \
    static constexpr T max() { return T(MAXV); }                              \
    static constexpr T min() { return T(MINV); }                              \
    static constexpr T lowest() { return T(-(MAXV)); }                        \
    static constexpr T epsilon() { return T(EPS); }                           \
    static constexpr T infinity() { return T(__builtin_inff()); }             \
    static constexpr T quiet_NaN() { return T(__builtin_nanf("")); }          \
  };
MSL_FLOAT_LIMITS(float, 3.40282347e+38f, 1.17549435e-38f, 1.1920929e-7f)
MSL_FLOAT_LIMITS(half, 65504.0f, 6.103515625e-05f, 0.0009765625f)
MSL_FLOAT_LIMITS(bfloat, 3.38953139e+38f, 1.17549435e-38f, 0.0078125f)

// ------------------------------------------------------------------- math
// Scalars are computed in float (the GPU's half functions are accurate to a
// few ULP of half; computing in float and rounding is within that).
#define MSL_F1(name, expr)                                                     \
  MSL_INLINE float name(float x) { return expr; }                              \
  MSL_INLINE half name(half x) { return (half)name((float)x); }                \
  MSL_INLINE bfloat name(bfloat x) { return (bfloat)name((float)x); }          \
  MSL_INLINE float name(double x) { return name((float)x); }                   \
  template <class T, int N> MSL_INLINE vec<T, N> name(vec<T, N> v) {           \
    vec<T, N> r;                                                               \
    for (int i = 0; i < N; i++) r[i] = name((T)v[i]);                          \
    return r;                                                                  \
  }
MSL_F1(exp, __builtin_expf(x))
MSL_F1(exp2, __builtin_exp2f(x))
MSL_F1(exp10, __builtin_powf(10.0f, x))
MSL_F1(log, __builtin_logf(x))
MSL_F1(log2, __builtin_log2f(x))
MSL_F1(log10, __builtin_log10f(x))
MSL_F1(sqrt, __builtin_sqrtf(x))
MSL_F1(rsqrt, 1.0f / __builtin_sqrtf(x))
MSL_F1(sin, __builtin_sinf(x))
MSL_F1(cos, __builtin_cosf(x))
MSL_F1(tan, __builtin_tanf(x))
MSL_F1(asin, __builtin_asinf(x))
MSL_F1(acos, __builtin_acosf(x))
MSL_F1(atan, __builtin_atanf(x))
MSL_F1(sinh, __builtin_sinhf(x))
MSL_F1(cosh, __builtin_coshf(x))
MSL_F1(tanh, __builtin_tanhf(x))
MSL_F1(asinh, __builtin_asinhf(x))
MSL_F1(acosh, __builtin_acoshf(x))
MSL_F1(atanh, __builtin_atanhf(x))
MSL_F1(floor, __builtin_floorf(x))
MSL_F1(ceil, __builtin_ceilf(x))
MSL_F1(round, __builtin_roundf(x))
MSL_F1(rint, __builtin_rintf(x))
MSL_F1(trunc, __builtin_truncf(x))
MSL_F1(fabs, __builtin_fabsf(x))
MSL_F1(fract, __builtin_fminf(x - __builtin_floorf(x), 0x1.fffffep-1f))
MSL_F1(saturate, __builtin_fminf(__builtin_fmaxf(x, 0.0f), 1.0f))
MSL_F1(sign, (x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : (x != x ? 0.0f : x))))
MSL_F1(log1p_, __builtin_log1pf(x))
MSL_F1(expm1_, __builtin_expm1f(x))
MSL_F1(cospi, __builtin_cosf(3.14159265358979323846f * x))
MSL_F1(sinpi, __builtin_sinf(3.14159265358979323846f * x))

#define MSL_F2(name, expr)                                                     \
  MSL_INLINE float name(float x, float y) { return expr; }                     \
  MSL_INLINE half name(half x, half y) { return (half)name((float)x, (float)y); } \
  MSL_INLINE bfloat name(bfloat x, bfloat y) { return (bfloat)name((float)x, (float)y); } \
  template <class T, int N> MSL_INLINE vec<T, N> name(vec<T, N> a, vec<T, N> b) { \
    vec<T, N> r;                                                               \
    for (int i = 0; i < N; i++) r[i] = name((T)a[i], (T)b[i]);                 \
    return r;                                                                  \
  }                                                                            \
  template <class T, int N> MSL_INLINE vec<T, N> name(vec<T, N> a, T b) {      \
    return name(a, (vec<T, N>)b);                                              \
  }
MSL_F2(pow, __builtin_powf(x, y))
MSL_F2(powr, __builtin_powf(x, y))
MSL_F2(fmod, __builtin_fmodf(x, y))
MSL_F2(atan2, __builtin_atan2f(x, y))
MSL_F2(fmax, __builtin_fmaxf(x, y))
MSL_F2(fmin, __builtin_fminf(x, y))
MSL_F2(copysign, __builtin_copysignf(x, y))
MSL_F2(fdim, __builtin_fdimf(x, y))
MSL_F2(step, (y < x ? 0.0f : 1.0f))
MSL_F2(divide, x / y)

// fma and friends
MSL_INLINE float fma(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
MSL_INLINE half fma(half a, half b, half c) { return (half)__builtin_fmaf(a, b, c); }
MSL_INLINE bfloat fma(bfloat a, bfloat b, bfloat c) { return (bfloat)__builtin_fmaf(a, b, c); }
template <class T, int N> MSL_INLINE vec<T, N> fma(vec<T, N> a, vec<T, N> b, vec<T, N> c) {
  vec<T, N> r;
  for (int i = 0; i < N; i++) r[i] = fma((T)a[i], (T)b[i], (T)c[i]);
  return r;
}
template <class A, class B, class C> MSL_INLINE auto mad(A a, B b, C c) { return a * b + c; }
MSL_INLINE float ldexp(float x, int e) { return __builtin_ldexpf(x, e); }
MSL_INLINE half ldexp(half x, int e) { return (half)__builtin_ldexpf(x, e); }

// abs/min/max/clamp work for every scalar and vector type; for floats they
// are fmax/fmin (a NaN operand is ignored), as in Metal.
template <class T> MSL_INLINE T msl_abs1(T x) {
  if constexpr (is_floating_point_v<T>) return (T)__builtin_fabsf((float)x);
  else if constexpr (is_signed_v<T>) return x < 0 ? T(-x) : x;
  else return x;
}
template <class T> MSL_INLINE T msl_max1(T a, T b) {
  if constexpr (is_floating_point_v<T>) return (T)__builtin_fmaxf((float)a, (float)b);
  else return a > b ? a : b;
}
template <class T> MSL_INLINE T msl_min1(T a, T b) {
  if constexpr (is_floating_point_v<T>) return (T)__builtin_fminf((float)a, (float)b);
  else return a < b ? a : b;
}
template <class T> MSL_INLINE T abs(T x) {
  if constexpr (is_vector_v<T>) {
    T r;
    for (int i = 0; i < vec_traits<T>::n; i++) r[i] = msl_abs1(x[i]);
    return r;
  } else {
    return msl_abs1(x);
  }
}
template <class A, class B> MSL_INLINE auto max(A a, B b) {
  typedef decltype(a + b) R;
  R x = a, y = b, r;
  if constexpr (is_vector_v<R>) {
    for (int i = 0; i < vec_traits<R>::n; i++) r[i] = msl_max1(x[i], y[i]);
  } else {
    r = msl_max1(x, y);
  }
  return r;
}
template <class A, class B> MSL_INLINE auto min(A a, B b) {
  typedef decltype(a + b) R;
  R x = a, y = b, r;
  if constexpr (is_vector_v<R>) {
    for (int i = 0; i < vec_traits<R>::n; i++) r[i] = msl_min1(x[i], y[i]);
  } else {
    r = msl_min1(x, y);
  }
  return r;
}
// Metal's max/min for two half (or two bfloat) operands return that type.
MSL_INLINE half max(half a, half b) { return msl_max1(a, b); }
MSL_INLINE half min(half a, half b) { return msl_min1(a, b); }
MSL_INLINE bfloat max(bfloat a, bfloat b) { return msl_max1(a, b); }
MSL_INLINE bfloat min(bfloat a, bfloat b) { return msl_min1(a, b); }
template <class X, class L, class H> MSL_INLINE X clamp(X x, L lo, H hi) {
  return (X)min(max(x, lo), hi);
}
template <class A, class B, class C> MSL_INLINE auto mix(A x, B y, C a) { return x + (y - x) * a; }
template <class A, class B, class C> MSL_INLINE auto smoothstep(A e0, B e1, C x) {
  auto t = saturate((x - e0) / (e1 - e0));
  return t * t * (3 - 2 * t);
}
template <class T> MSL_INLINE T sincos(T x, T& cosval) { cosval = cos(x); return sin(x); }

// Predicates return bool (boolN for vectors).
#define MSL_PRED(name, expr)                                                   \
  MSL_INLINE bool name(float x) { return expr; }                               \
  MSL_INLINE bool name(half x) { return name((float)x); }                      \
  MSL_INLINE bool name(bfloat x) { return name((float)x); }                    \
  template <class T, int N> MSL_INLINE bvec<N> name(vec<T, N> v) {             \
    bvec<N> r;                                                                 \
    for (int i = 0; i < N; i++) r[i] = name((T)v[i]);                          \
    return r;                                                                  \
  }
MSL_PRED(isnan, __builtin_isnan(x))
MSL_PRED(isinf, __builtin_isinf(x))
MSL_PRED(isfinite, __builtin_isfinite(x))
MSL_PRED(isnormal, __builtin_isnormal(x))
MSL_PRED(signbit, __builtin_signbit(x))

// all / any / select
MSL_INLINE bool all(bool b) { return b; }
MSL_INLINE bool any(bool b) { return b; }
template <int N> MSL_INLINE bool all(bvec<N> b) { for (int i = 0; i < N; i++) if (!b[i]) return false; return true; }
template <int N> MSL_INLINE bool any(bvec<N> b) { for (int i = 0; i < N; i++) if (b[i]) return true; return false; }
template <class T, int N> MSL_INLINE bool all(vec<T, N> m) { for (int i = 0; i < N; i++) if (!m[i]) return false; return true; }
template <class T, int N> MSL_INLINE bool any(vec<T, N> m) { for (int i = 0; i < N; i++) if (m[i]) return true; return false; }
template <class T> MSL_INLINE T select(T a, T b, bool c) { return c ? b : a; }
template <class T, int N> MSL_INLINE vec<T, N> select(vec<T, N> a, vec<T, N> b, bvec<N> c) {
  vec<T, N> r;
  for (int i = 0; i < N; i++) r[i] = c[i] ? b[i] : a[i];
  return r;
}
template <class T, class E, int N>
MSL_INLINE vec<T, N> select(vec<T, N> a, vec<T, N> b, vec<E, N> c) {
  return select(a, b, bvec<N>(c));
}

// Geometric functions
template <class T, int N> MSL_INLINE T dot(vec<T, N> a, vec<T, N> b) {
  T s = a[0] * b[0];
  for (int i = 1; i < N; i++) s = s + a[i] * b[i];
  return s;
}
template <class T, int N> MSL_INLINE T length_squared(vec<T, N> a) { return dot(a, a); }
template <class T, int N> MSL_INLINE T length(vec<T, N> a) { return sqrt(dot(a, a)); }
template <class T, int N> MSL_INLINE T distance(vec<T, N> a, vec<T, N> b) { return length(a - b); }
template <class T, int N> MSL_INLINE vec<T, N> normalize(vec<T, N> a) { return a * rsqrt(dot(a, a)); }
template <class T> MSL_INLINE vec<T, 3> cross(vec<T, 3> a, vec<T, 3> b) {
  return vec<T, 3>{a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x};
}

// Integer functions
template <class T> MSL_INLINE T popcount(T x) { return (T)__builtin_popcountll((uint64_t)x & (~0ull >> (64 - 8 * sizeof(T)))); }
template <class T> MSL_INLINE T clz(T x) {
  uint64_t v = (uint64_t)x & (~0ull >> (64 - 8 * sizeof(T)));
  return v == 0 ? T(8 * sizeof(T)) : T(__builtin_clzll(v) - (64 - 8 * sizeof(T)));
}
template <class T> MSL_INLINE T ctz(T x) {
  uint64_t v = (uint64_t)x & (~0ull >> (64 - 8 * sizeof(T)));
  return v == 0 ? T(8 * sizeof(T)) : T(__builtin_ctzll(v));
}
template <class T> MSL_INLINE T mulhi(T a, T b) {
  if constexpr (sizeof(T) == 4) return T(((int64_t)a * (int64_t)b) >> 32);
  else return T(((__int128)a * (__int128)b) >> 64);
}
MSL_INLINE uint mulhi(uint a, uint b) { return uint(((uint64_t)a * (uint64_t)b) >> 32); }
template <class T> MSL_INLINE T extract_bits(T x, uint offset, uint bits) {
  if (bits == 0) return T(0);
  typedef conditional_t<(sizeof(T) > 4), uint64_t, uint32_t> U;
  U v = (U)x >> offset;
  U m = bits >= 8 * sizeof(U) ? ~U(0) : ((U(1) << bits) - 1);
  v &= m;
  if constexpr (is_signed_v<T>) {
    if (bits < 8 * sizeof(U) && (v >> (bits - 1)) & 1) v |= ~m;
  }
  return T(v);
}
template <class T> MSL_INLINE T insert_bits(T base, T ins, uint offset, uint bits) {
  typedef conditional_t<(sizeof(T) > 4), uint64_t, uint32_t> U;
  U m = (bits >= 8 * sizeof(U) ? ~U(0) : ((U(1) << bits) - 1)) << offset;
  return T(((U)base & ~m) | (((U)ins << offset) & m));
}
template <class T> MSL_INLINE T reverse_bits(T x) {
  T r = 0;
  for (unsigned i = 0; i < 8 * sizeof(T); i++) r |= T(((x >> i) & 1) << (8 * sizeof(T) - 1 - i));
  return r;
}
template <class T> MSL_INLINE T rotate(T v, T i) {
  constexpr unsigned B = 8 * sizeof(T);
  unsigned s = (unsigned)i % B;
  return s == 0 ? v : T((v << s) | (v >> (B - s)));
}
template <class T> MSL_INLINE T absdiff(T a, T b) { return a > b ? T(a - b) : T(b - a); }

// ---------------------------------------------------------------- as_type
template <class T, class U> MSL_INLINE T as_type(U x) {
  static_assert(sizeof(T) == sizeof(U), "as_type: the two types must have the same size");
  return __builtin_bit_cast(T, x);
}

}  // namespace metal

// The fast:: and precise:: variants compute the same functions here (the
// executor does not model fast-math shortcuts; see docs/msl-executor.md).
#define MSL_MATH_NAMES(ns)                                                     \
  namespace metal { namespace ns {                                             \
  using metal::exp; using metal::exp2; using metal::exp10; using metal::log;   \
  using metal::log2; using metal::log10; using metal::sqrt; using metal::rsqrt;\
  using metal::sin; using metal::cos; using metal::tan; using metal::asin;     \
  using metal::acos; using metal::atan; using metal::sinh; using metal::cosh;  \
  using metal::tanh; using metal::asinh; using metal::acosh; using metal::atanh; \
  using metal::floor; using metal::ceil; using metal::round; using metal::rint; \
  using metal::trunc; using metal::fabs; using metal::abs; using metal::fract; \
  using metal::saturate; using metal::sign; using metal::pow; using metal::powr; \
  using metal::fmod; using metal::atan2; using metal::fmax; using metal::fmin; \
  using metal::max; using metal::min; using metal::clamp; using metal::fma;    \
  using metal::divide; using metal::copysign; using metal::normalize;          \
  using metal::length; using metal::distance; using metal::step; using metal::isnan; \
  using metal::isinf; using metal::cospi; using metal::sinpi; using metal::ldexp; \
  } }
MSL_MATH_NAMES(fast)
MSL_MATH_NAMES(precise)

namespace metal {
// ---------------------------------------------------------------- atomics
enum memory_order {
  memory_order_relaxed, memory_order_consume, memory_order_acquire,
  memory_order_release, memory_order_acq_rel, memory_order_seq_cst
};
// Fibers of one launch run on one OS thread and switch only at barriers and
// SIMD-group functions, so a plain read-modify-write is atomic here.
template <class T> struct atomic { T __v; };
typedef atomic<int> atomic_int;
typedef atomic<uint> atomic_uint;
typedef atomic<float> atomic_float;
typedef atomic<bool> atomic_bool;
typedef atomic<ulong> atomic_ulong;
typedef atomic<long> atomic_long;

#define MSL_ATOMIC_RMW(name, expr)                                               \
  template <class T, class U> MSL_INLINE T name(volatile atomic<T>* o, U val, memory_order = memory_order_relaxed) { \
    T old = o->__v;                                                              \
    T v = T(val);                                                                \
    o->__v = (expr);                                                             \
    return old;                                                                  \
  }                                                                              \
  template <class T, class U> MSL_INLINE T name(atomic<T>* o, U val, memory_order mo = memory_order_relaxed) { \
    return name((volatile atomic<T>*)o, val, mo);                                \
  }
MSL_ATOMIC_RMW(atomic_fetch_add_explicit, T(old + v))
MSL_ATOMIC_RMW(atomic_fetch_sub_explicit, T(old - v))
MSL_ATOMIC_RMW(atomic_fetch_and_explicit, T(old & v))
MSL_ATOMIC_RMW(atomic_fetch_or_explicit, T(old | v))
MSL_ATOMIC_RMW(atomic_fetch_xor_explicit, T(old ^ v))
MSL_ATOMIC_RMW(atomic_fetch_max_explicit, (v > old ? v : old))
MSL_ATOMIC_RMW(atomic_fetch_min_explicit, (v < old ? v : old))
MSL_ATOMIC_RMW(atomic_exchange_explicit, v)
template <class T> MSL_INLINE T atomic_load_explicit(const volatile atomic<T>* o, memory_order = memory_order_relaxed) { return o->__v; }
template <class T, class U> MSL_INLINE void atomic_store_explicit(volatile atomic<T>* o, U v, memory_order = memory_order_relaxed) { o->__v = T(v); }
template <class T, class U>
MSL_INLINE bool atomic_compare_exchange_weak_explicit(volatile atomic<T>* o, T* expected, U desired,
                                                      memory_order = memory_order_relaxed,
                                                      memory_order = memory_order_relaxed) {
  if (o->__v == *expected) { o->__v = T(desired); return true; }
  *expected = o->__v;
  return false;
}
template <class T, class U>
MSL_INLINE bool atomic_compare_exchange_strong_explicit(volatile atomic<T>* o, T* expected, U desired,
                                                        memory_order a = memory_order_relaxed,
                                                        memory_order b = memory_order_relaxed) {
  return atomic_compare_exchange_weak_explicit(o, expected, desired, a, b);
}

// ------------------------------------------------- barriers and SIMD groups
enum class mem_flags : unsigned {
  mem_none = 0, mem_device = 1, mem_threadgroup = 2, mem_texture = 4,
  mem_threadgroup_imageblock = 8, mem_object_data = 16
};
MSL_INLINE mem_flags operator|(mem_flags a, mem_flags b) { return mem_flags(unsigned(a) | unsigned(b)); }

// A call site: (1 bit body/header, 21 bits line, 10 bits column). The runtime
// groups the lanes of a SIMD operation by it, and resolves the textually
// first site first when lanes of one SIMD group wait at different sites.
#define MSL_SITE_PARAMS unsigned _msl_line = __builtin_LINE(), unsigned _msl_col = __builtin_COLUMN(), const char* _msl_file = __builtin_FILE()
#define MSL_SITE (((_msl_file[0] == 'b') ? 0x80000000u : 0u) | ((_msl_line & 0x1fffffu) << 10) | (_msl_col & 0x3ffu))

MSL_INLINE void threadgroup_barrier(mem_flags = mem_flags::mem_none, MSL_SITE_PARAMS) {
  msl_thread* t = msl_rt->current;
  t->kind = MSL_WAIT_BARRIER;
  t->site = MSL_SITE;
  msl_rt->block(t);
}

template <class T> MSL_INLINE T msl_poison() {
  T p;
  __builtin_memset(&p, 0xff, sizeof p);
  return p;
}

// Block this lane on a SIMD operation; `fn` combines the lanes' operands.
template <class R, class T>
MSL_INLINE R msl_simd(unsigned site, msl_resolve_fn fn, const T& x, long long arg = 0) {
  msl_thread* t = msl_rt->current;
  R out;
  t->kind = MSL_WAIT_SIMD;
  t->site = site;
  t->resolve = fn;
  t->in = &x;
  t->out = &out;
  t->arg = arg;
  msl_rt->block(t);
  return out;
}

MSL_INLINE void msl_noop_resolve(msl_thread* const*, unsigned) {}
MSL_INLINE void simdgroup_barrier(mem_flags = mem_flags::mem_none, MSL_SITE_PARAMS) {
  msl_simd<int>(MSL_SITE, msl_noop_resolve, 0);
}

// Reductions over the active lanes of each W-lane group (W = 32 for simd_*,
// 4 for quad_*), as a pairwise tree like the hardware's butterfly.
struct op_sum { template <class T> static MSL_INLINE T f(T a, T b) { return a + b; } };
struct op_prod { template <class T> static MSL_INLINE T f(T a, T b) { return a * b; } };
struct op_max { template <class T> static MSL_INLINE T f(T a, T b) { return max(a, b); } };
struct op_min { template <class T> static MSL_INLINE T f(T a, T b) { return min(a, b); } };
struct op_and { template <class T> static MSL_INLINE T f(T a, T b) { return a & b; } };
struct op_or { template <class T> static MSL_INLINE T f(T a, T b) { return a | b; } };
struct op_xor { template <class T> static MSL_INLINE T f(T a, T b) { return a ^ b; } };

template <class T, class Op, int W> void msl_r_reduce(msl_thread* const* L, unsigned) {
  for (int base = 0; base < 32; base += W) {
    T v[W];
    int n = 0;
    for (int i = base; i < base + W; i++)
      if (L[i]) v[n++] = *(const T*)L[i]->in;
    if (n == 0) continue;
    for (int width = 1; width < n; width *= 2)
      for (int i = 0; i + width < n; i += 2 * width) v[i] = Op::f(v[i], v[i + width]);
    for (int i = base; i < base + W; i++)
      if (L[i]) *(T*)L[i]->out = v[0];
  }
}

template <class T, class Op, bool Inclusive> void msl_r_scan(msl_thread* const* L, unsigned) {
  bool any = false;
  T acc{};
  for (int i = 0; i < 32; i++) {
    if (!L[i]) continue;
    T x = *(const T*)L[i]->in;
    if (Inclusive) {
      acc = any ? Op::f(acc, x) : x;
      *(T*)L[i]->out = acc;
    } else {
      // exclusive: the identity for the first active lane
      *(T*)L[i]->out = any ? acc : (is_same_v<Op, op_prod> ? T(1) : T(0));
      acc = any ? Op::f(acc, x) : x;
    }
    any = true;
  }
}

// Shuffles: each lane reads the operand of a source lane. A source outside
// the group leaves the lane's own value (Metal's rule for up/down); a source
// lane that is inactive gives poison (all-ones bytes: NaN for floats), since
// the hardware would hand back a stale register.
enum { SRC_IDX, SRC_UP, SRC_DOWN, SRC_XOR, SRC_ROT_UP, SRC_ROT_DOWN, SRC_FIRST };
template <class T, int Kind, int W> void msl_r_shuffle(msl_thread* const* L, unsigned mask) {
  for (int i = 0; i < 32; i++) {
    if (!L[i]) continue;
    int base = i - i % W, l = i % W;
    long long a = L[i]->arg;
    int src;
    switch (Kind) {
      case SRC_IDX: src = (int)(a & (W - 1)); break;
      case SRC_UP: src = l - (int)a; if (src < 0) src = l; break;
      case SRC_DOWN: src = l + (int)a; if (src >= W) src = l; break;
      case SRC_XOR: src = (l ^ (int)a) & (W - 1); break;
      case SRC_ROT_UP: src = (int)((l - a % W + W) % W); break;
      case SRC_ROT_DOWN: src = (int)((l + a) % W); break;
      default: src = -1;
        for (int k = 0; k < W; k++) if (L[base + k]) { src = k; break; }
    }
    const msl_thread* s = L[base + src];
    *(T*)L[i]->out = s ? *(const T*)s->in : msl_poison<T>();
  }
  (void)mask;
}

// Votes
struct simd_vote {
  typedef uint64_t vote_t;
  vote_t v;
  MSL_INLINE explicit constexpr simd_vote(vote_t x = 0) : v(x) {}
  MSL_INLINE explicit constexpr operator vote_t() const { return v; }
  MSL_INLINE bool all() const { return v == ~0ull; }
  MSL_INLINE bool any() const { return v != 0; }
};
MSL_INLINE void msl_r_ballot(msl_thread* const* L, unsigned) {
  uint64_t m = 0;
  for (int i = 0; i < 32; i++) if (L[i] && *(const bool*)L[i]->in) m |= 1ull << i;
  for (int i = 0; i < 32; i++) if (L[i]) *(uint64_t*)L[i]->out = m;
}
MSL_INLINE void msl_r_active(msl_thread* const* L, unsigned mask) {
  for (int i = 0; i < 32; i++) if (L[i]) *(uint64_t*)L[i]->out = mask;
}

#define MSL_SIMD_REDUCE(name, Op, W)                                           \
  template <class T> MSL_INLINE T name(T x, MSL_SITE_PARAMS) {                 \
    return msl_simd<T>(MSL_SITE, msl_r_reduce<T, Op, W>, x);                   \
  }
MSL_SIMD_REDUCE(simd_sum, op_sum, 32)
MSL_SIMD_REDUCE(simd_product, op_prod, 32)
MSL_SIMD_REDUCE(simd_max, op_max, 32)
MSL_SIMD_REDUCE(simd_min, op_min, 32)
MSL_SIMD_REDUCE(simd_and, op_and, 32)
MSL_SIMD_REDUCE(simd_or, op_or, 32)
MSL_SIMD_REDUCE(simd_xor, op_xor, 32)
MSL_SIMD_REDUCE(quad_sum, op_sum, 4)
MSL_SIMD_REDUCE(quad_product, op_prod, 4)
MSL_SIMD_REDUCE(quad_max, op_max, 4)
MSL_SIMD_REDUCE(quad_min, op_min, 4)
MSL_SIMD_REDUCE(quad_and, op_and, 4)
MSL_SIMD_REDUCE(quad_or, op_or, 4)
MSL_SIMD_REDUCE(quad_xor, op_xor, 4)

#define MSL_SIMD_SCAN(name, Op, Inc)                                           \
  template <class T> MSL_INLINE T name(T x, MSL_SITE_PARAMS) {                 \
    return msl_simd<T>(MSL_SITE, msl_r_scan<T, Op, Inc>, x);                   \
  }
MSL_SIMD_SCAN(simd_prefix_inclusive_sum, op_sum, true)
MSL_SIMD_SCAN(simd_prefix_exclusive_sum, op_sum, false)
MSL_SIMD_SCAN(simd_prefix_inclusive_product, op_prod, true)
MSL_SIMD_SCAN(simd_prefix_exclusive_product, op_prod, false)

#define MSL_SIMD_SHUFFLE(name, Kind, W)                                        \
  template <class T> MSL_INLINE T name(T x, ushort a, MSL_SITE_PARAMS) {       \
    return msl_simd<T>(MSL_SITE, msl_r_shuffle<T, Kind, W>, x, a);             \
  }
MSL_SIMD_SHUFFLE(simd_shuffle, SRC_IDX, 32)
MSL_SIMD_SHUFFLE(simd_broadcast, SRC_IDX, 32)
MSL_SIMD_SHUFFLE(simd_shuffle_up, SRC_UP, 32)
MSL_SIMD_SHUFFLE(simd_shuffle_down, SRC_DOWN, 32)
MSL_SIMD_SHUFFLE(simd_shuffle_xor, SRC_XOR, 32)
MSL_SIMD_SHUFFLE(simd_shuffle_rotate_up, SRC_ROT_UP, 32)
MSL_SIMD_SHUFFLE(simd_shuffle_rotate_down, SRC_ROT_DOWN, 32)
MSL_SIMD_SHUFFLE(quad_shuffle, SRC_IDX, 4)
MSL_SIMD_SHUFFLE(quad_broadcast, SRC_IDX, 4)
MSL_SIMD_SHUFFLE(quad_shuffle_up, SRC_UP, 4)
MSL_SIMD_SHUFFLE(quad_shuffle_down, SRC_DOWN, 4)
MSL_SIMD_SHUFFLE(quad_shuffle_xor, SRC_XOR, 4)
MSL_SIMD_SHUFFLE(quad_shuffle_rotate_up, SRC_ROT_UP, 4)
MSL_SIMD_SHUFFLE(quad_shuffle_rotate_down, SRC_ROT_DOWN, 4)
template <class T> MSL_INLINE T simd_broadcast_first(T x, MSL_SITE_PARAMS) {
  return msl_simd<T>(MSL_SITE, msl_r_shuffle<T, SRC_FIRST, 32>, x);
}
template <class T> MSL_INLINE T quad_broadcast_first(T x, MSL_SITE_PARAMS) {
  return msl_simd<T>(MSL_SITE, msl_r_shuffle<T, SRC_FIRST, 4>, x);
}
MSL_INLINE simd_vote simd_ballot(bool p, MSL_SITE_PARAMS) {
  return simd_vote(msl_simd<uint64_t>(MSL_SITE, msl_r_ballot, p));
}
MSL_INLINE simd_vote simd_active_threads_mask(MSL_SITE_PARAMS) {
  return simd_vote(msl_simd<uint64_t>(MSL_SITE, msl_r_active, 0));
}
MSL_INLINE bool simd_any(bool p, MSL_SITE_PARAMS) {
  return msl_simd<uint64_t>(MSL_SITE, msl_r_ballot, p) != 0;
}
MSL_INLINE void msl_r_all(msl_thread* const* L, unsigned) {
  bool all = true;
  for (int i = 0; i < 32; i++) if (L[i] && !*(const bool*)L[i]->in) all = false;
  for (int i = 0; i < 32; i++) if (L[i]) *(bool*)L[i]->out = all;
}
MSL_INLINE bool simd_all(bool p, MSL_SITE_PARAMS) {  // every *active* lane votes true
  return msl_simd<bool>(MSL_SITE, msl_r_all, p);
}
MSL_INLINE bool simd_is_first(MSL_SITE_PARAMS) {
  uint64_t m = msl_simd<uint64_t>(MSL_SITE, msl_r_active, 0);
  return (m & ((1ull << msl_rt->current->thread_index_in_simdgroup) - 1)) == 0;
}
}  // namespace metal

namespace metal {
// ------------------------------------------------------- simdgroup_matrix
// 8x8 matrices spread over the 32 lanes, two elements per lane, in the
// layout MLX's steel kernels assume for thread_elements():
//   row = (lane/4 & 4) + (lane/2) % 4,  cols = (lane/4 & 2)*2 + (lane%2)*2 + {0,1}
MSL_INLINE void msl_frag_coord(unsigned lane, int& r, int& c) {
  unsigned q = lane / 4;
  r = (int)((q & 4) + (lane / 2) % 4);
  c = (int)((q & 2) * 2 + (lane % 2) * 2);
}
template <class T, int Rows, int Cols> struct simdgroup_matrix {
  static_assert(Rows == 8 && Cols == 8, "the executor supports 8x8 simdgroup matrices");
  vec<T, 2> e;
  MSL_INLINE simdgroup_matrix() = default;
  // simdgroup_matrix(v): a diagonal matrix with v on the diagonal
  MSL_INLINE explicit simdgroup_matrix(T v) {
    int r, c;
    msl_frag_coord(msl_rt->current->thread_index_in_simdgroup, r, c);
    e[0] = r == c ? v : T(0);
    e[1] = r == c + 1 ? v : T(0);
  }
  MSL_INLINE vec<T, 2>& thread_elements() { return e; }
  MSL_INLINE const vec<T, 2>& thread_elements() const { return e; }
};
typedef simdgroup_matrix<float, 8, 8> simdgroup_float8x8;
typedef simdgroup_matrix<half, 8, 8> simdgroup_half8x8;
typedef simdgroup_matrix<bfloat, 8, 8> simdgroup_bfloat8x8;

template <class T, int R, int C> MSL_INLINE simdgroup_matrix<T, R, C> make_filled_simdgroup_matrix(T v) {
  simdgroup_matrix<T, R, C> m;
  m.e = v;
  return m;
}
// Loads and stores touch only the lane's own two elements. matrix_origin is
// (column, row) of the tile's top-left element in the source.
template <class T, class U, int R, int C>
MSL_INLINE void simdgroup_load(simdgroup_matrix<T, R, C>& d, const U* src, ulong elements_per_row = C,
                               vec<ulong, 2> origin = vec<ulong, 2>(0), bool transpose = false) {
  int r, c;
  msl_frag_coord(msl_rt->current->thread_index_in_simdgroup, r, c);
  for (int k = 0; k < 2; k++) {
    ulong row = transpose ? c + k : r, col = transpose ? r : c + k;
    d.e[k] = T(src[(origin.y + row) * elements_per_row + origin.x + col]);
  }
}
template <class T, class U, int R, int C>
MSL_INLINE void simdgroup_store(const simdgroup_matrix<T, R, C>& m, U* dst, ulong elements_per_row = C,
                                vec<ulong, 2> origin = vec<ulong, 2>(0), bool transpose = false) {
  int r, c;
  msl_frag_coord(msl_rt->current->thread_index_in_simdgroup, r, c);
  for (int k = 0; k < 2; k++) {
    ulong row = transpose ? c + k : r, col = transpose ? r : c + k;
    dst[(origin.y + row) * elements_per_row + origin.x + col] = U(m.e[k]);
  }
}
template <class TA, class TB, class TC> struct msl_mma_args {
  const vec<TA, 2>* a; const vec<TB, 2>* b; const vec<TC, 2>* c;
};
// D = A*B + C over the whole SIMD group; products summed in float.
template <class TD, class TA, class TB, class TC> void msl_r_mma(msl_thread* const* L, unsigned mask) {
  float A[8][8], B[8][8], Cm[8][8];
  for (int l = 0; l < 32; l++) {
    int r, c;
    msl_frag_coord(l, r, c);
    for (int k = 0; k < 2; k++) {
      if (!L[l]) { A[r][c + k] = B[r][c + k] = Cm[r][c + k] = __builtin_nanf(""); continue; }
      const msl_mma_args<TA, TB, TC>& x = *(const msl_mma_args<TA, TB, TC>*)L[l]->in;
      A[r][c + k] = (float)(*x.a)[k];
      B[r][c + k] = (float)(*x.b)[k];
      Cm[r][c + k] = x.c ? (float)(*x.c)[k] : 0.0f;
    }
  }
  for (int l = 0; l < 32; l++) {
    if (!L[l]) continue;
    int r, c;
    msl_frag_coord(l, r, c);
    vec<TD, 2> out;
    for (int k = 0; k < 2; k++) {
      float s = Cm[r][c + k];
      for (int j = 0; j < 8; j++) s += A[r][j] * B[j][c + k];
      out[k] = mask == 0xffffffffu ? TD(s) : msl_poison<TD>();  // needs every lane
    }
    *(vec<TD, 2>*)L[l]->out = out;
  }
}
template <class TD, class TA, class TB, class TC>
MSL_INLINE void simdgroup_multiply_accumulate(simdgroup_matrix<TD, 8, 8>& d, const simdgroup_matrix<TA, 8, 8>& a,
                                              const simdgroup_matrix<TB, 8, 8>& b, const simdgroup_matrix<TC, 8, 8>& c,
                                              MSL_SITE_PARAMS) {
  msl_mma_args<TA, TB, TC> args{&a.e, &b.e, &c.e};
  d.e = msl_simd<vec<TD, 2>>(MSL_SITE, msl_r_mma<TD, TA, TB, TC>, args);
}
template <class TD, class TA, class TB>
MSL_INLINE void simdgroup_multiply(simdgroup_matrix<TD, 8, 8>& d, const simdgroup_matrix<TA, 8, 8>& a,
                                   const simdgroup_matrix<TB, 8, 8>& b, MSL_SITE_PARAMS) {
  msl_mma_args<TA, TB, TD> args{&a.e, &b.e, 0};
  d.e = msl_simd<vec<TD, 2>>(MSL_SITE, msl_r_mma<TD, TA, TB, TD>, args);
}

// ------------------------------------------------------------ vector types
#define MSL_VEC_TYPES(T, name)                                                 \
  typedef vec<T, 2> name##2;                                                   \
  typedef vec<T, 3> name##3;                                                   \
  typedef vec<T, 4> name##4;
MSL_VEC_TYPES(float, float)
MSL_VEC_TYPES(half, half)
MSL_VEC_TYPES(bfloat, bfloat)
MSL_VEC_TYPES(int, int)
MSL_VEC_TYPES(uint, uint)
MSL_VEC_TYPES(short, short)
MSL_VEC_TYPES(ushort, ushort)
MSL_VEC_TYPES(signed char, char)
MSL_VEC_TYPES(uchar, uchar)
MSL_VEC_TYPES(long, long)
MSL_VEC_TYPES(ulong, ulong)
typedef bvec<2> bool2;
typedef bvec<3> bool3;
typedef bvec<4> bool4;

// log1p is not a Metal builtin; MLX's utils.h defines it.
MSL_INLINE float log1p(float x) { return log1p_(x); }
MSL_INLINE bfloat log1p(bfloat x) { return bfloat(log1p_(float(x))); }
MSL_INLINE float expm1(float x) { return expm1_(x); }
}  // namespace metal

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
METAL_FUNC IdxT elem_to_loc(E elem, const int* shape, const S* strides, int ndim) {
  IdxT loc = 0;
  IdxT e = IdxT(elem);
  for (int i = ndim - 1; i >= 0 && e > 0; --i) {
    loc += IdxT(e % shape[i]) * IdxT(strides[i]);
    e /= shape[i];
  }
  return loc;
}
template <typename IdxT = int64_t, typename S>
METAL_FUNC IdxT elem_to_loc(metal::uint3 elem, const int* shape, const S* strides, int ndim) {
  IdxT loc = IdxT(elem.x) * IdxT(strides[ndim - 1]) + IdxT(elem.y) * IdxT(strides[ndim - 2]);
  for (int d = ndim - 3; d >= 0; --d) {
    loc += IdxT(elem.z % shape[d]) * IdxT(strides[d]);
    elem.z /= shape[d];
  }
  return loc;
}
template <typename S> METAL_FUNC int64_t elem_to_loc_1(uint elem, S stride) { return int64_t(elem) * int64_t(stride); }
template <typename S> METAL_FUNC int64_t elem_to_loc_2(metal::uint2 elem, const S* strides) {
  return int64_t(elem.x) * int64_t(strides[1]) + int64_t(elem.y) * int64_t(strides[0]);
}
template <typename S> METAL_FUNC int64_t elem_to_loc_3(metal::uint3 elem, const S* strides) {
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

// -------------------------------------------- address spaces and constructors
// Metal's address spaces are all one flat memory here (the optional
// address-space check maps them to clang address spaces instead).
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
