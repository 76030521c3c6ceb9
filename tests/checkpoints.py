"""Tiny random checkpoints in Hugging Face layout, written by the tests themselves."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from fs_mlx.model.config import ModelConfig
from fs_mlx.model.backends import MLXBackend
from fs_mlx.model.fuse import fuse
from fs_mlx.model.transformer import Transformer

BASE = dict(
    model_type="qwen3", hidden_size=64, num_hidden_layers=2, intermediate_size=96,
    num_attention_heads=4, num_key_value_heads=2, head_dim=24, vocab_size=320,
    rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True,
)


def tiny_tokenizer() -> Tokenizer:
    """A byte-level BPE (the Qwen3/SmolLM2 family) trained on a few sentences."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["the quick brown fox jumps over the lazy dog", "hello world", "def f(x): return x"]
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    )
    tok.train_from_iterator(corpus * 20, trainer)
    return tok


def random_weights(config: ModelConfig, seed: int = 0) -> dict[str, mx.array]:
    """Checkpoint-named random weights (std 0.2: peaked enough for stable argmaxes)."""
    skeleton = Transformer(config, ops=None)  # structure only: the parameter names and shapes
    mx.random.seed(seed)
    return {k: mx.random.normal(v.shape) * 0.2 if not k.endswith("norm.weight")
            else 1.0 + 0.1 * mx.random.normal(v.shape) for k, v in tree_flatten(skeleton.parameters())}


def random_model(seed: int = 0, ops=None, **overrides) -> Transformer:
    """A ready-to-run Transformer with random weights, computing with `ops` (default: MLX's)."""
    config = ModelConfig.from_dict({**BASE, **overrides})
    model = Transformer(config, ops or MLXBackend())
    model.load_weights(list(random_weights(config, seed).items()))
    return fuse(model)


def write_checkpoint(path: Path, seed: int = 0, dtype=mx.float32, **overrides) -> Path:
    """Write config.json, model.safetensors and tokenizer.json for a random model."""
    path.mkdir(parents=True, exist_ok=True)
    config = {**BASE, **overrides, "eos_token_id": 2}
    (path / "config.json").write_text(json.dumps(config))
    random = random_weights(ModelConfig.from_dict({**BASE, **overrides}), seed)
    weights = {k: v.astype(dtype) for k, v in random.items()}
    mx.save_safetensors(str(path / "model.safetensors"), weights)
    tiny_tokenizer().save(str(path / "tokenizer.json"))
    return path
