"""The Transformer: one model file for every supported family.

    tokens [B, L]
      -> embed_tokens (x sqrt(hidden) for Gemma)         [B, L, hidden]
      -> N x Block:  h = x + attn(norm(x));  out = h + mlp(norm(h))
      -> norm -> lm_head (or the tied embedding)          [B, L, vocab]

The families differ by named config fields (model/config.py, ARCHITECTURES;
docs/forward-pass.md has the table): Qwen3 RMS-normalises q and k per head
before RoPE (`qk_norm`), Qwen2 has q/k/v biases (`qkv_bias`), Gemma 3 norms
each sub-layer's output too (`sandwich_norms`), scales by (1 + w) and has
local sliding-window layers, Phi-3 rotates part of each head, Qwen3-MoE
routes each token to a few experts (moe.py). Parameter names equal the
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

import math

from .config import ModelConfig
from .layers import Embedding, Linear, RMSNorm
from .rope import Rope, make_rope
from .window import window_keys, window_mask


class Attention(nn.Module):
    """Grouped-query attention with RoPE (and Qwen3's per-head QK-norm).

    Built as stored (q_proj, k_proj, v_proj); the load hook replaces the three
    with `qkv_proj`, one layer whose output is [q | k | v] (fuse.py).
    `window`: a sliding-window layer's query sees itself and the window - 1
    keys before it (Mistral, Gemma 3's local layers); None: every earlier key.
    """

    def __init__(self, config: ModelConfig, rope: Rope, ops, window: int | None = None):
        super().__init__()
        self.ops = ops
        hidden, bias = config.hidden_size, config.attention_bias
        qkv_bias = bias or config.qkv_bias  # Qwen2: biases on q, k, v but not o
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        # Gemma scales by query_pre_attn_scalar^-0.5, which need not be head_dim's
        self.scale = (config.query_pre_attn_scalar or self.head_dim) ** -0.5
        self.rope = rope
        self.window = window
        self.qk_norm = config.qk_norm

        self.q_proj = Linear(hidden, self.n_heads * self.head_dim, qkv_bias, ops)  # [Hq*D, hidden]
        self.k_proj = Linear(hidden, self.n_kv_heads * self.head_dim, qkv_bias, ops)  # [Hkv*D, hidden]
        self.v_proj = Linear(hidden, self.n_kv_heads * self.head_dim, qkv_bias, ops)  # [Hkv*D, hidden]
        self.o_proj = Linear(self.n_heads * self.head_dim, hidden, bias, ops)  # [hidden, Hq*D]
        if config.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps, ops, config.norm_plus_one)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps, ops, config.norm_plus_one)

    def __call__(self, x: mx.array, mask, cache=None) -> mx.array:
        B, L, _ = x.shape  # x: [B, L, hidden]
        nq, nkv = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        q, k, v = mx.split(self.qkv_proj(x), [nq, nq + nkv], axis=-1)
        q = q.reshape(B, L, self.n_heads, self.head_dim)  # [B, L, Hq, D]
        k = k.reshape(B, L, self.n_kv_heads, self.head_dim)  # [B, L, Hkv, D]
        v = v.reshape(B, L, self.n_kv_heads, self.head_dim).transpose(0, 2, 1, 3)  # [B, Hkv, L, D]
        offset = cache.offset if cache is not None else 0  # position of the first of the L tokens (int, or [B])
        if self.qk_norm:  # Qwen3: RMSNorm over head_dim, per head, before RoPE
            qn, kn, eps = self.q_norm.scale, self.k_norm.scale, self.q_norm.eps
        else:
            qn, kn, eps = None, None, 0.0
        rope = self.rope if self.rope.by_length is None else self.rope.at(_last_position(offset) + L)
        q, k = self.ops.qk_norm_rope(q, k, qn, kn, eps, rope, offset)  # [B, Hq, L, D], [B, Hkv, L, D]
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)  # [B, Hkv, S, D]: S = offset + L, or the window's last keys
        window = self.window  # the backend applies it: inside a kernel, or as an array mask
        if window is not None and isinstance(offset, mx.array) and offset.ndim == 1:
            # batched rows, each with its own first position: a mask per row instead
            mask, window = window_mask(mask, L, k.shape[2], window, offset), None
        elif window is not None and not isinstance(mask, mx.array):
            k, v = window_keys(k, v, L, window)  # a full cache holds keys no query here can see

        o = self.ops.attention(q, k, v, scale=self.scale, mask=mask, window=window)  # [B, Hq, L, D]
        return self.o_proj(o.transpose(0, 2, 1, 3).reshape(B, L, -1))  # [B, L, hidden]


def _last_position(offset) -> int:
    """The largest of the offsets (one per batch row, or one for all) as an int."""
    return int(offset.max().item()) if isinstance(offset, mx.array) else int(offset)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)); Gemma's GeGLU: gelu_tanh instead of silu.

    Built as stored (gate_proj, up_proj); the load hook replaces the two with
    `gate_up_proj`, one layer that returns act(gate(x)) * up(x) (fuse.py).
    """

    def __init__(self, config: ModelConfig, ops, intermediate_size: int | None = None):
        super().__init__()
        hidden, bias = config.hidden_size, config.mlp_bias
        inter = intermediate_size or config.intermediate_size
        self.activation = config.activation
        self.gate_proj = Linear(hidden, inter, bias, ops)  # [inter, hidden]
        self.up_proj = Linear(hidden, inter, bias, ops)  # [inter, hidden]
        self.down_proj = Linear(inter, hidden, bias, ops)  # [hidden, inter]

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(self.gate_up_proj(x))  # [B, L, hidden]


class Block(nn.Module):
    def __init__(self, config: ModelConfig, rope: Rope, ops, index: int = 0):
        super().__init__()
        window = config.sliding_window if config.is_sliding(index) else None
        self.self_attn = Attention(config, rope, ops, window)
        if config.is_moe_layer(index):
            from .moe import SparseMoE

            self.mlp = SparseMoE(config, ops)
        else:
            self.mlp = MLP(config, ops)
        hidden, eps, plus_one = config.hidden_size, config.rms_norm_eps, config.norm_plus_one
        self.input_layernorm = RMSNorm(hidden, eps, ops, plus_one)
        self.post_attention_layernorm = RMSNorm(hidden, eps, ops, plus_one)
        self.sandwich = config.sandwich_norms
        if self.sandwich:  # Gemma 3: the sub-layers' outputs are normed before they are added
            self.pre_feedforward_layernorm = RMSNorm(hidden, eps, ops, plus_one)
            self.post_feedforward_layernorm = RMSNorm(hidden, eps, ops, plus_one)

    def __call__(self, x: mx.array, mask, cache=None) -> mx.array:
        # x [B, L, hidden] is the residual stream: each sub-layer adds to it.
        attn_out = self.self_attn(self.input_layernorm(x), mask, cache)
        if self.sandwich:
            attn_out = self.post_attention_layernorm(attn_out)
            h, h_normed = self.pre_feedforward_layernorm.add(x, attn_out)
            return h + self.post_feedforward_layernorm(self.mlp(h_normed))
        h, h_normed = self.post_attention_layernorm.add(x, attn_out)  # h = x + attn_out, and norm(h)
        return h + self.mlp(h_normed)


class TransformerBody(nn.Module):
    """Named `model` inside `Transformer`, as in Hugging Face checkpoints."""

    def __init__(self, config: ModelConfig, ops):
        super().__init__()
        c = config
        rope = make_rope(c.rope_dims, c.rope_theta, c.rope_traditional, c.rope_scaling,
                         c.max_position_embeddings)
        # Gemma 3's local layers have their own base and no scaling
        local_rope = rope if c.rope_local_base_freq is None else make_rope(
            c.rope_dims, c.rope_local_base_freq, c.rope_traditional, None, c.max_position_embeddings)
        self.embed_tokens = Embedding(c.vocab_size, c.hidden_size, ops)
        self.layers = [Block(c, local_rope if c.is_sliding(i) else rope, ops, i)
                       for i in range(c.num_hidden_layers)]
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps, ops, c.norm_plus_one)
        # Gemma: embeddings times sqrt(hidden), rounded to the activations' dtype as transformers does
        self.embed_multiplier = math.sqrt(c.hidden_size) if c.embed_scale else None

    def embed(self, tokens: mx.array) -> mx.array:
        """tokens [B, L] -> [B, L, hidden], in the activations' dtype."""
        h = self.embed_tokens(tokens)  # [B, L, hidden]
        if h.dtype != self.norm.weight.dtype:  # quantized embeddings dequantize to their scales' dtype
            h = h.astype(self.norm.weight.dtype)
        if self.embed_multiplier is not None:
            h = h * mx.array(self.embed_multiplier, dtype=h.dtype)
        return h

    def __call__(self, tokens: mx.array, cache=None, trace: dict | None = None) -> mx.array:
        h = self.embed(tokens)  # [B, L, hidden]
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
            logits = self.model.embed_tokens.as_linear(h)
        else:
            logits = self.lm_head(h)
        if self.config.final_logit_softcapping:  # Gemma: c * tanh(logits / c)
            c = self.config.final_logit_softcapping
            logits = mx.tanh(logits / c) * c
        return logits

    @property
    def layers(self) -> list[Block]:
        return self.model.layers

    def sanitize(self, weights: dict[str, mx.array]) -> dict[str, mx.array]:
        """The one place where checkpoint names differ from ours."""
        # Some exporters save RoPE's precomputed inverse frequencies; we recompute them.
        weights = {k: v for k, v in weights.items() if "rotary_emb.inv_freq" not in k}
        weights = split_fused(weights, self.config)  # Phi-3 stores qkv_proj and gate_up_proj joined
        if self.config.moe:
            from .moe import stack_experts

            weights = stack_experts(weights, self.config)  # per-expert tensors -> switch_mlp stacks
        if self.config.tie_word_embeddings:
            # Tied checkpoints sometimes carry a copy of the embedding as lm_head.
            for suffix in ("weight", "scales", "biases"):
                weights.pop(f"lm_head.{suffix}", None)
        return weights


def split_fused(weights: dict[str, mx.array], config: ModelConfig) -> dict[str, mx.array]:
    """Phi-3's joined `qkv_proj` / `gate_up_proj` -> q/k/v_proj and gate/up_proj, the layout
    the model is built in (the load hook joins them again). Rows are independent, so
    quantized weights (weight, scales, biases) split the same way."""
    c = config
    q_rows, kv_rows = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    out = {}
    for name, value in weights.items():
        head, sep, tail = name.partition(".self_attn.qkv_proj.")
        if sep:
            for part, rows in zip(("q_proj", "k_proj", "v_proj"),
                                  mx.split(value, [q_rows, q_rows + kv_rows], axis=0)):
                out[f"{head}.self_attn.{part}.{tail}"] = rows
            continue
        head, sep, tail = name.partition(".mlp.gate_up_proj.")
        if sep and value.ndim >= 1:
            for part, rows in zip(("gate_proj", "up_proj"), mx.split(value, 2, axis=0)):
                out[f"{head}.mlp.{part}.{tail}"] = rows
            continue
        out[name] = value
    return out


def join_fused(weights: dict[str, mx.array], config: ModelConfig) -> dict[str, mx.array]:
    """The inverse of `split_fused` for Phi-3: q/k/v_proj -> qkv_proj and gate/up_proj ->
    gate_up_proj, the layout Phi-3 checkpoints (and mlx-lm) store. Other families pass through."""
    if config.model_type != "phi3":
        return weights
    out = dict(weights)
    for joined, parts in (("self_attn.qkv_proj", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
                          ("mlp.gate_up_proj", ("mlp.gate_proj", "mlp.up_proj"))):
        for name in list(out):
            head, sep, tail = name.partition(f".{parts[0]}.")
            if sep:
                rows = [out.pop(f"{head}.{p}.{tail}") for p in parts]
                out[f"{head}.{joined}.{tail}"] = mx.concatenate(rows, axis=0)
    return out
