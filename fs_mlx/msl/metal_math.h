// metal_math.h — the metal:: math functions, with fast:: and precise::.
// Part of metal_runtime.h.
#pragma once
#include "metal_types.h"

namespace metal {
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
#ifdef MSL_METAL_CHECK
// Metal overloads min/max/clamp per type: two different scalar types (size_t
// and int, uint and int, half and float) are an ambiguous call there. A
// vector may meet a scalar of its own element type.
template <class A, class B> constexpr bool msl_same_elem =
    __is_same(typename vec_traits<__remove_cvref(A)>::elem, typename vec_traits<__remove_cvref(B)>::elem);
#define MSL_SAME_TYPES(A, B)                                                   \
  static_assert(msl_same_elem<A, B>, "Metal: min/max/clamp of two different types (e.g. size_t and int) "\
                "is ambiguous; cast one argument")
#else
#define MSL_SAME_TYPES(A, B)
#endif
template <class A, class B> MSL_INLINE auto max(A a, B b) {
  MSL_SAME_TYPES(A, B);
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
  MSL_SAME_TYPES(A, B);
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
