// matmul.h: Y[M, N] = X[M, K] · W[N, K]ᵀ on the CPU, for any weight reader
// of weights.h (float32/f16/bf16 rows, MLX affine 4/8-bit).
//
//   X  [M, K] float32, row stride ldx     (activations, converted up front)
//   W  [N, K] through a reader            (rows are output features, as nn.Linear)
//   Y  [M, N] float32, row stride N        (accumulated in float32)
//
// Two shapes of work, chosen by M:
//
// Few rows, M <= kMaxRows (decode; batched decode and speculative verification
// with a handful of rows): rows_kernel<R>. For each output n, the weight row is
// read and dequantized once, 32 values at a time into four f32x8 registers,
// and multiplied into all R rows of X (which stay in L1): the weight stream,
// the bytes a token must read, is read once whatever R is. Accumulators per
// row: 4 for R = 1, 2 for R <= 3, 1 above, so at least 4 independent FMA
// chains are in flight (an FMA's latency is 4 cycles, two issue per cycle).
// Threads take chunks of >= 16 consecutive outputs from the pool's counter
// (threads.h), so each thread streams contiguous rows of W.
//
// Many rows, M > kMaxRows (prefill): gemm. The columns of Y are cut into
// tiles of NR = 16 outputs, one tile per chunk of work; K into blocks of KC =
// 64. For each (tile, block) the 16 × 64 slice of W is dequantized once into
// a k-major buffer (4 KiB: L1), then MR = 6 rows of X at a time are
// multiplied against it by the micro-kernel: 6 × 16 outputs in 12 f32x8
// accumulators, each k one broadcast of x per row and two loads of the tile —
// 12 FMAs per 8 loads, no horizontal sums. Each weight is dequantized once per
// prefill chunk, not once per row; no system BLAS is involved.

#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "simd.h"
#include "threads.h"
#include "weights.h"

namespace fsx_cpu {

constexpr int kMaxRows = 8; // rows_kernel up to here, gemm above
constexpr int NR = 16; // gemm tile: outputs
constexpr int MR = 6; // gemm micro-kernel: rows of X
constexpr int KC = 64; // gemm tile: depth (short FMA chains: float32 error like the few-row path)

// ---------------------------------------------------------------- few rows

template <int R, class W>
void rows_kernel(
    const W& w,
    const float* x,
    int64_t ldx,
    int K,
    int n0,
    int n1,
    float* y,
    int64_t ldy) {
  constexpr int A = R == 1 ? 4 : (R <= 3 ? 2 : 1);
  const int K32 = K & ~31;
  for (int n = n0; n < n1; n++) {
    f32x8 acc[R][A] = {};
    for (int k = 0; k < K32; k += 32) {
      f32x8 wv[4];
      w.block32(n, k, wv);
#pragma GCC unroll 4
      for (int j = 0; j < 4; j++) {
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
          acc[r][j % A] += wv[j] * load8(x + r * ldx + k + 8 * j);
        }
      }
    }
    for (int r = 0; r < R; r++) {
      f32x8 a = acc[r][0];
      for (int i = 1; i < A; i++) {
        a += acc[r][i];
      }
      float sum = hsum(a);
      for (int k = K32; k < K; k++) { // dense weights only: K % 32 columns
        sum += w.at(n, k) * x[r * ldx + k];
      }
      y[r * ldy + n] = sum;
    }
  }
}

template <class W>
void rows(const W& w, const float* x, int M, int K, int N, float* y) {
  auto& pool = ThreadPool::instance();
  // ~4 chunks per thread, each a multiple of 16 outputs.
  int per = (N + 4 * pool.size() - 1) / (4 * pool.size());
  per = std::max(16, (per + 15) / 16 * 16);
  int n_chunks = (N + per - 1) / per;
  pool.run(n_chunks, [&](int c) {
    int n0 = c * per, n1 = std::min(N, n0 + per);
    switch (M) {
#define FSX_ROWS(R)                                  \
  case R:                                            \
    rows_kernel<R>(w, x, K, K, n0, n1, y, N); \
    break;
      FSX_ROWS(1)
      FSX_ROWS(2)
      FSX_ROWS(3)
      FSX_ROWS(4)
      FSX_ROWS(5)
      FSX_ROWS(6)
      FSX_ROWS(7)
      FSX_ROWS(8)
#undef FSX_ROWS
    }
  });
}

// ---------------------------------------------------------------- many rows

// tile[kk * NR + j] = W[n0 + j, k0 + kk] for kk < kc; zero for n0 + j >= N.
template <class W>
void pack_tile(const W& w, int n0, int N, int k0, int kc, float* tile) {
  for (int j = 0; j < NR; j++) {
    int n = n0 + j;
    if (n >= N) {
      for (int kk = 0; kk < kc; kk++) {
        tile[kk * NR + j] = 0.0f;
      }
      continue;
    }
    int kk = 0;
    for (; kk + 32 <= kc; kk += 32) { // k0 + kk is a multiple of 32
      f32x8 wv[4];
      w.block32(n, k0 + kk, wv);
      for (int q = 0; q < 4; q++) {
        for (int i = 0; i < 8; i++) {
          tile[(kk + 8 * q + i) * NR + j] = wv[q][i];
        }
      }
    }
    for (; kk < kc; kk++) {
      tile[kk * NR + j] = w.at(n, k0 + kk);
    }
  }
}

// Y[0:R, 0:ncols] (+)= X[0:R, 0:kc] · tile[0:kc, 0:ncols]
template <int R>
void micro_kernel(
    const float* x,
    int64_t ldx,
    const float* tile,
    int kc,
    float* y,
    int64_t ldy,
    int ncols,
    bool accumulate) {
  f32x8 acc[R][2] = {};
  for (int k = 0; k < kc; k++) {
    f32x8 t0 = load8(tile + k * NR), t1 = load8(tile + k * NR + 8);
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
      f32x8 xr = splat8(x[r * ldx + k]);
      acc[r][0] += xr * t0;
      acc[r][1] += xr * t1;
    }
  }
  for (int r = 0; r < R; r++) {
    float* yr = y + r * ldy;
    if (ncols == NR) {
      if (accumulate) {
        acc[r][0] += load8(yr);
        acc[r][1] += load8(yr + 8);
      }
      store8(yr, acc[r][0]);
      store8(yr + 8, acc[r][1]);
    } else {
      float tmp[NR];
      store8(tmp, acc[r][0]);
      store8(tmp + 8, acc[r][1]);
      for (int j = 0; j < ncols; j++) {
        yr[j] = accumulate ? yr[j] + tmp[j] : tmp[j];
      }
    }
  }
}

template <class W>
void gemm(const W& w, const float* x, int M, int K, int N, float* y) {
  auto& pool = ThreadPool::instance();
  int n_tiles = (N + NR - 1) / NR;
  pool.run(n_tiles, [&](int t) {
    thread_local std::vector<float> tile(KC * NR);
    int n0 = t * NR, ncols = std::min(NR, N - n0);
    for (int k0 = 0; k0 < K; k0 += KC) {
      int kc = std::min(KC, K - k0);
      pack_tile(w, n0, N, k0, kc, tile.data());
      bool acc = k0 > 0;
      int m = 0;
      for (; m + MR <= M; m += MR) {
        micro_kernel<MR>(
            x + int64_t(m) * K + k0, K, tile.data(), kc, y + int64_t(m) * N + n0, N,
            ncols, acc);
      }
      const float* xm = x + int64_t(m) * K + k0;
      float* ym = y + int64_t(m) * N + n0;
      switch (M - m) {
#define FSX_MICRO(R)                                                      \
  case R:                                                                 \
    micro_kernel<R>(xm, K, tile.data(), kc, ym, N, ncols, acc); \
    break;
        FSX_MICRO(1)
        FSX_MICRO(2)
        FSX_MICRO(3)
        FSX_MICRO(4)
        FSX_MICRO(5)
#undef FSX_MICRO
      }
    }
  });
}

// ---------------------------------------------------------------- entry

// Y[M, N] = X[M, K] · W[N, K]ᵀ; X and Y contiguous float32.
template <class W>
void matmul(const W& w, const float* x, int M, int K, int N, float* y) {
  if (M <= 0 || N <= 0) {
    return;
  }
  if (K == 0) {
    std::fill(y, y + int64_t(M) * N, 0.0f);
  } else if (M <= kMaxRows) {
    rows(w, x, M, K, N, y);
  } else {
    gemm(w, x, M, K, N, y);
  }
}

} // namespace fsx_cpu
