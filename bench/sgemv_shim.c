// An experiment, not part of the engine (docs/performance.md, "The matvec"):
// a cblas_sgemm that sends matrix-vector products (M == 1, row-major) to cblas_sgemv.
//
// MLX's CPU backend runs every float32 matmul as cblas_sgemm, decoding included
// (M = 1). OpenBLAS 0.3.21 (Debian 12) packs the whole weight matrix for such a
// call; its sgemv streams it once. Loaded with RTLD_GLOBAL *before* OpenBLAS, this
// file's cblas_sgemm wins the symbol lookup and forwards everything else to the real one.
#include <dlfcn.h>
#include <stdlib.h>

enum { RowMajor = 101, NoTrans = 111, Trans = 112 };
typedef void (*sgemm_t)(int, int, int, int, int, int, float, const float*, int, const float*,
                        int, float, float*, int);
typedef void (*sgemv_t)(int, int, int, int, float, const float*, int, const float*, int, float,
                        float*, int);
static sgemm_t real_sgemm;
static sgemv_t real_sgemv;

static void init(void) {
  void* blas = dlopen(getenv("SGEMV_SHIM_BLAS"), RTLD_NOW | RTLD_NOLOAD);  // already loaded
  real_sgemm = (sgemm_t)dlsym(blas, "cblas_sgemm");
  real_sgemv = (sgemv_t)dlsym(blas, "cblas_sgemv");
}

void cblas_sgemm(int order, int ta, int tb, int M, int N, int K, float alpha, const float* A,
                 int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  if (!real_sgemm) init();
  if (order == RowMajor && M == 1) {
    int incx = ta == NoTrans ? 1 : lda;  // A: one row of K (or a column when transposed)
    if (tb == Trans)  // B [N, K] (a weight in PyTorch layout): C[n] = sum_k B[n, k] A[k]
      real_sgemv(RowMajor, NoTrans, N, K, alpha, B, ldb, A, incx, beta, C, 1);
    else              // B [K, N]: C[n] = sum_k B[k, n] A[k]
      real_sgemv(RowMajor, Trans, K, N, alpha, B, ldb, A, incx, beta, C, 1);
    return;
  }
  real_sgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
