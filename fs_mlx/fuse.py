"""Fewer dispatches per token: q/k/v and gate/up as single layers, at load time.

Decoding one token runs seven projections per layer: q, k, v, o, gate, up,
down. Three of them read the same input (the normed hidden state), and two
others do too. Stacking their weights along the output dimension makes each
set one matmul:

    self_attn.qkv_proj    = [q_proj; k_proj; v_proj]    [(Hq + 2 Hkv) * D, hidden]
    mlp.gate_up_proj      = [gate_proj; up_proj]        [2 * inter, hidden], + SwiGLU

Quantized weights stack the same way: groups run along the *input*
dimension, so every output row keeps its own packed words, scales and biases
and the stacked layer computes exactly what the three (or two) did.

The gate+up layer returns silu(gate) * up. With quantized weights and one row
of x (decoding) that is one kernel, `qmv_swiglu` (`ops.quantized_swiglu`):
the SwiGLU runs in the matmul's epilogue, so the [2 * inter] intermediate
never goes to memory. Otherwise it is the matmul, then `ops.swiglu`.

Per layer (one decoded token, ops launches): 7 projections + 1 SwiGLU
become 3 matmuls + 1 fused gate+up — see docs/kernels.md for the counts.

When: on MLX's CPU backend the fused and unfused forms decode at the same
speed (measured on Qwen3-0.6B-shaped weights, fp32, 4- and 8-bit: within
noise; the matvecs are bandwidth-bound and a CPU dispatch costs microseconds),
so `--kernels mlx` keeps the checkpoint's layers, named as stored. Our Metal
kernels (`metal`, and `msl`, which runs them) fuse: decoding a 0.6B model on
an Apple GPU is bound by per-dispatch cost, not bandwidth.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from . import ops
from .model import Attention, Linear, MLP, Transformer
from .quantize import QuantizedLinear


def can_stack(layers: list[nn.Module]) -> bool:
    """Same kind (dense, or quantized with the same bits and group size), same bias."""
    first = layers[0]
    if not all(type(m) is type(first) and ("bias" in m) == ("bias" in first) for m in layers):
        return False  # e.g. a mixed-precision checkpoint: that layer stays unfused
    if isinstance(first, QuantizedLinear):
        return all((m.bits, m.group_size) == (first.bits, first.group_size) for m in layers)
    return isinstance(first, Linear)


def stack_rows(layers: list[nn.Module]) -> nn.Module:
    """One Linear/QuantizedLinear whose output rows are the layers' rows, in order."""
    assert can_stack(layers)
    first = layers[0]
    has_bias = "bias" in first
    out_dims = sum(m.weight.shape[0] for m in layers)
    if isinstance(first, QuantizedLinear):
        in_dims = first.weight.shape[1] * 32 // first.bits
        fused = QuantizedLinear(in_dims, out_dims, has_bias, first.group_size, first.bits)
        names = ("weight", "scales", "biases")  # uint32 [out, in*bits/32], [out, in/group] x 2
    else:
        fused = Linear(first.weight.shape[1], out_dims, has_bias)
        names = ("weight",)  # [out, in]
    for name in names + (("bias",) if has_bias else ()):
        setattr(fused, name, mx.concatenate([getattr(m, name) for m in layers], axis=0))
    return fused


class GateUpSwiGLU(nn.Module):
    """gate_proj and up_proj stacked into one layer; returns silu(x @ gate.T) * (x @ up.T)."""

    def __init__(self, gate: nn.Module, up: nn.Module):
        super().__init__()
        self.proj = stack_rows([gate, up])  # [2 * inter, hidden]

    def __call__(self, x: mx.array) -> mx.array:
        p = self.proj
        if isinstance(p, QuantizedLinear) and "bias" not in p and x.size == x.shape[-1]:
            # Decoding: one launch, the SwiGLU in the matmul's epilogue.
            return ops.quantized_swiglu(x, p.weight, p.scales, p.biases,
                                        group_size=p.group_size, bits=p.bits)
        gate, up = mx.split(p(x), 2, axis=-1)  # [..., inter] each
        return ops.swiglu(gate, up)


def fuse_attention(attn: Attention) -> None:
    attn.qkv_proj = stack_rows([attn.q_proj, attn.k_proj, attn.v_proj])
    del attn.q_proj, attn.k_proj, attn.v_proj


def fuse_mlp(mlp: MLP) -> None:
    mlp.gate_up_proj = GateUpSwiGLU(mlp.gate_proj, mlp.up_proj)
    del mlp.gate_proj, mlp.up_proj


def fuse(model: Transformer) -> Transformer:
    """Stack q/k/v and gate/up in every layer (in place; the numbers do not change)."""
    for layer in model.layers:
        a, m = layer.self_attn, layer.mlp
        if "q_proj" in a and can_stack([a.q_proj, a.k_proj, a.v_proj]):
            fuse_attention(a)
        if "gate_proj" in m and can_stack([m.gate_proj, m.up_proj]):
            fuse_mlp(m)
    mx.eval(model.parameters())
    return model


def fusion_helps() -> bool:
    """Fuse for our Metal kernels (dispatch-bound on Apple GPUs), not for MLX's ops."""
    return ops.kernels_in_use() in ("metal", "msl")


def is_fused(model: Transformer) -> bool:
    return "qkv_proj" in model.layers[0].self_attn
