"""Write a checkpoint with random weights and a real model's shape, for benchmarks.

    python bench/random_checkpoint.py qwen3-0.6b /tmp/qwen3-0.6b-random
    python bench/random_checkpoint.py smollm2-135m /tmp/smollm2-random --dtype float32

Speed depends on shapes and dtypes, not on what the weights say, so a random
checkpoint measures what the real one would — without a download. The layout is
Hugging Face's (config.json, model.safetensors, tokenizer files), loadable by
fsx and mlx-lm alike. The tokenizer is the golden qwen3-tiny one (1024 tokens):
enough for the engines' streaming detokenizers, which skip ids it does not know.
Weights are N(0, 0.02), norms 1, from a fixed seed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import mlx.core as mx

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_FROM = ROOT / "golden" / "checkpoints" / "qwen3-tiny"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

SHAPES = {
    # Qwen/Qwen3-0.6B's config.json, the fields that shape the network.
    "qwen3-0.6b": dict(
        architectures=["Qwen3ForCausalLM"], model_type="qwen3", hidden_size=1024,
        num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
        intermediate_size=3072, vocab_size=151936, tie_word_embeddings=True,
        rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=40960,
        attention_bias=False, hidden_act="silu",
    ),
    # HuggingFaceTB/SmolLM2-135M-Instruct's config.json.
    "smollm2-135m": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=576,
        num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
        intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True,
        rope_theta=100000.0, rms_norm_eps=1e-5, max_position_embeddings=8192,
        attention_bias=False, mlp_bias=False, hidden_act="silu",
    ),
    # Qwen/Qwen3-30B-A3B's config.json scaled down (issue 14's MoE benchmark): 8 experts,
    # top 2, hidden 512, 8 layers; the real one has 128 experts, top 8, hidden 2048, 48 layers.
    "qwen3-moe-small": dict(
        architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe", hidden_size=512,
        num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4, head_dim=64,
        intermediate_size=1536, moe_intermediate_size=512, num_experts=8, num_experts_per_tok=2,
        norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[], vocab_size=32768,
        tie_word_embeddings=False, rope_theta=1000000.0, rms_norm_eps=1e-6,
        max_position_embeddings=40960, attention_bias=False, hidden_act="silu",
    ),
}
DTYPES = {"bfloat16": mx.bfloat16, "float16": mx.float16, "float32": mx.float32}


def tensor_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of a Llama/Qwen3 checkpoint, Hugging Face names, [out, in] layout."""
    h, inter, d = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * d, c["num_key_value_heads"] * d
    shapes = {"model.embed_tokens.weight": (c["vocab_size"], h), "model.norm.weight": (h,)}
    if not c["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (c["vocab_size"], h)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
        })
        if c["model_type"] == "qwen3_moe":  # Hugging Face's layout: the router and each expert
            e_inter = c["moe_intermediate_size"]
            shapes[p + "mlp.gate.weight"] = (c["num_experts"], h)
            for e in range(c["num_experts"]):
                shapes.update({p + f"mlp.experts.{e}.gate_proj.weight": (e_inter, h),
                               p + f"mlp.experts.{e}.up_proj.weight": (e_inter, h),
                               p + f"mlp.experts.{e}.down_proj.weight": (h, e_inter)})
        else:
            shapes.update({p + "mlp.gate_proj.weight": (inter, h), p + "mlp.up_proj.weight": (inter, h),
                           p + "mlp.down_proj.weight": (h, inter)})
        if c["model_type"] in ("qwen3", "qwen3_moe"):
            shapes[p + "self_attn.q_norm.weight"] = (d,)
            shapes[p + "self_attn.k_norm.weight"] = (d,)
    return shapes


def write(shape: str, out: Path, dtype: str = "bfloat16", seed: int = 0) -> Path:
    if out.exists():
        sys.exit(f"{out} already exists")
    config = {**SHAPES[shape], "torch_dtype": dtype, "eos_token_id": 995, "bos_token_id": 995}
    mx.random.seed(seed)
    tensors = {}
    for name, s in tensor_shapes(config).items():
        w = mx.ones(s) if name.endswith("norm.weight") else mx.random.normal(s) * 0.02
        tensors[name] = w.astype(DTYPES[dtype])
        mx.eval(tensors[name])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        mx.save_safetensors(str(tmp / "model.safetensors"), tensors, metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        for f in TOKENIZER_FILES:
            shutil.copyfile(TOKENIZER_FROM / f, tmp / f)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = sum(t.size for t in tensors.values())
    print(f"wrote {out}: {shape}, {n / 1e6:.0f}M parameters, {dtype}, "
          f"{sum(t.nbytes for t in tensors.values()) / 1e9:.2f} GB")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("out", type=Path, help="new directory")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16",
                    help="storage dtype (the real checkpoints are bfloat16)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    write(a.shape, a.out, a.dtype, a.seed)


if __name__ == "__main__":
    main()
