#!/usr/bin/env bash
# The standard benchmark set: fsx next to mlx-lm on the same checkpoints.
#
#   bench/run_standard.sh                 # everything (about 30 minutes on a 2-core x86 VM)
#   bench/run_standard.sh tiny smollm2    # only some entries (names below)
#
# Writes one JSON report per entry into $RESULTS (default bench/results/<os>-<arch>-<cpus>cpu)
# plus machine.txt describing the machine. Checkpoints with random weights and real shapes
# are written once into $WORK (default /tmp/fsx-bench). Needs `pip install -e .[bench]`.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-/tmp/fsx-bench}
RESULTS=${RESULTS:-bench/results/$(uname -s | tr A-Z a-z)-$(uname -m)-$(getconf _NPROCESSORS_ONLN)cpu}
BW=${BANDWIDTH:+--bandwidth $BANDWIDTH}   # e.g. BANDWIDTH=100 for the roofline column
mkdir -p "$WORK" "$RESULTS"
ENTRIES=${*:-tiny tiny-sweep smollm2 smollm2-bf16 qwen3-bf16 qwen3-sweep qwen3-8bit qwen3-4bit}

checkpoint() {  # shape dir: a random checkpoint of that shape (bf16, as the real ones)
  [ -d "$WORK/$2" ] || python bench/random_checkpoint.py "$1" "$WORK/$2"
}
quantized() {  # bits dir: the Qwen3-0.6B-shaped checkpoint, quantized by fsx quantize
  checkpoint qwen3-0.6b qwen3-0.6b
  [ -d "$WORK/$2" ] || fsx quantize "$WORK/qwen3-0.6b" --bits "$1" -o "$WORK/$2"
}
run() {  # name, then fsx bench arguments
  local name=$1; shift
  echo "== $name: fsx bench $*" >&2
  local t0=$SECONDS
  fsx bench "$@" $BW --out "$RESULTS/$name.json"
  echo "== $name took $((SECONDS - t0)) s" >&2
}

{
  echo "recorded: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- fs_mlx || echo ' (+ local changes)')"
  uname -srm
  grep -m1 "model name" /proc/cpuinfo 2>/dev/null || sysctl -n machdep.cpu.brand_string 2>/dev/null || true
  echo "cpus: $(getconf _NPROCESSORS_ONLN)"
  free -g 2>/dev/null | sed -n 2p || true
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)"
  python -c "import fs_mlx.openblas as o, mlx.core as mx; print('blas:', o.STATUS); print('mlx', mx.__version__, mx.default_device())"
  python -c "from importlib.metadata import version as v; print('mlx-lm', v('mlx-lm'))"
} > "$RESULTS/machine.$$.txt"
if [ -z "${*:-}" ]; then mv "$RESULTS/machine.$$.txt" "$RESULTS/machine.txt"
else mv "$RESULTS/machine.$$.txt" "$RESULTS/machine-$(echo "$ENTRIES" | tr ' ' '+').txt"; fi

for entry in $ENTRIES; do
  case $entry in
    # Per-token overhead: a 3-layer, hidden-64 model does almost no arithmetic.
    tiny) run tiny golden/checkpoints/qwen3-tiny -p 128 -g 256 -r 5 --compare mlx-lm ;;
    # Attention cost with depth, on the same tiny model (cache reused between depths).
    tiny-sweep) run tiny-sweep golden/checkpoints/qwen3-tiny --contexts 256,1024,3072 -g 64 -r 3 \
                  --compare mlx-lm ;;
    # The default model: SmolLM2-135M-Instruct Q4_1 GGUF (mlx-lm gets it exported as MLX).
    smollm2) run smollm2 -p 64 -g 32 -r 3 --compare mlx-lm --compare mlx-lm:float32 ;;
    # SmolLM2-135M's shape, bf16 as published.
    smollm2-bf16) checkpoint smollm2-135m smollm2-135m
                  run smollm2-bf16 "$WORK/smollm2-135m" -p 64 -g 32 -r 3 \
                    --compare mlx-lm --compare mlx-lm:float32 ;;
    # Qwen3-0.6B's shape, bf16 as published. Short runs: a few minutes on 2 cores.
    qwen3-bf16) checkpoint qwen3-0.6b qwen3-0.6b
                run qwen3-bf16 "$WORK/qwen3-0.6b" -p 32 -g 16 -r 3 \
                  --compare mlx-lm --compare mlx-lm:float32 ;;
    # Decode at depth on the 0.6B shape (both in float32; mlx-lm's bf16 prefill is too slow here).
    qwen3-sweep) checkpoint qwen3-0.6b qwen3-0.6b
                 run qwen3-sweep "$WORK/qwen3-0.6b" --contexts 256,1024,2048 -g 8 -r 2 \
                   --compare mlx-lm:float32 ;;
    # Quantized: mlx-lm keeps the scales in bf16 and then runs ~10x slower on CPU
    # (0.26 tok/s at 4 bits, docs/performance.md): compared at float32 only.
    qwen3-8bit) quantized 8 qwen3-0.6b-8bit
                run qwen3-8bit "$WORK/qwen3-0.6b-8bit" -p 32 -g 16 -r 3 --compare mlx-lm:float32 ;;
    qwen3-4bit) quantized 4 qwen3-0.6b-4bit
                run qwen3-4bit "$WORK/qwen3-0.6b-4bit" -p 32 -g 16 -r 3 --compare mlx-lm:float32 ;;
    *) echo "unknown entry $entry" >&2; exit 2 ;;
  esac
done
MACHINE=$RESULTS/machine.txt; [ -z "${*:-}" ] || MACHINE=$RESULTS/machine-$(echo "$ENTRIES" | tr ' ' '+').txt
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)" >> "$MACHINE"
echo "results in $RESULTS" >&2
