// bindings.cpp: the Python module fs_mlx.cpu._kernels (nanobind, in MLX's
// nanobind domain so that mx.array passes in and out as MLX's own type).
// fs_mlx/cpu/__init__.py is the only caller; it decides when these run.

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>

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
  m.doc() = "fsx's CPU matrix products as MLX primitives (source: cpu/)";
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
  m.def("num_threads", [] { return fsx_cpu::ThreadPool::instance().size(); },
        "Threads a product is split across (the caller included).");
  m.def("set_num_threads", [](int n) { fsx_cpu::ThreadPool::instance().set_size(n); }, "n"_a,
        "Use n threads from the next product on (FSX_CPU_THREADS sets the start value).");
}
