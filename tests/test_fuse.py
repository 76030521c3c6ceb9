"""fuse.py: q/k/v and gate/up stacked at load time compute what the checkpoint's layers do.

On every golden checkpoint, dense and quantized, the fused model's logits
equal the unfused model's and the golden vectors; greedy continuations are
identical; and the ops launched per layer drop from 15 to 12 (dense) or 11
(quantized: the SwiGLU rides in the gate+up matmul's epilogue).
"""

import json
import types
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from fs_mlx import kernels, ops
from fs_mlx.forward import logits_for
from fs_mlx.fuse import fuse, fusion_helps, is_fused
from fs_mlx.generate import generate
from fs_mlx.loading import load
from fs_mlx.ops import reference
from fs_mlx.quantize import QuantizedLinear

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
MODELS = ["qwen3-tiny", "llama-tiny", "llama-mha"]


def prompts(name):
    meta = json.loads((GOLDEN / "vectors" / f"{name}.json").read_text())
    arrays = np.load(GOLDEN / "vectors" / f"{name}.npz")
    return [arrays[f"p{i}_ids"].tolist() for i in range(len(meta["prompts"]))], arrays


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("quantize", [None, (4, 32), (8, 32)])
def test_fused_logits_equal_unfused(name, quantize):
    ids, arrays = prompts(name)
    lm = load(GOLDEN / "checkpoints" / name, quantize=quantize)
    assert not is_fused(lm.model)  # --kernels mlx keeps the checkpoint's layers
    before = [logits_for(lm, p) for p in ids]
    greedy = generate(lm, ids[0], max_tokens=8, ignore_eos=True)[1]
    fuse(lm.model)
    assert is_fused(lm.model)
    if quantize:
        assert isinstance(lm.model.layers[0].self_attn.qkv_proj, QuantizedLinear)
    for i, p in enumerate(ids):
        after = logits_for(lm, p)
        # The same products in one bigger matmul: only the summation order may differ.
        np.testing.assert_allclose(after, before[i], rtol=0, atol=1e-4)
        if quantize is None:  # the golden bar of tests/test_golden.py
            np.testing.assert_allclose(after, arrays[f"p{i}_logits"], rtol=0, atol=1e-3)
    assert generate(lm, ids[0], max_tokens=8, ignore_eos=True)[1] == greedy


def decode_step_counts(lm) -> dict[str, float]:
    """Ops launched per layer for one decoded token (the final norm and the head removed)."""
    ops.launch_counts.clear()
    mx.eval(lm.model(mx.array([[5]])))
    counts = dict(ops.launch_counts)
    counts["rms_norm"] -= 1  # the one norm with no residual add: n layers + final = 2n add_rms_norm + 1
    counts[next(k for k in ("quantized_matmul", "matmul") if k in counts)] -= 1  # lm_head
    n = len(lm.model.layers)
    return {k: v / n for k, v in counts.items() if v}


@pytest.mark.parametrize("quantize,fused_total", [(None, 9), ((4, 32), 8)])
def test_launches_per_layer(quantize, fused_total):
    lm = load(GOLDEN / "checkpoints" / "qwen3-tiny", quantize=quantize)
    before = decode_step_counts(lm)
    fuse(lm.model)
    after = decode_step_counts(lm)
    mm = "quantized_matmul" if quantize else "matmul"
    # model.py: residual add + RMSNorm and QK-norm + RoPE are single ops (add_rms_norm, qk_norm_rope)
    assert before == {"add_rms_norm": 2, "qk_norm_rope": 1, mm: 7, "attention": 1, "swiglu": 1}
    assert sum(before.values()) == 12 and sum(after.values()) == fused_total
    assert after[mm] == (3 if quantize else 4)  # qkv, o, (gate_up,) down


@pytest.fixture
def quantized_kernels_on_executor(monkeypatch):
    """MLX's ops, except the quantized matmuls: ours, run by the MSL executor."""
    impl = types.SimpleNamespace(**{n: getattr(reference, n) for n in dir(reference) if not n.startswith("_")})
    impl.quantized_matmul = kernels.quantized_matmul
    impl.quantized_swiglu = kernels.quantized_swiglu
    was = kernels.using_executor()
    kernels.use_executor(True)
    monkeypatch.setattr(ops, "_impl", impl)
    yield
    kernels.use_executor(was)


@pytest.mark.parametrize("quantize", [(4, 32), (8, 64)])
def test_fused_quantized_model_on_the_kernels(quantize, quantized_kernels_on_executor):
    """qwen3-tiny quantized, its matmuls through qmm (5-token prompt), qmv (decode)
    and qmv_swiglu (fused decode): the same greedy tokens as MLX's quantized_matmul."""
    ids, _ = prompts("qwen3-tiny")
    prompt = ids[0][:5]
    lm = load(GOLDEN / "checkpoints" / "qwen3-tiny", quantize=quantize)
    ops.launch_counts.clear()
    unfused = generate(lm, prompt, max_tokens=6, ignore_eos=True)[1]
    fuse(lm.model)
    fused = generate(lm, prompt, max_tokens=6, ignore_eos=True)[1]
    assert ops.launch_counts["quantized_swiglu"] > 0
    with pytest.MonkeyPatch.context() as m:
        m.setattr(ops, "_impl", reference)
        want = generate(lm, prompt, max_tokens=6, ignore_eos=True)[1]
    assert unfused == fused == want
    logits_kernels = logits_for(lm, prompt)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(ops, "_impl", reference)
        logits_mlx = logits_for(lm, prompt)
    # float32 throughout; the kernels sum in a different order than MLX's CPU loop.
    np.testing.assert_allclose(logits_kernels, logits_mlx, rtol=0, atol=1e-4)


def test_fusion_follows_the_kernels():
    assert ops.kernels_in_use() == "mlx" and not fusion_helps()
