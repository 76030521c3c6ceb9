"""The server's batched decode through the Metal kernels (the executor here, the GPU on a Mac).

A batch step gives each row its own RoPE offset (qk_norm_rope takes an int32
[B] offset: a kernel input) and an array mask that hides each row's padding
(attention falls back to MLX's op for array masks: the kernels implement only
None and "causal"). Three prompts of different lengths decoded together must
give, token for token, what each gets alone on the MLX path: greedy tokens
are what test_model_kernels.py checks for one sequence too (the kernel and MLX
logits differ by < 2e-4, far below these tiny models' top-two gaps).
Budget: ~3 s.
"""

from pathlib import Path

from fs_mlx.generation.batch import Request, Scheduler
from fs_mlx.generation.generate import generate
from fs_mlx.loader import load
from fs_mlx.model.backends import CountingBackend

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "checkpoints"


def test_batched_decode_through_the_kernels(backend):
    mlx_lm = load(GOLDEN / "qwen3-tiny", kernels="mlx")
    counting = CountingBackend(backend)
    kernel_lm = load(GOLDEN / "qwen3-tiny", kernels=counting)
    prompts = [mlx_lm.tokenizer.encode(q) for q in ["Hello there", "The quick brown fox jumps over", "a"]]
    expected = [generate(mlx_lm, p, max_tokens=6, ignore_eos=True)[1] for p in prompts]

    scheduler = Scheduler(kernel_lm, max_batch=3, prefix_cache_bytes=0)
    got = [[] for _ in prompts]
    for i, p in enumerate(prompts):
        scheduler.submit(Request(p, 6, ignore_eos=True),
                         lambda e, i=i: got[i].append(e.token) if e.token is not None else None)
    while scheduler.waiting or scheduler.prefilling or scheduler.rows:
        scheduler.step()
    assert got == expected
    assert scheduler.peak_rows == 3
    assert counting.calls["qk_norm_rope"] > 0  # the kernels ran (the batched RoPE included)
