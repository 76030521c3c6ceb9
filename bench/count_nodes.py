"""How many nodes MLX's graph has for one decoded token, by primitive.

    python bench/count_nodes.py [MODEL] [--kernels mlx|mlx-ops] [--context 64] [--cpu-time]

On a CPU every node costs MLX several microseconds to schedule whatever its
size, so for a small model the node count, not the arithmetic, can be a
token's time (docs/performance.md, "The rest of a token"). The graph is
exported with `mx.export_to_dot` after a prefill of `--context` tokens and
the rectangles (primitives) are counted by label. --cpu-time also reports the
CPU time of a synchronous decode step (best of 5 rounds of 10 steps): less
sensitive to other jobs than wall time; run it with FSX_CPU_THREADS=1 so that
no thread of ours spins.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

import mlx.core as mx

from fs_mlx.generation.cache import make_cache
from fs_mlx.loader import load, make_backend


def count_nodes(model, context: int) -> Counter:
    cache = make_cache(model)
    mx.eval(model(mx.arange(1, context + 1)[None], cache))
    logits = model(mx.array([[5]]), cache)  # one decode step, not evaluated
    with tempfile.TemporaryDirectory() as tmp:
        dot = Path(tmp) / "step.dot"
        mx.export_to_dot(str(dot), logits)
        labels = re.findall(r'label ="([^"]+)", shape=rectangle', dot.read_text())
    return Counter(labels)


def cpu_ms_per_token(model, context: int) -> float:
    cache = make_cache(model)
    mx.eval(model(mx.arange(1, context + 1)[None], cache))
    rounds = []
    for _ in range(5):
        t = time.process_time()
        for _ in range(10):
            mx.eval(model(mx.array([[5]]), cache))
        rounds.append((time.process_time() - t) / 10 * 1e3)
    return min(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="smollm2")
    parser.add_argument("--kernels", default="mlx", choices=["mlx", "mlx-ops"])
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--cpu-time", action="store_true", help="also the CPU ms of one synchronous step")
    args = parser.parse_args()
    lm = load(args.model, kernels=make_backend(args.kernels))
    counts = count_nodes(lm.model, args.context)
    print(f"{args.model} ({args.kernels}): {sum(counts.values())} nodes per decoded token")
    for label, n in counts.most_common():
        print(f"  {n:5d}  {label}")
    if args.cpu_time:
        print(f"CPU time of a synchronous decode step: {cpu_ms_per_token(lm.model, args.context):.1f} ms")


if __name__ == "__main__":
    main()
