"""From a model directory to a ready Transformer and Tokenizer.

    MODEL              -> hub.resolve: a directory or a .gguf file (downloaded if needed)
    config.json        -> ModelConfig -> Transformer (empty)
    *.safetensors      -> tensors -> sanitize (name mapping) -> checked -> cast -> loaded
    tokenizer*.json    -> Tokenizer
    (a .gguf file gives all three from one file: gguf.py; quantized layers: quantize.py)

Every tensor is checked against the parameter the model expects before any
is loaded, so a wrong checkpoint fails with the tensor's name and file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from .config import ModelConfig, load_config
from .errors import FsxError
from .hub import resolve
from .model import Transformer
from .tokenizer import Tokenizer
from .weights import TensorInfo, load_tensors

FLOAT_DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


@dataclass
class LoadedModel:
    model: Transformer
    tokenizer: Tokenizer
    config: ModelConfig
    path: Path
    dtype: mx.Dtype  # compute dtype of activations and float weights


def compute_dtype(config: ModelConfig) -> mx.Dtype:
    """float32 on the CPU backend, the checkpoint's own dtype on a GPU.

    On MLX's CPU backend bf16 matmuls are ~3x slower than fp32, and quantized
    matmuls with bf16 activations accumulate in bf16 (5-8 % error): measured,
    see docs/forward-pass.md. GPUs are the other way round: half the bytes,
    twice the speed.
    """
    if mx.default_device() == mx.cpu:
        return mx.float32
    return FLOAT_DTYPES.get(str(config.torch_dtype), mx.bfloat16)


def resolve_model_dir(model: str | Path) -> Path:
    """A checkpoint directory for MODEL (path, alias or repo id; see hub.py)."""
    where = resolve(model)
    if where.kind != "dir":
        raise FsxError(f"{model}: expected a Hugging Face model directory, not a {where.kind} file")
    return where.path


def load(
    model: str | Path | None,
    dtype: mx.Dtype | None = None,
    quantize: tuple[int, int] | None = None,
) -> LoadedModel:
    """MODEL (directory, .gguf, alias, repo id; None = the default) -> LoadedModel.

    quantize=(bits, group_size) quantizes float weights while loading, exactly as
    `fsx quantize` would write them (see quantize.py).
    """
    where = resolve(model)
    index = None
    if where.kind == "gguf":
        from .gguf import load_gguf

        config, tensors, tokenizer = load_gguf(where.path)
    else:
        config = load_config(where.path)
        foreign = config.extra.get("quantization_config")
        if foreign and not config.quantization:  # GPTQ, AWQ, bitsandbytes, FP8, ...
            method = foreign.get("quant_method", "?") if isinstance(foreign, dict) else "?"
            raise FsxError(f"{model}: {method}-quantized checkpoints are not supported; use a float "
                           "or an MLX-quantized (mlx-community) checkpoint")
        tokenizer = Tokenizer.from_dir(where.path)
        tensors, index = load_tensors(where.path)
    if quantize is not None:
        config, tensors = quantize_on_load(config, tensors, *quantize)
    dtype = dtype or compute_dtype(config)
    transformer = build_model(config, tensors, index, dtype)
    from .fuse import fuse, fusion_helps

    if fusion_helps():  # our kernels: q/k/v and gate/up as single layers (fuse.py)
        fuse(transformer)
    return LoadedModel(transformer, tokenizer, config, where.path, dtype)


def quantize_on_load(
    config: ModelConfig, tensors: dict[str, mx.array], bits: int, group_size: int
) -> tuple[ModelConfig, dict[str, mx.array]]:
    from .quantize import cast_floats, check_spec, quantize_tensors, storage_dtype

    check_spec(bits, group_size)
    if config.quantization:
        raise FsxError(f"the model is already quantized ({config.quantization}); "
                       "--quantize needs float weights")
    skeleton = Transformer(config)  # structure only: its arrays are never evaluated
    tensors = cast_floats(skeleton.sanitize(tensors), storage_dtype({"torch_dtype": config.torch_dtype}))
    tensors, block = quantize_tensors(skeleton, tensors, bits, group_size)
    return dataclasses.replace(config, quantization=block), tensors


def build_model(
    config: ModelConfig,
    tensors: dict[str, mx.array],
    index: dict[str, TensorInfo] | None,
    dtype: mx.Dtype,
) -> Transformer:
    """An empty Transformer for `config`, filled with `tensors` (checked, cast)."""
    model = Transformer(config)
    tensors = model.sanitize(tensors)
    if config.quantization:
        from .quantize import quantize_structure  # swaps Linear layers for quantized ones

        quantize_structure(model, config.quantization, tensors)
    check_tensors(model, tensors, index or {})
    tensors = {
        k: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) else v
        for k, v in tensors.items()
    }
    model.load_weights(list(tensors.items()), strict=True)
    mx.eval(model.parameters())
    return model


def check_tensors(model: Transformer, tensors: dict[str, mx.array], index: dict[str, TensorInfo]):
    """Missing, unexpected or mis-shaped tensors -> one error naming them."""
    expected = dict(tree_flatten(model.parameters()))

    def where(name: str) -> str:
        return f" in {index[name].file.name}" if name in index else ""

    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    problems = [f"missing tensor {n}" for n in missing[:5]]
    problems += [f"unexpected tensor {n}{where(n)}" for n in extra[:5]]
    for name, param in expected.items():
        if name in tensors and tuple(tensors[name].shape) != tuple(param.shape):
            problems.append(
                f"tensor {name}{where(name)} has shape {list(tensors[name].shape)}, "
                f"the config implies {list(param.shape)}"
            )
    if problems:
        more = len(missing) + len(extra) - min(len(missing), 5) - min(len(extra), 5)
        tail = f" (and {more} more)" if more > 0 else ""
        raise FsxError("weights do not match config.json: " + "; ".join(problems[:8]) + tail)


def load_tokenizer(model: str | Path | None) -> Tokenizer:
    """Only the tokenizer (fast: no weights are read)."""
    where = resolve(model)
    if where.kind == "gguf":
        from .gguf import build_tokenizer, read_header

        return build_tokenizer(read_header(where.path))
    return Tokenizer.from_dir(where.path)
