// metal_sync.h — atomics, barriers, SIMD-group functions and simdgroup matrices.
//
// Barriers and SIMD-group functions do not compute anything in the calling
// fiber: they record what the lane waits for (kind, call site, operand) and
// block. The runtime resumes the lane once every lane of the operation has
// arrived, after a "resolve" function below combined the operands.
// Part of metal_runtime.h.
#pragma once
#include "msl_abi.h"
#include "metal_math.h"

// The runtime's services, set once per loaded kernel by msl_bind().
static const msl_api* msl_rt;
extern "C" __attribute__((visibility("default"))) void msl_bind(const msl_api* api) { msl_rt = api; }

namespace metal {
// ---------------------------------------------------------------- atomics
enum memory_order {
  memory_order_relaxed, memory_order_consume, memory_order_acquire,
  memory_order_release, memory_order_acq_rel, memory_order_seq_cst
};
// Fibers of one launch run on one OS thread and switch only at barriers and
// SIMD-group functions, so a plain read-modify-write is atomic here.
template <class T> struct atomic { typedef T value_type; T __v; };
typedef atomic<int> atomic_int;
typedef atomic<uint> atomic_uint;
typedef atomic<float> atomic_float;
typedef atomic<bool> atomic_bool;
typedef atomic<ulong> atomic_ulong;
typedef atomic<long> atomic_long;

// `A` is atomic<T> as the kernel holds it: in the Metal check it carries its
// address space (device or threadgroup), which a pattern `atomic<T>*` would
// not match.
#define MSL_ATOMIC_RMW(name, expr)                                               \
  template <class A, class U>                                                    \
  MSL_INLINE typename A::value_type name(volatile A* o, U val, memory_order = memory_order_relaxed) { \
    typedef typename A::value_type T;                                            \
    T old = o->__v;                                                              \
    T v = T(val);                                                                \
    o->__v = (expr);                                                             \
    return old;                                                                  \
  }
MSL_ATOMIC_RMW(atomic_fetch_add_explicit, T(old + v))
MSL_ATOMIC_RMW(atomic_fetch_sub_explicit, T(old - v))
MSL_ATOMIC_RMW(atomic_fetch_and_explicit, T(old & v))
MSL_ATOMIC_RMW(atomic_fetch_or_explicit, T(old | v))
MSL_ATOMIC_RMW(atomic_fetch_xor_explicit, T(old ^ v))
MSL_ATOMIC_RMW(atomic_fetch_max_explicit, (v > old ? v : old))
MSL_ATOMIC_RMW(atomic_fetch_min_explicit, (v < old ? v : old))
MSL_ATOMIC_RMW(atomic_exchange_explicit, v)
template <class A>
MSL_INLINE typename A::value_type atomic_load_explicit(const volatile A* o, memory_order = memory_order_relaxed) {
  return o->__v;
}
template <class A, class U>
MSL_INLINE void atomic_store_explicit(volatile A* o, U v, memory_order = memory_order_relaxed) {
  o->__v = typename A::value_type(v);
}
template <class A, class E, class U>
MSL_INLINE bool atomic_compare_exchange_weak_explicit(volatile A* o, E* expected, U desired,
                                                      memory_order = memory_order_relaxed,
                                                      memory_order = memory_order_relaxed) {
  typedef typename A::value_type T;
  if (o->__v == *expected) { o->__v = T(desired); return true; }
  *expected = o->__v;
  return false;
}
template <class A, class E, class U>
MSL_INLINE bool atomic_compare_exchange_strong_explicit(volatile A* o, E* expected, U desired,
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

// log1p is not a Metal builtin; MLX's utils.h defines it.
MSL_INLINE float log1p(float x) { return log1p_(x); }
MSL_INLINE bfloat log1p(bfloat x) { return bfloat(log1p_(float(x))); }
MSL_INLINE float expm1(float x) { return expm1_(x); }
}  // namespace metal
