"""Measure what sending decode's matvecs to sgemv would buy (an experiment; see sgemv_shim.c).

    python bench/sgemv_shim.py [MODEL] [--rounds 6]

Compiles sgemv_shim.c with the system C compiler, then alternates two fresh processes —
OpenBLAS as fs_mlx loads it, and the shim in front of the same OpenBLAS — timing the
151936x1024 and 3072x1024 fp32 matvecs and, given a MODEL, one synchronous decode step.
Checks that both give the same numbers. Linux with Debian's OpenBLAS only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import ctypes, json, os, sys, time
blas = os.environ["SGEMV_SHIM_BLAS"]
if os.environ.get("SGEMV_SHIM"):
    ctypes.CDLL(os.environ["SGEMV_SHIM"], mode=ctypes.RTLD_GLOBAL)  # first: its sgemm wins
    ctypes.CDLL(blas, mode=ctypes.RTLD_GLOBAL)
    os.environ["FSX_OPENBLAS"] = "0"  # already loaded, in the right order
import fs_mlx
import mlx.core as mx
out = {}
mx.random.seed(0)
x = mx.random.normal((1, 1, 1024))
for shape in [(151936, 1024), (3072, 1024)]:
    w = mx.random.normal(shape) * 0.02
    mx.eval(w, x)
    mx.eval(x @ w.T)
    t = []
    for _ in range(5):
        a = time.perf_counter(); y = x @ w.T; mx.eval(y); t.append(time.perf_counter() - a)
    out[f"{shape[0]}x{shape[1]}"] = min(t) * 1e3
    out[f"check {shape[0]}x{shape[1]}"] = float(y.sum())
if len(sys.argv) > 1:
    from fs_mlx.generation.generate import PromptCache, prefill
    from fs_mlx.loader import load
    lm = load(sys.argv[1]); c = PromptCache(lm.model)
    y = mx.argmax(prefill(lm.model, list(range(1, 33)), c.layers), axis=-1)
    toks, t = [], []
    for _ in range(6):
        a = time.perf_counter()
        y = mx.argmax(lm.model(y[None], cache=c.layers)[:, -1, :], axis=-1); mx.eval(y)
        t.append(time.perf_counter() - a); toks.append(y.item())
    out["decode step"] = min(t[1:]) * 1e3
    out["tokens"] = toks
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--blas", default="/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sgemv-shim-"))
    lib = tmp / "libsgemv_shim.so"
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(HERE / "sgemv_shim.c"), "-ldl"],
                   check=True)
    runs = {"openblas sgemm": [], "shim -> sgemv": []}
    for _ in range(a.rounds):  # alternate: a busy machine slows both
        for name in runs:
            env = {**os.environ, "SGEMV_SHIM_BLAS": a.blas}
            if name.startswith("shim"):
                env["SGEMV_SHIM"] = str(lib)
            p = subprocess.run([sys.executable, "-c", CHILD] + ([a.model] if a.model else []),
                               env=env, capture_output=True, text=True, check=True)
            runs[name].append(json.loads(p.stdout.strip().splitlines()[-1]))
    base, shim = runs["openblas sgemm"][0], runs["shim -> sgemv"][0]
    for k in base:
        if k.startswith("check") or k == "tokens":
            assert abs(base[k] - shim[k]) <= 1e-3 * max(1.0, abs(base[k])) if k != "tokens" \
                else base[k] == shim[k], (k, base[k], shim[k])
    print(f"{'ms (best of 5, median over rounds)':<36}{'openblas sgemm':>16}{'shim -> sgemv':>16}{'speed-up':>10}")
    for k in base:
        if k.startswith("check") or k == "tokens":
            continue
        b = statistics.median(r[k] for r in runs["openblas sgemm"])
        s = statistics.median(r[k] for r in runs["shim -> sgemv"])
        print(f"{k:<36}{b:>16.2f}{s:>16.2f}{b / s:>9.2f}x")
    print("same results: matvec sums within 1e-3, identical greedy tokens" if a.model else
          "same results: matvec sums within 1e-3")


if __name__ == "__main__":
    main()
