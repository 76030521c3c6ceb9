"""Where the time goes in one decoded token: every op behind the `ops` seam, timed alone.

    python bench/profile_decode.py MODEL [--context 128] [--steps 8] [--json]

Each op the model calls on its backend (fs_mlx/model/backends.py) is run synchronously: its inputs are
evaluated first, then the op is timed until its output is ready. What is not behind
the seam (embedding gather, reshapes, KV-cache writes, residual adds, the sampler)
is the difference between one synchronous step and the sum of the timed ops.

Synchronous timing removes the overlap `generate.decode_tokens` gets from queuing
the next step early, so the shares are what to read, not the total. Matmul rows
also give the bytes their weights hold and the rate at which they were read.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict

import mlx.core as mx

from fs_mlx.generation.generate import PromptCache, prefill
from fs_mlx.loader import load, make_backend


class TimedBackend:
    """Wraps a backend; while `on`, times each op call (inputs evaluated first, output waited for)."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.on = False
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)
        self.bytes = defaultdict(int)  # weight bytes the matmuls read

    def __getattr__(self, name):
        fn = getattr(self.inner, name)
        if not callable(fn):
            return fn

        def timed(*args, **kwargs):
            if not self.on:
                return fn(*args, **kwargs)
            arrays = [a for a in list(args) + list(kwargs.values()) if isinstance(a, mx.array)]
            mx.eval(arrays)
            key = _label(name, args)
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            mx.eval(out)
            self.seconds[key] += time.perf_counter() - t
            self.calls[key] += 1
            if name in ("linear", "quantized_matmul"):
                self.bytes[key] += sum(a.nbytes for a in arrays[1:])  # weight (+ scales, biases)
            return out

        return timed


def _label(name: str, args) -> str:
    if name in ("linear", "quantized_matmul"):
        w = args[1]
        rows = w.shape[0]
        return f"{name} [{rows}x{args[0].shape[-1]}]"  # [out x in]
    return name


def profile(model: str, context: int, steps: int) -> dict:
    timed = TimedBackend(make_backend("auto"))
    lm = load(model, kernels=timed)
    cache = PromptCache(lm.model)
    ids = [random.Random(0).randrange(lm.config.vocab_size) for _ in range(context)]
    y = mx.argmax(prefill(lm.model, ids, cache.layers), axis=-1)
    mx.eval(y)

    def step(y):
        out = mx.argmax(lm.model(y[None], cache=cache.layers)[:, -1, :], axis=-1)
        mx.eval(out)
        return out

    for _ in range(2):  # warm-up
        y = step(y)
    t = time.perf_counter()
    for _ in range(steps):
        y = step(y)
    step_s = (time.perf_counter() - t) / steps  # synchronous, untimed ops

    timed.on = True
    t = time.perf_counter()
    for _ in range(steps):
        y = step(y)
    timed_step_s = (time.perf_counter() - t) / steps
    timed.on = False

    rows = []
    for key in sorted(timed.seconds, key=lambda k: -timed.seconds[k]):
        s = timed.seconds[key] / steps
        row = {"op": key, "calls_per_token": timed.calls[key] // steps, "ms_per_token": s * 1e3,
               "share": s / timed_step_s}
        if timed.bytes[key]:
            row["weight_mb_per_token"] = timed.bytes[key] / steps / 1e6
            row["gb_per_s"] = timed.bytes[key] / steps / s / 1e9
        rows.append(row)
    other = timed_step_s - sum(timed.seconds.values()) / steps
    rows.append({"op": "other (outside the seam)", "calls_per_token": None,
                 "ms_per_token": other * 1e3, "share": other / timed_step_s})
    return {
        "model": str(lm.path), "context": context, "steps": steps, "dtype": str(lm.dtype),
        "step_ms_sync": step_s * 1e3, "step_ms_sync_timed": timed_step_s * 1e3,
        "launches_per_token": {k: v // steps for k, v in timed.calls.items()},
        "ops": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    r = profile(a.model, a.context, a.steps)
    if a.json:
        json.dump(r, sys.stdout, indent=2)
        print()
        return
    print(f"{r['model']} ({r['dtype']}), context {r['context']}: one synchronous step "
          f"{r['step_ms_sync']:.1f} ms ({r['step_ms_sync_timed']:.1f} ms with every op timed)")
    print(f"launches per token: {dict(r['launches_per_token'])}")
    print(f"{'op':<34}{'calls':>6}{'ms/token':>10}{'share':>8}{'weights MB':>12}{'GB/s':>7}")
    for row in r["ops"]:
        calls = "" if row["calls_per_token"] is None else row["calls_per_token"]
        mb = f"{row['weight_mb_per_token']:.1f}" if "weight_mb_per_token" in row else ""
        gbs = f"{row['gb_per_s']:.1f}" if "gb_per_s" in row else ""
        print(f"{row['op']:<34}{calls:>6}{row['ms_per_token']:>10.2f}{row['share'] * 100:>7.1f}%"
              f"{mb:>12}{gbs:>7}")


if __name__ == "__main__":
    main()
