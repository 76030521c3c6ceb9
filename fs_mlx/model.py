"""The Transformer: one model file for Qwen3 and the Llama family.

    tokens [B, L]
      -> embed_tokens                                   [B, L, hidden]
      -> N x Block:  x + attn(norm(x)),  then  h + mlp(norm(h))
      -> norm -> lm_head (or the tied embedding)         [B, L, vocab]

Qwen3 differs from Llama in one place: q and k are RMS-normalised per head
(over head_dim) before RoPE. Parameter names equal the checkpoint's
(`model.layers.0.self_attn.q_proj.weight`), so weights load without
renaming; the few differences live in `sanitize`. Every numeric op goes
through `ops`, the seam behind which the Metal kernels plug in.
"""

from __future__ import annotations

import math
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from . import ops
from .config import ModelConfig


class Linear(nn.Module):
    """y = x @ W.T (+ b), with W stored [out, in] as in the checkpoint."""

    def __init__(self, in_dims: int, out_dims: int, bias: bool = False):
        super().__init__()
        self.weight = mx.zeros((out_dims, in_dims))  # [out, in]
        if bias:
            self.bias = mx.zeros((out_dims,))

    def __call__(self, x: mx.array) -> mx.array:
        return ops.linear(x, self.weight, self.get("bias"))


class Embedding(nn.Module):
    def __init__(self, vocab_size: int, dims: int):
        super().__init__()
        self.weight = mx.zeros((vocab_size, dims))  # [vocab, dims]

    def __call__(self, tokens: mx.array) -> mx.array:
        return self.weight[tokens]

    def as_linear(self, x: mx.array) -> mx.array:
        # Tied embeddings: the output projection reuses the embedding matrix.
        return ops.linear(x, self.weight)


class RMSNorm(nn.Module):
    def __init__(self, dims: int, eps: float):
        super().__init__()
        self.weight = mx.ones((dims,))
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        return ops.rms_norm(x, self.weight, self.eps)

    def add(self, x: mx.array, residual: mx.array) -> tuple[mx.array, mx.array]:
        """(x + residual, norm(x + residual)): the residual add and this norm, one launch."""
        return ops.add_rms_norm(x, residual, self.weight, self.eps)


class RoPE(nn.Module):
    """Rotary position embedding, rotate-half (Hugging Face) order by default.

    The position of each token is `offset + i`: the offset comes from the KV
    cache, so a decoded token is rotated by its absolute position.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dims = config.head_dim
        self.traditional = config.rope_traditional
        self.base: float | None = config.rope_theta
        self.scale = 1.0
        self._freqs = None
        scaling = config.rope_scaling or {}
        kind = scaling.get("rope_type") or scaling.get("type")
        if kind == "linear":
            self.scale = 1.0 / scaling["factor"]
        elif kind == "llama3":
            self._freqs = _llama3_freqs(self.dims, config.rope_theta, scaling)
            self.base = None

    def __call__(self, x: mx.array, offset: int) -> mx.array:
        return ops.rope(
            x, self.dims, traditional=self.traditional, base=self.base,
            scale=self.scale, offset=offset, freqs=self._freqs,
        )

    def qk(self, q: mx.array, k: mx.array, offset: int, q_norm=None, k_norm=None):
        """q [B, L, Hq, D], k [B, L, Hkv, D] -> both rotated, [B, H, L, D]; normed first
        (per head) when given Qwen3's q_norm/k_norm. One launch for all of it."""
        weights = (q_norm.weight, k_norm.weight, q_norm.eps) if q_norm else (None, None, 0.0)
        return ops.qk_norm_rope(
            q, k, *weights, self.dims, traditional=self.traditional, base=self.base,
            scale=self.scale, offset=offset, freqs=self._freqs,
        )


def _llama3_freqs(dims: int, base: float, s: dict[str, Any]) -> mx.array:
    """Llama 3.1's frequency-dependent RoPE stretch (as transformers computes it)."""
    factor, low, high = s["factor"], s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0)
    old_ctx = s.get("original_max_position_embeddings", 8192)
    # mx.fast.rope takes *periods* (1/inv_freq) in `freqs`.
    wavelens = [base ** (2 * i / dims) * 2 * math.pi for i in range(dims // 2)]
    periods = []
    for wl in wavelens:
        if wl < old_ctx / high:
            periods.append(wl / (2 * math.pi))
        elif wl > old_ctx / low:
            periods.append(wl / (2 * math.pi) * factor)
        else:
            smooth = (old_ctx / wl - low) / (high - low)
            inv = (1 - smooth) * (2 * math.pi / wl) / factor + smooth * (2 * math.pi / wl)
            periods.append(1 / inv)
    return mx.array(periods, dtype=mx.float32)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        hidden, bias = config.hidden_size, config.attention_bias
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5

        self.q_proj = Linear(hidden, self.n_heads * self.head_dim, bias)
        self.k_proj = Linear(hidden, self.n_kv_heads * self.head_dim, bias)
        self.v_proj = Linear(hidden, self.n_kv_heads * self.head_dim, bias)
        self.o_proj = Linear(self.n_heads * self.head_dim, hidden, bias)
        if config.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.rope = RoPE(config)

    def __call__(self, x: mx.array, mask, cache=None) -> mx.array:
        B, L, _ = x.shape  # x: [B, L, hidden]
        if "qkv_proj" in self:  # q/k/v stacked at load time (fuse.py): one matmul
            nq, nkv = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
            q, k, v = mx.split(self.qkv_proj(x), [nq, nq + nkv], axis=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.reshape(B, L, self.n_heads, self.head_dim)  # [B, L, Hq, D]
        k = k.reshape(B, L, self.n_kv_heads, self.head_dim)  # [B, L, Hkv, D]
        v = v.reshape(B, L, self.n_kv_heads, self.head_dim)
        offset = cache.offset if cache is not None else 0
        # Qwen3 RMS-normalises q and k per head (over head_dim) before RoPE
        q, k = self.rope.qk(q, k, offset, self.get("q_norm"), self.get("k_norm"))  # [B, H, L, D]
        v = v.transpose(0, 2, 1, 3)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)  # [B, Hkv, S, D], S = offset + L

        o = ops.attention(q, k, v, scale=self.scale, mask=mask)  # [B, Hq, L, D]
        return self.o_proj(o.transpose(0, 2, 1, 3).reshape(B, L, -1))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        hidden, inter, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = Linear(hidden, inter, bias)
        self.up_proj = Linear(hidden, inter, bias)
        self.down_proj = Linear(inter, hidden, bias)

    def __call__(self, x: mx.array) -> mx.array:
        if "gate_up_proj" in self:  # stacked at load time (fuse.py): returns silu(gate) * up
            return self.down_proj(self.gate_up_proj(x))
        return self.down_proj(ops.swiglu(self.gate_proj(x), self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def __call__(self, x: mx.array, mlp_out: mx.array | None, mask, cache=None):
        """x + mlp_out -> (h, mlp output): the residual stream is x + mlp_out.

        The block is  h = x + attn(norm(x));  x' = h + mlp(norm(h)).  Each residual
        add is done by the norm that reads its result (RMSNorm.add, one kernel), so
        the last add is left to the next block's first norm: a block takes the
        previous block's MLP output un-added and returns its own the same way.
        """
        if mlp_out is None:  # the first block: nothing to add
            n = self.input_layernorm(x)
        else:
            x, n = self.input_layernorm.add(x, mlp_out)
        h, n = self.post_attention_layernorm.add(x, self.self_attn(n, mask, cache))
        return h, self.mlp(n)


class TransformerBody(nn.Module):
    """Named `model` inside `Transformer`, as in Hugging Face checkpoints."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size)
        self.layers = [Block(config) for _ in range(config.num_hidden_layers)]
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def __call__(self, tokens: mx.array, cache=None, trace: dict | None = None) -> mx.array:
        h = self.embed_tokens(tokens)  # [B, L, hidden]
        if h.dtype != self.norm.weight.dtype:  # quantized embeddings dequantize to their scales' dtype
            h = h.astype(self.norm.weight.dtype)
        if trace is not None:
            trace["embed"] = h
        L = tokens.shape[1]
        # One query token needs no mask: it may see every cached key.
        mask = "causal" if L > 1 else None
        mlp_out = None  # the last block's MLP output, added by the next norm (see Block)
        for i, layer in enumerate(self.layers):
            h, mlp_out = layer(h, mlp_out, mask, cache[i] if cache is not None else None)
            if trace is not None and i == 0:
                trace["block0"] = h + mlp_out
        h = self.norm(h) if mlp_out is None else self.norm.add(h, mlp_out)[1]
        if trace is not None:
            trace["final_norm"] = h
        return h


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = TransformerBody(config)
        if not config.tie_word_embeddings:
            self.lm_head = Linear(config.hidden_size, config.vocab_size)

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
