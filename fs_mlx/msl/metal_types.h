// metal_types.h — Metal's scalar and vector types, as clang types.
//
// half and bfloat are _Float16 and __bf16; vectors are clang's
// ext_vector_type, which gives Metal's swizzles (.xyzw, .rgba, v.xy = v.yx);
// boolN is a small struct, because clang's vector comparisons give -1 per
// true lane and Metal's give true. Part of metal_runtime.h.
#pragma once

#ifndef MSL_METAL_CHECK
#define MSL_INLINE inline __attribute__((always_inline))
#else
// The Metal check (compiler.py: check_metal_rules) reads the IR of the
// kernel's own functions: runtime functions stay out of them.
#define MSL_INLINE inline __attribute__((noinline))
#endif

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

}  // namespace metal
