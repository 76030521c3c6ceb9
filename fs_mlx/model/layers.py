"""The basic layers every family is built of: Linear, Embedding, RMSNorm.

Each holds the backend it computes with (`ops`, fs_mlx/model/backends.py)
and its weights under the checkpoint's names.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


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
    def __init__(self, dims: int, eps: float, ops, plus_one: bool = False):
        super().__init__()
        self.ops = ops
        self.weight = mx.ones((dims,))  # [dims]
        self.eps = eps
        self.plus_one = plus_one  # Gemma: the checkpoint stores w, the norm multiplies by 1 + w

    @property
    def scale(self) -> mx.array:
        """What the normalised x is multiplied by: w, or Gemma's 1 + w (computed in w's dtype)."""
        return self.weight + 1 if self.plus_one else self.weight

    def __call__(self, x: mx.array) -> mx.array:
        return self.ops.rms_norm(x, self.scale, self.eps)

    def add(self, x: mx.array, residual: mx.array) -> tuple[mx.array, mx.array]:
        """(h, norm(h)) with h = x + residual: a residual add and this norm in one launch."""
        return self.ops.add_rms_norm(x, residual, self.scale, self.eps)
