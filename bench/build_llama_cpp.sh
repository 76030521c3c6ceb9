#!/usr/bin/env bash
# Build llama.cpp's llama-bench (for `fsx bench --compare llama.cpp`) and llama-quantize (the
# Q4_0 check of tests/test_bench_gguf.py) into the fs-mlx cache.
#
# The sources are the ones PyPI's llama-cpp-python sdist vendors (PyPI is what these
# machines reach); only the llama-bench target is built, CPU only, static, with this
# machine's instructions (GGML_NATIVE, llama.cpp's default). ~10 min on 2 cores.
#
#   bench/build_llama_cpp.sh                 # -> ~/.cache/fs-mlx/llama.cpp/build/bin/llama-bench
#   VERSION=0.3.36 CACHE=/elsewhere bench/build_llama_cpp.sh
set -euo pipefail
VERSION=${VERSION:-0.3.36}
CACHE=${CACHE:-${FSX_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fs-mlx}/llama.cpp}
mkdir -p "$CACHE" && cd "$CACHE"
if [ ! -d "llama_cpp_python-$VERSION" ]; then
  python -m pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d .
  tar xzf "llama_cpp_python-$VERSION.tar.gz"
  # The sdist's timestamps can lie in the future of this clock, and then the build
  # system re-runs cmake forever ("manifest still dirty"): make them now.
  find "llama_cpp_python-$VERSION" -exec touch {} +
fi
SRC="$CACHE/llama_cpp_python-$VERSION/vendor/llama.cpp"
cmake -S "$SRC" -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_CCACHE=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF
cmake --build build --target llama-bench llama-quantize -j "$(nproc)"
echo "built $CACHE/build/bin/llama-bench and llama-quantize"
