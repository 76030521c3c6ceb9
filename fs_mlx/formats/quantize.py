"""Writing MLX-quantized checkpoints: `fsx quantize` and `load(..., quantize=)`.

Every 2-d weight of a Linear or Embedding whose width divides into groups is
quantized with `mx.quantize` (w = scale * q + bias per group, q packed low
bits first into uint32 words: the format is explained in
fs_mlx/model/quantized.py and docs/quantization.md), the rest stays float,
exactly as `mlx_lm.convert -q` decides.

The format and the quantized layers are in fs_mlx/model/quantized.py; this
module turns float tensors into that format and writes them the way mlx-lm
does, so what `fsx quantize` writes loads in mlx-lm too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import mlx.core as mx

from ..errors import FsxError
from ..files import atomic_dir
from ..model.config import FLOAT_DTYPES
from ..model.quantized import check_spec
from ..model.moe import SparseMoE, SwitchLinear
from ..model.transformer import Embedding, Linear, Transformer, join_fused

DEFAULT_GROUP_SIZE = 64  # mlx-lm's default for affine quantization


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
    block: dict[str, Any] = {"group_size": group_size, "bits": bits, "mode": "affine"}
    modules = dict(model.named_modules())
    for path, m in modules.items():
        if not isinstance(m, (Linear, Embedding, SwitchLinear)):
            continue
        w = tensors.get(f"{path}.weight")
        if w is None:
            continue  # check_tensors reports it, with the file name
        if not mx.issubdtype(w.dtype, mx.floating):
            raise FsxError(f"tensor {path}.weight is {w.dtype}, not float: already quantized?")
        layer_bits, layer_group = bits, group_size
        if path.endswith(".gate") and isinstance(modules.get(path.rsplit(".", 1)[0]), SparseMoE):
            # The MoE router picks the experts: mlx-lm keeps it at 8 bits (qwen3_moe's quant_predicate)
            layer_bits, layer_group = 8, 64
            block[path] = {"group_size": 64, "bits": 8}
        if w.shape[-1] % layer_group:
            block.pop(path, None)
            continue  # e.g. an MLP of width 96 with groups of 64: stays float, as in mlx-lm
        out[f"{path}.weight"], out[f"{path}.scales"], out[f"{path}.biases"] = mx.quantize(
            w, group_size=layer_group, bits=layer_bits
        )
    return out, block


def storage_dtype(config_dict: dict[str, Any]) -> mx.Dtype | None:
    """The dtype mlx-lm's convert casts float weights to before quantizing."""
    name = config_dict.get("torch_dtype") or config_dict.get("dtype")
    return FLOAT_DTYPES.get(str(name))


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
    from ..model.config import ModelConfig, check_against_tensors
    from .safetensors import load_indexed, tensor_index

    bits, group_size = check_spec(bits, group_size)
    out = Path(out)
    if out.exists():
        raise FsxError(f"{out} already exists; remove it or choose another -o")
    raw = _read_config(source)
    if raw.get("quantization") or raw.get("quantization_config"):
        raise FsxError(f"{source} is already quantized; fsx quantize needs a float checkpoint")
    config = ModelConfig.from_dict(raw, source=str(source / "config.json"))
    index = tensor_index(source)  # headers only: the config must agree before a layer is built
    check_against_tensors(config, {k: t.shape for k, t in index.items()}, str(source))
    tensors = load_indexed(index)
    skeleton = Transformer(config, ops=None)  # structure only: which paths are layers
    tensors = cast_floats(skeleton.sanitize(tensors), storage_dtype(raw))
    qtensors, qconfig = quantize_tensors(skeleton, tensors, bits, group_size)
    qtensors = join_fused(qtensors, config)  # Phi-3 is stored with q/k/v and gate/up joined

    with atomic_dir(out) as tmp:
        _save_shards(tmp, qtensors, progress)
        # mlx-lm reads "quantization"; Hugging Face tooling looks for "quantization_config".
        raw = {**raw, "quantization": qconfig, "quantization_config": qconfig}
        (tmp / "config.json").write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, tmp / name)

    quantized = [k[: -len(".scales")] for k in qtensors if k.endswith(".scales")]
    n_bytes = sum(v.nbytes for v in qtensors.values())
    return {"path": str(out), "layers_quantized": len(quantized), "bytes": n_bytes,
            "bytes_before": sum(v.nbytes for v in tensors.values()), **qconfig}


def _read_config(source: Path) -> dict[str, Any]:
    """config.json as written (mlx-lm needs its own fields back, not just ours)."""
    from ..model.config import read_config_json

    return read_config_json(source)


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


