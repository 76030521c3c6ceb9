"""Backends: who computes the ops. A model holds one; two models may hold different ones.

The model never calls a kernel or an `mx.fast` function directly: each layer
calls its backend's method (`self.ops.rms_norm(...)`). A backend is a plain
object with these methods, identical in signature across implementations:

    rms_norm(x, weight, eps)                          x [..., D] -> [..., D]
    add_rms_norm(x, residual, weight, eps)            -> (h = x + residual, rms_norm(h))
    qk_norm_rope(q, k, q_weight, k_weight, eps, rope, offset)
                                                      q [B, L, Hq, D], k [B, L, Hkv, D] -> [B, H, L, D] each
    attention(q, k, v, *, scale, mask, window=None)   q [B, Hq, L, D], k/v [B, Hkv, S, D] -> [B, Hq, L, D];
                                                      window W: query at p = S-L+l sees keys (p-W, p] (window.py)
    swiglu(gate, up)                                  silu(gate) * up
    geglu(gate, up)                                   gelu_tanh(gate) * up (Gemma)
    linear(x, weight, bias)                           x [..., in] @ weight.T (+ bias), weight [out, in]
    quantized_matmul(x, w, scales, biases, *, transpose, group_size, bits)
    quantized_swiglu(x, w, scales, biases, *, group_size, bits)     w = [gate; up]
    gather_linear(x, w, indices)                      mixture of experts (model/moe.py):
                                                      x [N, k|1, 1, in], w [E, out, in], indices [N, k]
                                                      -> [N, k, 1, out], row n times w[indices[n, j]].T
    gather_quantized_matmul(x, w, scales, biases, indices, *, group_size, bits)   the same, quantized

The implementations:
  "mlx"        MLXBackend: MLX's own ops (`mx.fast.*`) — runs wherever MLX runs; on the
               CPU its matrix products, norms, RoPE and attention go to fsx's own CPU
               kernels (fs_mlx/cpu) where built
  "mlx-ops"    MLXBackend(cpu_kernels=False): MLX's ops for all of them
  "metal"      fs_mlx.kernels.MetalBackend(): the hand-written kernels in metal/ (Apple GPUs)
  "msl"        fs_mlx.kernels.MetalBackend(executor=True): the same kernels on the CPU,
               through the MSL executor (fs_mlx/msl) — exact and slow, for tests and learning
  "reference"  ReferenceBackend: the formulas in plain ops (reference.py) — the truth
  "auto"       metal where `mx.metal.is_available()`, else mlx

`CountingBackend(inner)` wraps any of them and counts the calls per op: on the
Metal backend each call is one kernel launch (attention with key splits: two).
"""

from __future__ import annotations

import math
from collections import Counter

import mlx.core as mx

from .. import cpu
from . import reference
from .rope import Rope, scale_rotated
from .window import window_mask

KERNEL_CHOICES = ("auto", "metal", "mlx", "mlx-ops", "msl", "reference")
OPS = ("rms_norm", "add_rms_norm", "qk_norm_rope", "attention", "swiglu", "geglu", "linear",
       "quantized_matmul", "quantized_swiglu", "gather_linear", "gather_quantized_matmul")

# Without fsx's CPU kernels: MLX's CPU quantized matmul costs about one
# matrix-vector product per row of x, so prefilling L tokens costs L decode
# steps (measured: 64 rows through the 49152x576 SmolLM2 head, 3.6 s). From this
# many rows on, dequantizing the matrix once (~0.2 s for that head) and using
# the float BLAS matmul is faster. (The CPU kernels' own GEMM dequantizes in
# tiles and needs neither the copy nor a BLAS.)
CPU_DENSE_ROWS = 8


class MLXBackend:
    """MLX's own ops: `mx.fast.rms_norm`, `mx.fast.rope`, `mx.fast.scaled_dot_product_attention`, ...

    On the CPU stream, the matrix products run fsx's CPU kernels (fs_mlx/cpu: a
    matvec that streams each weight once, a few-row path, a tiled GEMM) where the
    extension is built and takes the shapes, and so do the norms, RoPE and
    attention (on a CPU, MLX runs those `mx.fast` ops as their fallbacks: dozens
    of small graph nodes per layer). cpu_kernels=False keeps MLX's own ops, as
    does a machine where the extension was not built.
    """

    name = "mlx"

    def __init__(self, cpu_kernels: bool = True):
        self.cpu_kernels = cpu_kernels and cpu.available()
        if not cpu_kernels:
            self.name = "mlx-ops"

    def rms_norm(self, x, weight, eps):
        if self.cpu_kernels and cpu.handles_norm(x, weight):
            return cpu.rms_norm(x, weight, eps)
        return mx.fast.rms_norm(x, weight, eps)

    def add_rms_norm(self, x, residual, weight, eps):
        if self.cpu_kernels and cpu.handles_norm(x, weight) and residual.shape == x.shape:
            return cpu.add_rms_norm(x, residual, weight, eps)
        h = x + residual
        return h, mx.fast.rms_norm(h, weight, eps)

    def qk_norm_rope(self, q, k, q_weight, k_weight, eps, rope: Rope, offset):
        if self.cpu_kernels and cpu.handles_rope(q, k):
            return cpu.qk_norm_rope(q, k, q_weight, k_weight, eps, rope, offset)
        if q_weight is not None:  # Qwen3: RMSNorm per head, over head_dim
            q, k = mx.fast.rms_norm(q, q_weight, eps), mx.fast.rms_norm(k, k_weight, eps)
        q, k = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3)  # [B, H, L, D]
        return self._rope(q, rope, offset), self._rope(k, rope, offset)

    @staticmethod
    def _rope(x, rope: Rope, offset):
        x = mx.fast.rope(x, rope.dims, traditional=rope.traditional, base=rope.base,
                         scale=rope.scale, offset=offset, freqs=rope.periods)
        return scale_rotated(x, rope)  # yarn/longrope's attention factor

    def attention(self, q, k, v, *, scale, mask, window=None):
        if self.cpu_kernels and cpu.handles_attention(q, k, v, mask, window):
            return cpu.attention(q, k, v, scale=scale, mask=mask, window=window)
        if window is not None and (q.shape[2] > 1 or k.shape[2] > window):  # the window as a mask
            mask = window_mask(mask, q.shape[2], k.shape[2], window)
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)

    def swiglu(self, gate, up):
        return gate * mx.sigmoid(gate) * up

    def geglu(self, gate, up):
        # tanh-approximated GELU (PyTorch's gelu(approximate="tanh"), Gemma's hidden_activation)
        return 0.5 * gate * (1 + mx.tanh(math.sqrt(2 / math.pi) * (gate + 0.044715 * gate**3))) * up

    def linear(self, x, weight, bias=None):
        if self.cpu_kernels and cpu.handles_linear(x, weight):
            y = cpu.linear(x, weight)
        else:
            y = x @ weight.T
        return y if bias is None else y + bias

    def quantized_matmul(self, x, w, scales, biases, *, transpose=True, group_size=64, bits=4):
        if self.cpu_kernels and cpu.handles_quantized(x, scales, transpose, group_size, bits):
            return cpu.quantized_matmul(x, w, scales, biases, group_size=group_size, bits=bits)
        rows = x.size // x.shape[-1]
        if rows >= CPU_DENSE_ROWS and mx.default_device() == mx.cpu:
            W = mx.dequantize(w, scales, biases, group_size=group_size, bits=bits)  # [out, in]
            y = self.linear(x, W.astype(x.dtype)) if transpose else x @ W.astype(x.dtype)
            # Computed now, so this float copy of W is freed before the next layer's is
            # made: left lazy, MLX materialises several layers' copies at once
            # (measured: +10-24 % peak memory over mlx-lm on quantized models).
            mx.eval(y)
            return y
        # On the CPU x and the scales are float32: with bf16 activations
        # mx.quantized_matmul accumulates in bf16 (5-8 % off) and is ~10x slower.
        return mx.quantized_matmul(x, w, scales, biases, transpose=transpose,
                                   group_size=group_size, bits=bits)

    def quantized_swiglu(self, x, w, scales, biases, *, group_size=64, bits=4):
        if self.cpu_kernels and cpu.handles_quantized(x, scales, True, group_size, bits):
            return cpu.quantized_swiglu(x, w, scales, biases, group_size=group_size, bits=bits)
        y = self.quantized_matmul(x, w, scales, biases, group_size=group_size, bits=bits)
        gate, up = mx.split(y, 2, axis=-1)
        return self.swiglu(gate, up)


    def gather_linear(self, x, w, indices):
        if mx.default_device() == mx.cpu and x.dtype != mx.float32:
            # MLX's CPU gather_mm takes float32 only
            y = mx.gather_mm(x.astype(mx.float32), w.swapaxes(-1, -2).astype(mx.float32), rhs_indices=indices)
            return y.astype(mx.result_type(x, w))
        return mx.gather_mm(x, w.swapaxes(-1, -2), rhs_indices=indices)

    def gather_quantized_matmul(self, x, w, scales, biases, indices, *, group_size=64, bits=4):
        dtype = mx.result_type(x, scales)
        if mx.default_device() == mx.cpu and dtype != mx.float32:
            # On the CPU half-precision inputs accumulate in half (as quantized_matmul's note says)
            x, scales, biases = x.astype(mx.float32), scales.astype(mx.float32), biases.astype(mx.float32)
        y = mx.gather_qmm(x, w, scales, biases, rhs_indices=indices, transpose=True,
                          group_size=group_size, bits=bits)
        return y.astype(dtype)


class ReferenceBackend:
    """The plain formulas of reference.py: slow, exact, the oracle for the others."""

    name = "reference"
    rms_norm = staticmethod(reference.rms_norm)
    add_rms_norm = staticmethod(reference.add_rms_norm)
    qk_norm_rope = staticmethod(reference.qk_norm_rope)
    attention = staticmethod(reference.attention)
    swiglu = staticmethod(reference.swiglu)
    geglu = staticmethod(reference.geglu)
    linear = staticmethod(reference.linear)
    quantized_matmul = staticmethod(reference.quantized_matmul)
    quantized_swiglu = staticmethod(reference.quantized_swiglu)
    gather_linear = staticmethod(reference.gather_linear)
    gather_quantized_matmul = staticmethod(reference.gather_quantized_matmul)


class CountingBackend:
    """Wraps a backend and counts its calls per op (`calls`), e.g. to report launches per token."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.calls: Counter[str] = Counter()

    def __getattr__(self, op: str):
        fn = getattr(self.inner, op)
        if op not in OPS:
            return fn

        def counted(*args, **kwargs):
            self.calls[op] += 1
            return fn(*args, **kwargs)

        return counted

