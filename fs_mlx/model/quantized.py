"""Quantized layers, MLX's affine format: swapped in, the model file unaware.

A quantized matrix W [out, in] is cut along `in` into groups of `group_size`
consecutive weights. Each group g of row r keeps a float scale s and bias b,
and every weight becomes a small unsigned integer q:

    w = s * q + b,    q in 0 .. 2^bits - 1,    b = min(group), s = (max - min) / (2^bits - 1)

The q's are packed low bits first into uint32 words (8 per word at 4 bits, 4
per word at 8 bits), so a row of `in` weights is `in * bits / 32` words:

    weight  uint32 [out, in * bits / 32]
    scales  float  [out, in / group_size]
    biases  float  [out, in / group_size]

This is exactly what `mx.quantize` produces, what mlx-community checkpoints
store, and what `mx.load` turns GGUF Q4_0/Q4_1/Q8_0 blocks into (group 32).
reference.dequantize writes the unpacking out in plain ops; docs/quantization.md
tells the whole story.

As in gpt-fast, the model file builds plain `Linear`/`Embedding` layers and
never learns about bits; `quantize_structure` replaces the ones a checkpoint
stores quantized with `QuantizedLinear`/`QuantizedEmbedding`, whose matmul
goes through the model's backend (`ops.quantized_matmul`).
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map_with_path

from ..errors import FsxError
from .moe import QuantizedSwitchLinear, SwitchLinear
from .layers import Embedding, Linear

SUPPORTED_BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)


class QuantizedLinear(nn.Module):
    """y = x @ dequant(W).T (+ b), without ever materialising dequant(W)."""

    def __init__(self, in_dims: int, out_dims: int, bias: bool, group_size: int, bits: int, ops):
        super().__init__()
        self.ops = ops
        self.group_size, self.bits = group_size, bits
        self.weight = mx.zeros((out_dims, in_dims * bits // 32), dtype=mx.uint32)  # packed q
        self.scales = mx.zeros((out_dims, in_dims // group_size))  # [out, groups]
        self.biases = mx.zeros((out_dims, in_dims // group_size))  # [out, groups]
        if bias:
            self.bias = mx.zeros((out_dims,))

    def __call__(self, x: mx.array) -> mx.array:
        y = self.ops.quantized_matmul(x, self.weight, self.scales, self.biases,
                                      group_size=self.group_size, bits=self.bits)  # [..., out]
        return y + self.bias if "bias" in self else y


class QuantizedEmbedding(nn.Module):
    """Row lookup that dequantizes only the rows asked for; `as_linear` for tied heads."""

    def __init__(self, vocab_size: int, dims: int, group_size: int, bits: int, ops):
        super().__init__()
        self.ops = ops
        self.group_size, self.bits = group_size, bits
        self.weight = mx.zeros((vocab_size, dims * bits // 32), dtype=mx.uint32)
        self.scales = mx.zeros((vocab_size, dims // group_size))
        self.biases = mx.zeros((vocab_size, dims // group_size))

    def __call__(self, tokens: mx.array) -> mx.array:
        # tokens [B, L] -> [B, L, dims], in the scales' dtype
        return mx.dequantize(
            self.weight[tokens], self.scales[tokens], self.biases[tokens],
            group_size=self.group_size, bits=self.bits,
        )

    def as_linear(self, x: mx.array) -> mx.array:
        # Tied lm_head: logits = x @ dequant(E).T, E [vocab, dims]
        return self.ops.quantized_matmul(x, self.weight, self.scales, self.biases,
                                         group_size=self.group_size, bits=self.bits)



# --- checking a (bits, group_size) pair ----------------------------------------

def check_spec(bits: Any, group_size: Any, where: str = "") -> tuple[int, int]:
    """The one place that says which formats fs-mlx accepts."""
    at = f"{where}: " if where else ""
    if bits not in SUPPORTED_BITS:
        raise FsxError(
            f"{at}unsupported quantization bits={bits!r}; fs-mlx supports "
            f"{' and '.join(map(str, SUPPORTED_BITS))}"
        )
    if group_size not in GROUP_SIZES:
        raise FsxError(
            f"{at}unsupported quantization group size {group_size!r}; "
            f"fs-mlx supports {', '.join(map(str, GROUP_SIZES))}"
        )
    return int(bits), int(group_size)


def _check_mode(quantization: dict[str, Any], where: str) -> None:
    mode = quantization.get("mode", "affine")
    if mode != "affine":
        raise FsxError(
            f"{where}: quantization mode {mode!r} is not supported; fs-mlx reads MLX's "
            "affine format (w = scale * q + bias)"
        )


def _infer_spec(path: str, in_dims: int, tensors: dict[str, mx.array]) -> tuple[int, int]:
    """(bits, group_size) from the stored shapes, as mlx-lm does for unnamed layers."""
    w, scales = tensors[f"{path}.weight"], tensors[f"{path}.scales"]
    if scales.ndim != w.ndim or w.ndim not in (2, 3) or scales.shape[-1] == 0:
        raise FsxError(f"tensor {path}.scales/.weight: expected 2-d (or stacked 3-d) quantized tensors")
    group_size = in_dims // scales.shape[-1]
    bits = w.shape[-1] * 32 // in_dims
    if group_size * scales.shape[-1] != in_dims or bits * in_dims != w.shape[-1] * 32:
        raise FsxError(
            f"tensor {path}: quantized shapes {list(w.shape)} / {list(scales.shape)} "
            f"do not fit {in_dims} inputs"
        )
    return check_spec(bits, group_size, path)


# --- swapping layers -----------------------------------------------------------

def to_quantized(module: nn.Module, bits: int, group_size: int) -> nn.Module:
    """An empty quantized twin of a Linear or Embedding (weights are loaded later)."""
    if isinstance(module, Linear):
        out_dims, in_dims = module.weight.shape
        return QuantizedLinear(in_dims, out_dims, "bias" in module, group_size, bits, module.ops)
    if isinstance(module, Embedding):
        vocab, dims = module.weight.shape
        return QuantizedEmbedding(vocab, dims, group_size, bits, module.ops)
    if isinstance(module, SwitchLinear):  # stacked experts (moe.py)
        experts, out_dims, in_dims = module.weight.shape
        return QuantizedSwitchLinear(in_dims, out_dims, experts, group_size, bits, module.ops)
    raise TypeError(f"cannot quantize {type(module).__name__}")


def _swap(model: nn.Module, types: tuple[type, ...], choose) -> None:
    """Replace each leaf module of one of `types` with choose(path, module)."""

    def visit(path: str, m):
        return choose(path, m) if isinstance(m, types) else m

    leaves = tree_map_with_path(visit, model.leaf_modules(), is_leaf=nn.Module.is_module)
    model.update_modules(leaves)


def quantize_structure(
    model: nn.Module, quantization: dict[str, Any], tensors: dict[str, mx.array]
) -> None:
    """Swap in quantized layers where the checkpoint stores quantized tensors.

    `quantization` is config.json's block: {"group_size": 64, "bits": 4,
    "mode": "affine", "<module path>": {...} | false, ...}. For each layer:
    a per-layer entry wins (a dict of bits/group_size, or false for "dense");
    otherwise the layer is quantized iff `<path>.scales` is stored, with bits
    and group size read off the shapes (mlx-lm does the same, so mixed-precision
    checkpoints without per-layer entries load too).
    """
    _check_mode(quantization, "config.json quantization")

    def choose(path: str, m: nn.Module) -> nn.Module:
        override = quantization.get(path)
        if override is False:
            return m
        if isinstance(override, dict):
            _check_mode(override, f"quantization[{path!r}]")
            spec = {**quantization, **override}
            bits, group = check_spec(spec.get("bits"), spec.get("group_size"), path)
        elif f"{path}.scales" in tensors:
            bits, group = _infer_spec(path, m.weight.shape[-1], tensors)
        else:
            return m
        return to_quantized(m, bits, group)

    _swap(model, (Linear, Embedding, SwitchLinear), choose)


def quantization_of(model: nn.Module) -> dict[str, tuple[int, int]]:
    """{module path: (bits, group_size)} for every quantized layer (for reports)."""
    return {
        path: (m.bits, m.group_size)
        for path, m in model.named_modules()
        if isinstance(m, (QuantizedLinear, QuantizedEmbedding, QuantizedSwitchLinear))
    }



def dequantize_model(model: nn.Module) -> None:
    """Swap every quantized layer back to a float one holding dequant(W) (in place).

    The float model a quantized checkpoint stands for: the reference that
    quantization error is measured against (docs/quantization.md).
    """

    def choose(path: str, m: nn.Module) -> nn.Module:
        w = mx.dequantize(m.weight, m.scales, m.biases, group_size=m.group_size, bits=m.bits)
        if isinstance(m, QuantizedSwitchLinear):
            dense = SwitchLinear(w.shape[2], w.shape[1], w.shape[0], m.ops)
            dense.weight = w
            return dense
        if isinstance(m, QuantizedEmbedding):
            dense = Embedding(*w.shape, m.ops)
        else:
            dense = Linear(w.shape[1], w.shape[0], "bias" in m, m.ops)
            if "bias" in m:
                dense.bias = m.bias
        dense.weight = w
        return dense

    _swap(model, (QuantizedLinear, QuantizedEmbedding, QuantizedSwitchLinear), choose)
