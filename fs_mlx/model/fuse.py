"""The load hook: q/k/v and gate/up as single layers, for every backend.

Decoding one token runs seven projections per layer: q, k, v, o, gate, up,
down. Three of them read the same input (the normed hidden state), and two
others do too. Stacking their weights along the output dimension makes each
set one matmul:

    self_attn.qkv_proj    = [q_proj; k_proj; v_proj]    [(Hq + 2 Hkv) * D, hidden]
    mlp.gate_up_proj      = [gate_proj; up_proj]        [2 * inter, hidden], + SwiGLU

Quantized weights stack the same way: groups run along the *input*
dimension, so every output row keeps its own packed words, scales and biases
and the stacked layer computes exactly what the three (or two) did.

Some checkpoints store the parts differently (a GGUF whose v is Q8_0 and q
Q4_1, an mlx-community model with per-layer bit widths): those parts cannot
share one matrix, so `Concat` runs each and concatenates the outputs. The
model sees the same layer either way.

The gate+up layer returns silu(gate) * up. With quantized weights and one row
of x (decoding) that is one op, `ops.quantized_swiglu`: on the Metal kernels
the SwiGLU runs in the matmul's epilogue, so the [2 * inter] intermediate
never goes to memory. Otherwise it is the matmul, then `ops.swiglu`.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .quantized import QuantizedLinear
from .transformer import Linear, Transformer


def can_stack(layers: list[nn.Module]) -> bool:
    """Same kind (dense, or quantized with the same bits and group size), same bias."""
    first = layers[0]
    if not all(type(m) is type(first) and ("bias" in m) == ("bias" in first) for m in layers):
        return False
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
        fused = QuantizedLinear(in_dims, out_dims, has_bias, first.group_size, first.bits, first.ops)
        names = ("weight", "scales", "biases")  # uint32 [out, in*bits/32], [out, in/group] x 2
    else:
        fused = Linear(first.weight.shape[1], out_dims, has_bias, first.ops)
        names = ("weight",)  # [out, in]
    for name in names + (("bias",) if has_bias else ()):
        setattr(fused, name, mx.concatenate([getattr(m, name) for m in layers], axis=0))
    return fused


class Concat(nn.Module):
    """Layers that cannot be stacked, run one by one: [..., in] -> [..., sum of outs]."""

    def __init__(self, parts: list[nn.Module]):
        super().__init__()
        self.parts = parts

    def __call__(self, x: mx.array) -> mx.array:
        return mx.concatenate([p(x) for p in self.parts], axis=-1)


def join(layers: list[nn.Module]) -> nn.Module:
    """One layer computing [layer_0(x) | layer_1(x) | ...]."""
    return stack_rows(layers) if can_stack(layers) else Concat(layers)


class GateUpSwiGLU(nn.Module):
    """gate_proj and up_proj joined; returns silu(x @ gate.T) * (x @ up.T).

    activation "gelu_pytorch_tanh" (Gemma): gelu_tanh instead of silu (`ops.geglu`).
    """

    def __init__(self, gate: nn.Module, up: nn.Module, activation: str = "silu"):
        super().__init__()
        self.ops = gate.ops
        self.proj = join([gate, up])  # [2 * inter, hidden]
        self.geglu = activation == "gelu_pytorch_tanh"

    def __call__(self, x: mx.array) -> mx.array:
        p = self.proj
        if (not self.geglu and isinstance(p, QuantizedLinear) and "bias" not in p
                and x.size == x.shape[-1]):
            # Decoding one token: matmul and SwiGLU as one op.
            return self.ops.quantized_swiglu(x, p.weight, p.scales, p.biases,
                                             group_size=p.group_size, bits=p.bits)
        gate, up = mx.split(p(x), 2, axis=-1)  # [..., inter] each
        return self.ops.geglu(gate, up) if self.geglu else self.ops.swiglu(gate, up)


def fuse(model: Transformer) -> Transformer:
    """Join q/k/v and gate/up in every layer (in place; the numbers do not change)."""
    for layer in model.layers:
        a, m = layer.self_attn, layer.mlp
        a.qkv_proj = join([a.q_proj, a.k_proj, a.v_proj])
        del a.q_proj, a.k_proj, a.v_proj
        if "gate_proj" in m:  # a dense MLP (an MoE layer's experts are stacked already: moe.py)
            m.gate_up_proj = GateUpSwiGLU(m.gate_proj, m.up_proj, m.activation)
            del m.gate_proj, m.up_proj
    mx.eval(model.parameters())
    return model


def stored_weights(model: Transformer) -> dict[str, mx.array]:
    """The inverse of `fuse`: the model's weights under the checkpoint's names.

    `...self_attn.qkv_proj.weight` [(Hq + 2 Hkv) D, hidden] becomes q_proj, k_proj
    and v_proj's rows again (scales, biases and bias alike); `mlp.gate_up_proj.proj`
    becomes gate_proj and up_proj; a `Concat`'s parts keep their own tensors.
    For writing a model back out (GGUF export, tests) in the layout it came in.
    """
    from mlx.utils import tree_flatten

    c = model.config
    splits = {"self_attn.qkv_proj": (("q_proj", "k_proj", "v_proj"),
                                     [c.num_attention_heads * c.head_dim,
                                      (c.num_attention_heads + c.num_key_value_heads) * c.head_dim]),
              "mlp.gate_up_proj.proj": (("gate_proj", "up_proj"), 2)}
    out = {}
    for name, value in tree_flatten(model.parameters()):
        for joined, (parts, at) in splits.items():
            head, sep, tail = name.partition(f".{joined}.")
            if not sep:
                continue
            owner = head + "." + joined.split(".")[0]  # model.layers.i.self_attn / .mlp
            if tail.startswith("parts."):  # a Concat: parts.<i>.<tensor>
                i, tensor = tail[len("parts."):].split(".", 1)
                out[f"{owner}.{parts[int(i)]}.{tensor}"] = value
            else:
                for part, rows in zip(parts, mx.split(value, at, axis=0)):
                    out[f"{owner}.{part}.{tail}"] = rows
            break
        else:
            out[name] = value
    return out
