"""Mixture of experts (Qwen3-MoE): a router picks k of E expert MLPs per token.

    x [B, L, hidden] -> router: softmax(x @ gate.T) over E experts   [N, E]   (N = B * L)
                     -> the k largest probabilities and their experts [N, k]
                        (norm_topk_prob: rescaled to sum to 1)
                     -> each chosen expert e: down_e(silu(gate_e(x)) * up_e(x))
                     -> their sum, weighted by the probabilities      [B, L, hidden]

Only k experts run per token, so a 30B-parameter model computes like a 3B
one (Qwen3-30B-A3B: 128 experts, k = 8). The experts' weights are stored
*stacked*, one [E, out, in] tensor per projection, as mlx-community's
checkpoints store them (`mlp.switch_mlp.gate_proj.weight`); Hugging Face
checkpoints list each expert separately (`mlp.experts.7.gate_proj.weight`)
and `stack_experts` stacks them at load time.

The matmuls go through the backend's gather ops: `gather_linear(x, w,
indices)` multiplies each row of x by the experts `indices` names, without
materialising w[indices] (MLX: `mx.gather_mm`; quantized: `mx.gather_qmm`).
"""

from __future__ import annotations

import re

import mlx.core as mx
import mlx.nn as nn

from .config import ModelConfig
from .layers import Linear


class SwitchLinear(nn.Module):
    """E stacked Linear layers; row n of x goes through the experts indices[n]."""

    def __init__(self, in_dims: int, out_dims: int, num_experts: int, ops):
        super().__init__()
        self.ops = ops
        self.weight = mx.zeros((num_experts, out_dims, in_dims))  # [E, out, in]

    def __call__(self, x: mx.array, indices: mx.array) -> mx.array:
        # x [N, k or 1, 1, in], indices [N, k] -> [N, k, 1, out]
        return self.ops.gather_linear(x, self.weight, indices)


class QuantizedSwitchLinear(nn.Module):
    """SwitchLinear with MLX-quantized experts (model/quantized.py's format, per expert)."""

    def __init__(self, in_dims: int, out_dims: int, num_experts: int, group_size: int, bits: int, ops):
        super().__init__()
        self.ops = ops
        self.group_size, self.bits = group_size, bits
        self.weight = mx.zeros((num_experts, out_dims, in_dims * bits // 32), dtype=mx.uint32)
        self.scales = mx.zeros((num_experts, out_dims, in_dims // group_size))
        self.biases = mx.zeros((num_experts, out_dims, in_dims // group_size))

    def __call__(self, x: mx.array, indices: mx.array) -> mx.array:
        return self.ops.gather_quantized_matmul(x, self.weight, self.scales, self.biases, indices,
                                                group_size=self.group_size, bits=self.bits)


class SwitchGLU(nn.Module):
    """The experts: down_e(silu(gate_e(x)) * up_e(x)) for the k experts of each token."""

    def __init__(self, hidden: int, inter: int, num_experts: int, ops):
        super().__init__()
        self.ops = ops
        self.gate_proj = SwitchLinear(hidden, inter, num_experts, ops)  # [E, inter, hidden]
        self.up_proj = SwitchLinear(hidden, inter, num_experts, ops)  # [E, inter, hidden]
        self.down_proj = SwitchLinear(inter, hidden, num_experts, ops)  # [E, hidden, inter]

    def __call__(self, x: mx.array, indices: mx.array) -> mx.array:
        x = x[:, None, None, :]  # [N, 1, 1, hidden]: one row, shared by the token's k experts
        h = self.ops.swiglu(self.gate_proj(x, indices), self.up_proj(x, indices))  # [N, k, 1, inter]
        return self.down_proj(h, indices)[:, :, 0, :]  # [N, k, hidden]


class SparseMoE(nn.Module):
    """Qwen3-MoE's MLP: router (`gate`) + stacked experts (`switch_mlp`)."""

    def __init__(self, config: ModelConfig, ops):
        super().__init__()
        self.ops = ops
        self.top_k = config.num_experts_per_tok
        self.norm_topk_prob = config.norm_topk_prob
        self.gate = Linear(config.hidden_size, config.num_experts, False, ops)  # [E, hidden]
        self.switch_mlp = SwitchGLU(config.hidden_size, config.moe_intermediate_size, config.num_experts, ops)

    def route(self, x: mx.array) -> tuple[mx.array, mx.array]:
        """x [N, hidden] -> (experts [N, k] int32, weights [N, k] float32)."""
        logits = self.gate(x).astype(mx.float32)  # [N, E]
        probs = mx.softmax(logits, axis=-1, precise=True)
        k = self.top_k
        experts = mx.argpartition(-probs, kth=k - 1, axis=-1)[:, :k]  # the k largest, in no order
        weights = mx.take_along_axis(probs, experts, axis=-1)  # [N, k]
        if self.norm_topk_prob:
            weights = weights / mx.sum(weights, axis=-1, keepdims=True)
        return experts.astype(mx.int32), weights

    def __call__(self, x: mx.array) -> mx.array:
        shape = x.shape  # [B, L, hidden]
        x = x.reshape(-1, shape[-1])  # [N, hidden]
        experts, weights = self.route(x)
        y = self.switch_mlp(x, experts)  # [N, k, hidden]
        y = (y * weights[..., None].astype(y.dtype)).sum(axis=1)  # [N, hidden]
        return y.reshape(shape)


# --- checkpoint layouts -----------------------------------------------------------

_PER_EXPERT = re.compile(r"^(.*\.mlp)\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.(weight|scales|biases)$")


def stack_experts(weights: dict[str, mx.array], config: ModelConfig) -> dict[str, mx.array]:
    """Hugging Face's per-expert tensors -> the stacked `switch_mlp` ones (the model's layout).

        model.layers.0.mlp.experts.<e>.gate_proj.weight  [inter, hidden]  for e = 0 .. E-1
     -> model.layers.0.mlp.switch_mlp.gate_proj.weight   [E, inter, hidden]

    transformers 5's in-memory layout (`mlp.experts.gate_up_proj` [E, 2 inter, hidden],
    `mlp.experts.down_proj` [E, hidden, inter]) is accepted too. Checkpoints already
    stacked (mlx-community) pass through.
    """
    E = config.num_experts
    groups: dict[tuple[str, str, str], dict[int, mx.array]] = {}
    out = {}
    for name, value in weights.items():
        m = _PER_EXPERT.match(name)
        if m:
            prefix, e, proj, tensor = m.groups()
            groups.setdefault((prefix, proj, tensor), {})[int(e)] = value
        elif name.endswith(".mlp.experts.gate_up_proj"):
            gate, up = mx.split(value, 2, axis=1)
            prefix = name[: -len(".experts.gate_up_proj")]
            out[f"{prefix}.switch_mlp.gate_proj.weight"] = gate
            out[f"{prefix}.switch_mlp.up_proj.weight"] = up
        elif name.endswith(".mlp.experts.down_proj"):
            out[name[: -len(".experts.down_proj")] + ".switch_mlp.down_proj.weight"] = value
        else:
            out[name] = value
    for (prefix, proj, tensor), by_expert in groups.items():
        if sorted(by_expert) != list(range(E)):
            missing = sorted(set(range(E)) - set(by_expert))[:5]
            from ..errors import FsxError

            raise FsxError(f"{prefix}.experts: expected {E} experts (num_experts), "
                           f"missing {missing}" if missing else f"{prefix}.experts: more than {E} experts")
        out[f"{prefix}.switch_mlp.{proj}.{tensor}"] = mx.stack([by_expert[e] for e in range(E)])
    return out
