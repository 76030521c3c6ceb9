"""The Transformer: one model file for Qwen3 and the Llama family.

    tokens [B, L]
      -> embed_tokens                                    [B, L, hidden]
      -> N x Block:  h = x + attn(norm(x));  out = h + mlp(norm(h))
      -> norm -> lm_head (or the tied embedding)          [B, L, vocab]

Qwen3 differs from Llama in one place: q and k are RMS-normalised per head
(over head_dim) before RoPE (`config.qk_norm`). Parameter names equal the
checkpoint's (`model.layers.0.self_attn.q_proj.weight`), so weights load
without renaming; the few differences live in `sanitize`.

Every numeric op goes through `ops`, the backend this model was built with
(fs_mlx/model/backends.py): MLX's ops, the Metal kernels, or the plain
reference. Layers are built in the checkpoint's layout; after the weights
are loaded, one load hook (fuse.py) joins q/k/v and gate/up so that each
set is one matmul — the layout every backend runs.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .config import ModelConfig
from .rope import Rope, make_rope


class Linear(nn.Module):
    """y = x @ W.T (+ b), with W stored [out, in] as in the checkpoint."""

    def __init__(self, in_dims: int, out_dims: int, bias: bool, ops):
        super().__init__()
        self.ops = ops
        self.weight = mx.zeros((out_dims, in_dims))  # [out, in]
        if bias:
            self.bias = mx.zeros((out_dims,))  # [out]

    def __call__(self, x: mx.array) -> mx.array:
        return self.ops.linear(x, self.weight, self.get("bias"))


class Embedding(nn.Module):
    def __init__(self, vocab_size: int, dims: int, ops):
        super().__init__()
        self.ops = ops
        self.weight = mx.zeros((vocab_size, dims))  # [vocab, dims]

    def __call__(self, tokens: mx.array) -> mx.array:
        return self.weight[tokens]  # [B, L] -> [B, L, dims]

    def as_linear(self, x: mx.array) -> mx.array:
        # Tied embeddings: the output projection reuses the embedding matrix.
        return self.ops.linear(x, self.weight)


class RMSNorm(nn.Module):
    def __init__(self, dims: int, eps: float, ops):
        super().__init__()
        self.ops = ops
        self.weight = mx.ones((dims,))  # [dims]
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        return self.ops.rms_norm(x, self.weight, self.eps)

    def add(self, x: mx.array, residual: mx.array) -> tuple[mx.array, mx.array]:
        """(h, norm(h)) with h = x + residual: a residual add and this norm in one launch."""
        return self.ops.add_rms_norm(x, residual, self.weight, self.eps)


class Attention(nn.Module):
    """Grouped-query attention with RoPE (and Qwen3's per-head QK-norm).

    Built as stored (q_proj, k_proj, v_proj); the load hook replaces the three
    with `qkv_proj`, one layer whose output is [q | k | v] (fuse.py).
    """

    def __init__(self, config: ModelConfig, rope: Rope, ops):
        super().__init__()
        self.ops = ops
        hidden, bias = config.hidden_size, config.attention_bias
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        self.rope = rope
        self.qk_norm = config.qk_norm

        self.q_proj = Linear(hidden, self.n_heads * self.head_dim, bias, ops)  # [Hq*D, hidden]
        self.k_proj = Linear(hidden, self.n_kv_heads * self.head_dim, bias, ops)  # [Hkv*D, hidden]
        self.v_proj = Linear(hidden, self.n_kv_heads * self.head_dim, bias, ops)  # [Hkv*D, hidden]
        self.o_proj = Linear(self.n_heads * self.head_dim, hidden, bias, ops)  # [hidden, Hq*D]
        if config.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps, ops)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps, ops)

    def __call__(self, x: mx.array, mask, cache=None) -> mx.array:
        B, L, _ = x.shape  # x: [B, L, hidden]
        nq, nkv = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        q, k, v = mx.split(self.qkv_proj(x), [nq, nq + nkv], axis=-1)
        q = q.reshape(B, L, self.n_heads, self.head_dim)  # [B, L, Hq, D]
        k = k.reshape(B, L, self.n_kv_heads, self.head_dim)  # [B, L, Hkv, D]
        v = v.reshape(B, L, self.n_kv_heads, self.head_dim).transpose(0, 2, 1, 3)  # [B, Hkv, L, D]
        offset = cache.offset if cache is not None else 0  # position of the first of the L tokens (int, or [B])
        if self.qk_norm:  # Qwen3: RMSNorm over head_dim, per head, before RoPE
            qn, kn, eps = self.q_norm.weight, self.k_norm.weight, self.q_norm.eps
        else:
            qn, kn, eps = None, None, 0.0
        q, k = self.ops.qk_norm_rope(q, k, qn, kn, eps, self.rope, offset)  # [B, Hq, L, D], [B, Hkv, L, D]
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)  # [B, Hkv, S, D], S = offset + L

        o = self.ops.attention(q, k, v, scale=self.scale, mask=mask)  # [B, Hq, L, D]
        return self.o_proj(o.transpose(0, 2, 1, 3).reshape(B, L, -1))  # [B, L, hidden]


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)).

    Built as stored (gate_proj, up_proj); the load hook replaces the two with
    `gate_up_proj`, one layer that returns silu(gate(x)) * up(x) (fuse.py).
    """

    def __init__(self, config: ModelConfig, ops):
        super().__init__()
        hidden, inter, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = Linear(hidden, inter, bias, ops)  # [inter, hidden]
        self.up_proj = Linear(hidden, inter, bias, ops)  # [inter, hidden]
        self.down_proj = Linear(inter, hidden, bias, ops)  # [hidden, inter]

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(self.gate_up_proj(x))  # [B, L, hidden]


class Block(nn.Module):
    def __init__(self, config: ModelConfig, rope: Rope, ops):
        super().__init__()
        self.self_attn = Attention(config, rope, ops)
        self.mlp = MLP(config, ops)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, ops)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, ops)

    def __call__(self, x: mx.array, mask, cache=None) -> mx.array:
        # x [B, L, hidden] is the residual stream: each sub-layer adds to it.
        attn_out = self.self_attn(self.input_layernorm(x), mask, cache)
        h, h_normed = self.post_attention_layernorm.add(x, attn_out)  # h = x + attn_out, and norm(h)
        return h + self.mlp(h_normed)


class TransformerBody(nn.Module):
    """Named `model` inside `Transformer`, as in Hugging Face checkpoints."""

    def __init__(self, config: ModelConfig, ops):
        super().__init__()
        rope = make_rope(config.head_dim, config.rope_theta, config.rope_traditional, config.rope_scaling)
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, ops)
        self.layers = [Block(config, rope, ops) for _ in range(config.num_hidden_layers)]
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, ops)

    def __call__(self, tokens: mx.array, cache=None, trace: dict | None = None) -> mx.array:
        h = self.embed_tokens(tokens)  # [B, L, hidden]
        if h.dtype != self.norm.weight.dtype:  # quantized embeddings dequantize to their scales' dtype
            h = h.astype(self.norm.weight.dtype)
        if trace is not None:
            trace["embed"] = h
        # The cache knows which keys each query may see (a batched cache: per row);
        # without one, causal over the L tokens (one token needs no mask).
        L = tokens.shape[1]
        mask = cache[0].make_mask(L) if cache is not None else ("causal" if L > 1 else None)
        for i, layer in enumerate(self.layers):
            h = layer(h, mask, cache[i] if cache is not None else None)
            if trace is not None and i == 0:
                trace["block0"] = h
        h = self.norm(h)
        if trace is not None:
            trace["final_norm"] = h
        return h


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig, ops):
        super().__init__()
        self.config = config
        self.ops = ops  # the backend every layer computes with
        self.model = TransformerBody(config, ops)
        if not config.tie_word_embeddings:
            self.lm_head = Linear(config.hidden_size, config.vocab_size, False, ops)

    def __call__(self, tokens: mx.array, cache=None, trace: dict | None = None) -> mx.array:
        """tokens [B, L] -> logits [B, L, vocab]. `cache`: one KV cache per layer."""
        h = self.model(tokens, cache, trace)
        if self.config.tie_word_embeddings:
            return self.model.embed_tokens.as_linear(h)
        return self.lm_head(h)

    @property
    def layers(self) -> list[Block]:
        return self.model.layers

    def sanitize(self, weights: dict[str, mx.array]) -> dict[str, mx.array]:
        """The one place where checkpoint names differ from ours."""
        # Some exporters save RoPE's precomputed inverse frequencies; we recompute them.
        weights = {k: v for k, v in weights.items() if "rotary_emb.inv_freq" not in k}
        if self.config.tie_word_embeddings:
            # Tied checkpoints sometimes carry a copy of the embedding as lm_head.
            for suffix in ("weight", "scales", "biases"):
                weights.pop(f"lm_head.{suffix}", None)
        return weights
