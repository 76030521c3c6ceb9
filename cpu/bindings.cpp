// bindings.cpp: the Python module fs_mlx.cpu._kernels (nanobind, in MLX's
// nanobind domain so that mx.array passes in and out as MLX's own type).
// fs_mlx/cpu/__init__.py is the only caller; it decides when these run.

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include "mlx/version.h"
#include "primitives.h"
#include "threads.h"

namespace nb = nanobind;
using namespace nb::literals;

#define FSX_STR2(x) #x
#define FSX_STR(x) FSX_STR2(x)
#define FSX_MLX_VERSION \
  FSX_STR(MLX_VERSION_MAJOR) "." FSX_STR(MLX_VERSION_MINOR) "." FSX_STR(MLX_VERSION_PATCH)

// Readable with ctypes before the module is imported (fs_mlx/cpu/__init__.py
// refuses a build made against another mlx: its C++ ABI is not stable).
extern "C" __attribute__((visibility("default"))) const char* fsx_cpu_built_against_mlx() {
  return FSX_MLX_VERSION;
}

static std::string simd() {
  std::string s;
#if defined(__AVX512F__)
  s = "AVX-512";
#elif defined(__AVX2__)
  s = "AVX2";
#elif defined(__ARM_NEON)
  s = "NEON";
#else
  s = "generic";
#endif
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
  s += "+FMA";
#endif
  return s;
}

NB_MODULE(_kernels, m) {
  m.doc() = "fsx's CPU kernels as MLX primitives (source: cpu/)";
  m.attr("built_against_mlx") = FSX_MLX_VERSION;
  m.attr("simd") = simd();

  m.def("linear", &fsx_cpu::linear, "x"_a, "w"_a, nb::kw_only(), "stream"_a = nb::none(),
        "y = x @ w.T for float weights w [N, K], on a CPU stream.");
  m.def("quantized_matmul", &fsx_cpu::quantized_matmul, "x"_a, "w"_a, "scales"_a, "biases"_a,
        "group_size"_a, "bits"_a, nb::kw_only(), "stream"_a = nb::none(),
        "mx.quantized_matmul(x, w, scales, biases, transpose=True, ...) for affine 4/8-bit.");
  m.def("quantized_swiglu", &fsx_cpu::quantized_swiglu, "x"_a, "w"_a, "scales"_a, "biases"_a,
        "group_size"_a, "bits"_a, nb::kw_only(), "stream"_a = nb::none(),
        "silu(x @ gate.T) * (x @ up.T) for w = [gate; up] quantized as one affine matrix.");
  m.def("rms_norm", &fsx_cpu::rms_norm, "x"_a, "w"_a, "eps"_a, nb::kw_only(),
        "stream"_a = nb::none(), "x / sqrt(mean(x^2) + eps) * w over the last axis.");
  m.def("add_rms_norm", &fsx_cpu::add_rms_norm, "x"_a, "residual"_a, "w"_a, "eps"_a,
        nb::kw_only(), "stream"_a = nb::none(), "[h, rms_norm(h, w, eps)] with h = x + residual.");
  m.def("qk_norm_rope", &fsx_cpu::qk_norm_rope, "q"_a, "k"_a, "inv_freq"_a, "q_weight"_a.none(),
        "k_weight"_a.none(), "offsets"_a.none(), "eps"_a, "dims"_a, "traditional"_a, "scale"_a,
        "mscale"_a, "offset"_a, nb::kw_only(), "stream"_a = nb::none(),
        "q [B, L, Hq, D], k [B, L, Hkv, D] -> per-head RMSNorm (with weights), RoPE, [B, H, L, D].");
  m.def("attention", &fsx_cpu::attention, "q"_a, "k"_a, "v"_a, "mask"_a.none(), "scale"_a,
        "causal"_a, "window"_a, nb::kw_only(), "stream"_a = nb::none(),
        "softmax(scale q k^T + mask) v, grouped-query heads, window > 0 a sliding window; q [B, Hq, L, D], k/v [B, Hkv, S, D].");
  m.def("num_threads", [] { return fsx_cpu::ThreadPool::instance().size(); },
        "Threads a product is split across (the caller included).");
  m.def("set_num_threads", [](int n) { fsx_cpu::ThreadPool::instance().set_size(n); }, "n"_a,
        "Use n threads from the next product on (FSX_CPU_THREADS sets the start value).");
}
