"""One rank of a test job (tests/test_distributed.py starts N of these).

argv[1] is a JSON job: {"modes": ["tensor", "pipeline"], "out": dir, "cases": [{"name",
"model", "quantize": [bits, group] | null, "prompts": [[ids], ...]}]}. For every mode and
case this rank loads its share of the model, then writes {out}/{mode}-{name}.rank{r}.npz with the
logits of each prompt (p{i}_logits, float32 [T, vocab]) and its greedy continuation
(p{i}_greedy), a sampled continuation (sampled), and the peak memory of the load.
"""

import json
import sys

import fs_mlx  # noqa: F401  (isort: skip)  binds MLX's BLAS as fsx does
import mlx.core as mx
import numpy as np

from fs_mlx.generation.forward import logits_for
from fs_mlx.generation.generate import generate
from fs_mlx.distributed import join, shared_seed
from fs_mlx.generation.sample import SamplingParams
from fs_mlx.loader import load

job = json.loads(sys.argv[1])
for mode, case in ((m, c) for m in job["modes"] for c in job["cases"]):
    mx.reset_peak_memory()
    q = tuple(case["quantize"]) if case.get("quantize") else None
    lm = load(case["model"], kernels="mlx", quantize=q, parallel=mode)
    rank = mx.distributed.init().rank()
    arrays = {"load_peak_bytes": np.array(mx.get_peak_memory())}
    for i, ids in enumerate(case["prompts"]):
        arrays[f"p{i}_logits"] = logits_for(lm, ids)
        arrays[f"p{i}_greedy"] = np.array(generate(lm, ids, max_tokens=16, ignore_eos=True)[1])
    # Sampling at temperature 1 from rank 0's seed: every rank must draw the same tokens.
    params = SamplingParams(temperature=1.0, seed=shared_seed(join()))
    arrays["sampled"] = np.array(generate(lm, case["prompts"][0], params=params, max_tokens=16,
                                          ignore_eos=True)[1])
    np.savez(f"{job['out']}/{mode}-{case['name']}.rank{rank}.npz", **arrays)
