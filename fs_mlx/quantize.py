"""Affine quantization, MLX's format: layers swapped in, the model file unaware.

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
store, and what `mx.load` turns GGUF Q4_0/Q4_1/Q8_0 blocks into (group 32):
every checkpoint MLX can load works here, and what `fsx quantize` writes loads
in mlx-lm. See docs/quantization.md.

As in gpt-fast, quantization is a separate module that *swaps layers*:
`model.py` builds plain `Linear`/`Embedding` layers and never learns about
bits; `quantize_structure` replaces the ones a checkpoint stores quantized with
`QuantizedLinear`/`QuantizedEmbedding`, whose matmul goes through the `ops`
seam (`ops.quantized_matmul`: `mx.quantized_matmul` today, a Metal kernel on
Apple GPUs).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map_with_path

from . import ops
from .errors import FsxError
from .model import Embedding, Linear, Transformer

SUPPORTED_BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)
DEFAULT_GROUP_SIZE = 64  # mlx-lm's default for affine quantization


# --- the quantized layers ------------------------------------------------------

# MLX's CPU quantized matmul costs about one matrix-vector product per row of x,
# so prefilling L tokens costs L decode steps (measured: 64 rows through the
# 49152x576 SmolLM2 head, 3.6 s). From this many rows on, dequantizing the
# matrix once (~0.2 s for that head) and using the float BLAS matmul is faster;
# below it, and on GPUs (whose kernels are fast), the quantized matmul runs.
CPU_DENSE_ROWS = 8


def quantized_matmul(layer: nn.Module, x: mx.array) -> mx.array:
    """x [..., in] @ dequant(layer.weight).T -> [..., out]."""
    rows = x.size // x.shape[-1]
    # (Only for MLX's own ops: with --kernels metal/msl the hand-written qmm runs.)
    if rows >= CPU_DENSE_ROWS and mx.default_device() == mx.cpu and ops.kernels_in_use() == "mlx":
        w = mx.dequantize(layer.weight, layer.scales, layer.biases,
                          group_size=layer.group_size, bits=layer.bits)  # [out, in]
        y = ops.linear(x, w.astype(x.dtype))
        # Compute now, so the float copy of w is freed before the next layer's is
        # made: left lazy, MLX materialises several layers' copies at once
        # (measured: +10-24 % peak memory over mlx-lm on quantized models).
        mx.eval(y)
        return y
    # On the CPU backend x and the scales are fp32: with bf16 activations
    # mx.quantized_matmul accumulates in bf16 (5-8 % off) and is ~10x slower.
    return ops.quantized_matmul(
        x, layer.weight, layer.scales, layer.biases,
        transpose=True, group_size=layer.group_size, bits=layer.bits,
    )


class QuantizedLinear(nn.Module):
    """y = x @ dequant(W).T (+ b), without ever materialising dequant(W)."""

    def __init__(self, in_dims: int, out_dims: int, bias: bool, group_size: int, bits: int):
        super().__init__()
        self.group_size, self.bits = group_size, bits
        self.weight = mx.zeros((out_dims, in_dims * bits // 32), dtype=mx.uint32)  # packed q
        self.scales = mx.zeros((out_dims, in_dims // group_size))  # [out, groups]
        self.biases = mx.zeros((out_dims, in_dims // group_size))  # [out, groups]
        if bias:
            self.bias = mx.zeros((out_dims,))

    def __call__(self, x: mx.array) -> mx.array:
        y = quantized_matmul(self, x)  # x [..., in] -> [..., out]
        return y + self.bias if "bias" in self else y


class QuantizedEmbedding(nn.Module):
    """Row lookup that dequantizes only the rows asked for; `as_linear` for tied heads."""

    def __init__(self, vocab_size: int, dims: int, group_size: int, bits: int):
        super().__init__()
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
        return quantized_matmul(self, x)


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
    if scales.ndim != 2 or w.ndim != 2 or scales.shape[-1] == 0:
        raise FsxError(f"tensor {path}.scales/.weight: expected 2-d quantized tensors")
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
        return QuantizedLinear(in_dims, out_dims, "bias" in module, group_size, bits)
    if isinstance(module, Embedding):
        vocab, dims = module.weight.shape
        return QuantizedEmbedding(vocab, dims, group_size, bits)
    raise TypeError(f"cannot quantize {type(module).__name__}")


def _swap(model: nn.Module, types: tuple[type, ...], choose) -> None:
    """Replace each leaf module of one of `types` with choose(path, module)."""

    def visit(path: str, m):
        return choose(path, m) if isinstance(m, types) else m

    leaves = tree_map_with_path(visit, model.leaf_modules(), is_leaf=nn.Module.is_module)
    model.update_modules(leaves)


def quantize_structure(
    model: Transformer, quantization: dict[str, Any], tensors: dict[str, mx.array]
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
            bits, group = _infer_spec(path, m.weight.shape[1], tensors)
        else:
            return m
        return to_quantized(m, bits, group)

    _swap(model, (Linear, Embedding), choose)


def quantization_of(model: nn.Module) -> dict[str, tuple[int, int]]:
    """{module path: (bits, group_size)} for every quantized layer (for reports)."""
    return {
        path: (m.bits, m.group_size)
        for path, m in model.named_modules()
        if isinstance(m, (QuantizedLinear, QuantizedEmbedding))
    }


# --- quantizing float weights ---------------------------------------------------

def quantize_tensors(
    model: Transformer, tensors: dict[str, mx.array], bits: int, group_size: int
) -> tuple[dict[str, mx.array], dict[str, Any]]:
    """Float tensors (already sanitized) -> MLX affine tensors + config block.

    Same choices as mlx-lm's `quantize_model`: every Linear and Embedding whose
    input width divides into groups is quantized, the rest stays float; the
    numbers come from `mx.quantize` on the weights in their stored dtype, so
    the result is bit-identical to `mlx_lm.convert -q` on the same checkpoint.
    `model` is only used for its structure (which paths are layers).
    """
    bits, group_size = check_spec(bits, group_size)
    out = dict(tensors)
    for path, m in model.named_modules():
        if not isinstance(m, (Linear, Embedding)):
            continue
        w = tensors.get(f"{path}.weight")
        if w is None:
            continue  # check_tensors reports it, with the file name
        if not mx.issubdtype(w.dtype, mx.floating):
            raise FsxError(f"tensor {path}.weight is {w.dtype}, not float: already quantized?")
        if w.shape[-1] % group_size:
            continue  # e.g. an MLP of width 96 with groups of 64: stays float, as in mlx-lm
        out[f"{path}.weight"], out[f"{path}.scales"], out[f"{path}.biases"] = mx.quantize(
            w, group_size=group_size, bits=bits
        )
    return out, {"group_size": group_size, "bits": bits, "mode": "affine"}


def storage_dtype(config_dict: dict[str, Any]) -> mx.Dtype | None:
    """The dtype mlx-lm's convert casts float weights to before quantizing."""
    name = config_dict.get("torch_dtype") or config_dict.get("dtype")
    return {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32}.get(str(name))


def cast_floats(tensors: dict[str, mx.array], dtype: mx.Dtype | None) -> dict[str, mx.array]:
    if dtype is None:
        return tensors
    return {k: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) else v
            for k, v in tensors.items()}


# --- writing a quantized checkpoint ----------------------------------------------

# Files copied unchanged from the source checkpoint: the tokenizer and its settings.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "generation_config.json", "chat_template.jinja", "chat_template.json",
    "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json",
)
SHARD_BYTES = 5 << 30  # mlx-lm's shard size


def write_quantized(source: Path, out: Path, bits: int, group_size: int, progress=None) -> dict:
    """`fsx quantize`: a float Hugging Face checkpoint -> an MLX-quantized one.

    The output is written into a temporary sibling directory and renamed into
    place at the end, so an error or Ctrl-C never leaves a half-written `out`.
    Returns a summary (bits per weight, bytes, layers quantized).
    """
    from .config import ModelConfig
    from .weights import load_tensors

    bits, group_size = check_spec(bits, group_size)
    out = Path(out)
    if out.exists():
        raise FsxError(f"{out} already exists; remove it or choose another -o")
    raw = _read_config(source)
    if raw.get("quantization") or raw.get("quantization_config"):
        raise FsxError(f"{source} is already quantized; fsx quantize needs a float checkpoint")
    config = ModelConfig.from_dict(raw, source=str(source / "config.json"))
    tensors, _ = load_tensors(source)
    skeleton = Transformer(config)
    tensors = cast_floats(skeleton.sanitize(tensors), storage_dtype(raw))
    qtensors, qconfig = quantize_tensors(skeleton, tensors, bits, group_size)

    parent = out.resolve().parent
    if not parent.is_dir():
        raise FsxError(f"cannot write {out}: {parent} is not a directory")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    try:
        _save_shards(tmp, qtensors, progress)
        # mlx-lm reads "quantization"; Hugging Face tooling looks for "quantization_config".
        raw = {**raw, "quantization": qconfig, "quantization_config": qconfig}
        (tmp / "config.json").write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, tmp / name)
        os.rename(tmp, out)
    except OSError as e:
        raise FsxError(f"cannot write {out}: {e.strerror or e}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

    quantized = [k[: -len(".scales")] for k in qtensors if k.endswith(".scales")]
    n_bytes = sum(v.nbytes for v in qtensors.values())
    return {"path": str(out), "layers_quantized": len(quantized), "bytes": n_bytes,
            "bytes_before": sum(v.nbytes for v in tensors.values()), **qconfig}


def _read_config(source: Path) -> dict[str, Any]:
    """config.json as written (mlx-lm needs its own fields back, not just ours)."""
    path = Path(source) / "config.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise FsxError(f"{source}: no config.json (expected a Hugging Face model directory)") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FsxError(f"{path}: cannot read: {e}") from None
    if not isinstance(raw, dict):
        raise FsxError(f"{path}: expected a JSON object")
    return raw


def _save_shards(folder: Path, tensors: dict[str, mx.array], progress=None) -> None:
    """model.safetensors, or model-0000i-of-0000n.safetensors + index past 5 GB."""
    shards: list[dict[str, mx.array]] = [{}]
    size = 0
    for name, t in tensors.items():
        if size + t.nbytes > SHARD_BYTES and shards[-1]:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += t.nbytes
    n = len(shards)
    names = ["model.safetensors"] if n == 1 else [
        f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)
    ]
    for i, (name, shard) in enumerate(zip(names, shards)):
        if progress:
            progress(f"writing {name} ({i + 1}/{n})")
        mx.save_safetensors(str(folder / name), shard, metadata={"format": "mlx"})
    if n > 1:
        index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
                 "weight_map": {k: names[i] for i, s in enumerate(shards) for k in s}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def dequantize_model(model: nn.Module) -> None:
    """Swap every quantized layer back to a float one holding dequant(W) (in place).

    The float model a quantized checkpoint stands for: the reference that
    quantization error is measured against (docs/quantization.md).
    """

    def choose(path: str, m: nn.Module) -> nn.Module:
        w = mx.dequantize(m.weight, m.scales, m.biases, group_size=m.group_size, bits=m.bits)
        if isinstance(m, QuantizedEmbedding):
            dense = Embedding(*w.shape)
        else:
            dense = Linear(w.shape[1], w.shape[0], "bias" in m)
            if "bias" in m:
                dense.bias = m.bias
        dense.weight = w
        return dense

    _swap(model, (QuantizedLinear, QuantizedEmbedding), choose)
