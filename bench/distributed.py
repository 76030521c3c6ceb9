"""Two (or N) ranks against one process: equality, memory per rank, collective latency, mlx-lm.

    mlx.launch -n 2 --backend ring --python $(which python) -- bench/distributed.py MODEL tensor --mlx-lm
    mlx.launch -n 2 --backend ring --python $(which python) -- bench/distributed.py MODEL pipeline

(with PYTHONPATH pointing at this checkout if fs-mlx is not installed; the `--` matters:
mlx.launch would take an abbreviated option of ours for one of its own). Every rank:

1. loads its share (`load(MODEL, parallel=MODE)`): load time, memory held after loading
   (mx.get_active_memory), peak while loading (mx.get_peak_memory), and the process's
   peak resident set (VmHWM, what the OS saw: it includes what mx.load read and freed);
2. runs a fixed prompt: last-position logits and 32 greedy tokens;
3. times the collectives one decoded token costs: all_sum of [1, 1, hidden] (tensor: two
   per layer) or a send/recv hop plus the all_gather of the last stage (pipeline);
4. with --mlx-lm (tensor mode): loads the same checkpoint with mlx-lm's own sharding
   (`mlx_lm.utils.sharded_load`) and times greedy decoding of both engines, alternating,
   in the same job: the fsx / mlx-lm ratio in one run.

Then rank 0 frees its share and loads the whole model in one process (the other ranks
wait): the same prompt, the same numbers, and max |logits difference|.
Prints one JSON object (rank 0).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time

import fs_mlx  # noqa: F401  (isort: skip)  binds MLX's BLAS as fsx does
import mlx.core as mx
import numpy as np

from fs_mlx.distributed import join
from fs_mlx.generation.forward import logits_for
from fs_mlx.generation.generate import generate, stream_generate
from fs_mlx.loader import load

PROMPT = [5, 17, 300, 42, 9, 100, 3, 77, 12, 401, 8, 64]


def say(msg: str) -> None:
    import sys

    print(f"[rank {mx.distributed.init().rank()}] {msg}", file=sys.stderr, flush=True)


def vm_hwm_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_and_run(model: str, mode: str | None, quantize) -> tuple[object, dict, np.ndarray, list[int]]:
    gc.collect()
    mx.reset_peak_memory()
    t = time.perf_counter()
    lm = load(model, kernels="mlx", quantize=quantize, parallel=mode)
    stats = {"load_s": round(time.perf_counter() - t, 2),
             "active_mb": round(mx.get_active_memory() / 1e6, 1),
             "load_peak_mb": round(mx.get_peak_memory() / 1e6, 1)}
    logits = logits_for(lm, PROMPT)[-1]
    greedy = generate(lm, PROMPT, max_tokens=32, ignore_eos=True)[1]
    return lm, stats, logits, greedy


GEN = 32  # --gen


def decode_tps(lm, n_prompt: int = 64, n_gen: int | None = None) -> float:
    n_gen = n_gen or GEN
    ids = random.Random(0).choices(range(min(lm.config.vocab_size, 1000)), k=n_prompt)
    for r in stream_generate(lm, ids, max_tokens=n_gen, ignore_eos=True):
        pass
    return r.stats.generation_tps


def time_collectives(world, lm, mode: str, reps: int = 300) -> dict:
    hidden = lm.config.hidden_size
    x = mx.ones((1, 1, hidden), dtype=lm.dtype)
    mx.eval(mx.distributed.all_sum(x, group=world.group))  # warm
    t = time.perf_counter()
    for _ in range(reps):
        mx.eval(mx.distributed.all_sum(x, group=world.group))
    all_sum_us = (time.perf_counter() - t) / reps * 1e6
    out = {"all_sum_us": round(all_sum_us, 1), "bytes_per_all_sum": hidden * x.itemsize}
    layers = lm.config.num_hidden_layers
    if mode == "tensor":
        out["comm_ms_per_token"] = round(2 * layers * all_sum_us / 1e3, 3)
        out["bytes_per_token_per_rank"] = 2 * layers * hidden * x.itemsize  # ring all_reduce, 2 ranks
    else:
        t = time.perf_counter()
        for _ in range(reps):
            y = x
            if world.rank > 0:
                y = mx.distributed.recv_like(x, world.rank - 1, group=world.group)
            if world.rank < world.size - 1:
                y = mx.distributed.send(y, world.rank + 1, group=world.group)
            mx.eval(mx.distributed.all_gather(y, group=world.group))
        out["hop_and_gather_us"] = round((time.perf_counter() - t) / reps * 1e6, 1)
        out["comm_ms_per_token"] = round(out["hop_and_gather_us"] / 1e3, 3)
        out["bytes_per_token_per_rank"] = 2 * hidden * x.itemsize  # one hop + the gather
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("mode", choices=["tensor", "pipeline"])
    ap.add_argument("--quantize", type=int, choices=[4, 8])
    ap.add_argument("--mlx-lm", action="store_true", help="also mlx-lm's sharding (tensor mode)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per engine")
    ap.add_argument("--gen", type=int, default=32, help="tokens decoded per timed run")
    a = ap.parse_args()
    global GEN
    GEN = a.gen
    quantize = (a.quantize, 32) if a.quantize else None
    world = join()
    say("loading")
    lm, stats, logits, greedy = load_and_run(a.model, a.mode, quantize)
    say(f"loaded {stats}")
    stats["vm_hwm_mb"] = round(vm_hwm_mb(), 1)
    mine = mx.array([[stats["active_mb"], stats["load_peak_mb"], stats["vm_hwm_mb"]]])
    every = mx.distributed.all_gather(mine, group=world.group).tolist()  # [ranks, 3]
    per_rank = [dict(zip(("active_mb", "load_peak_mb", "vm_hwm_mb"), (round(v, 1) for v in row)))
                for row in every]
    report = {"model": a.model, "mode": a.mode, "ranks": world.size, "load_s": stats["load_s"],
              "per_rank": per_rank}
    report["collectives"] = time_collectives(world, lm, a.mode)
    say(f"collectives {report['collectives']}")
    report["decode_tps_split"] = [round(decode_tps(lm), 2) for _ in range(a.runs)]
    say(f"decode {report['decode_tps_split']}")
    if a.mlx_lm:
        from mlx_lm import stream_generate as lm_stream
        from mlx_lm.sample_utils import make_sampler
        from mlx_lm.utils import sharded_load

        mlm, tok = sharded_load(a.model, tensor_group=world.group)
        say("mlx-lm loaded")
        mlm.set_dtype(mx.float32)  # fsx computes in float32 on the CPU: same arithmetic
        ids = random.Random(0).choices(range(min(lm.config.vocab_size, 1000)), k=64)
        fsx_tps, mlx_tps = [], []
        for _ in range(a.runs):
            fsx_tps.append(decode_tps(lm))
            for r in lm_stream(mlm, tok, ids, max_tokens=GEN, sampler=make_sampler(temp=0.0)):
                pass
            mlx_tps.append(r.generation_tps)
        report["mlx_lm_sharded"] = {"fsx_tps": [round(v, 2) for v in fsx_tps],
                                    "mlx_lm_tps": [round(v, 2) for v in mlx_tps],
                                    "ratio_median": round(float(np.median(fsx_tps) / np.median(mlx_tps)), 3)}
        del mlm
    del lm
    gc.collect()
    mx.eval(mx.distributed.all_sum(mx.array(0), group=world.group))  # the others wait here
    if world.rank == 0:
        whole, wstats, wlogits, wgreedy = load_and_run(a.model, None, quantize)
        wstats["vm_hwm_mb_note"] = "after the split run in the same process: not comparable"
        report["single"] = wstats
        report["single"]["decode_tps"] = [round(decode_tps(whole), 2) for _ in range(a.runs)]
        report["max_abs_logit_diff"] = float(np.abs(wlogits - logits).max())
        report["logit_scale"] = float(np.abs(wlogits).max())
        report["greedy_identical"] = wgreedy == greedy
        print(json.dumps(report, indent=1), flush=True)
    mx.eval(mx.distributed.all_sum(mx.array(0), group=world.group))


if __name__ == "__main__":
    main()
