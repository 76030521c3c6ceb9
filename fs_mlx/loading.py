"""From a model directory to a ready Transformer and Tokenizer.

    config.json        -> ModelConfig -> Transformer (empty)
    *.safetensors      -> tensors -> sanitize (name mapping) -> checked -> cast -> loaded
    tokenizer*.json    -> Tokenizer

Every tensor is checked against the parameter the model expects before any
is loaded, so a wrong checkpoint fails with the tensor's name and file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from .config import ModelConfig, load_config
from .errors import FsxError
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
    path = Path(model).expanduser()
    if not path.exists():
        raise FsxError(f"model not found: {model} (expected a local directory)")
    if not path.is_dir():
        raise FsxError(f"{model}: expected a Hugging Face model directory")
    return path


def load(model: str | Path, dtype: mx.Dtype | None = None) -> LoadedModel:
    model_dir = resolve_model_dir(model)
    config = load_config(model_dir)
    tokenizer = Tokenizer.from_dir(model_dir)
    tensors, index = load_tensors(model_dir)
    dtype = dtype or compute_dtype(config)
    transformer = build_model(config, tensors, index, dtype)
    return LoadedModel(transformer, tokenizer, config, model_dir, dtype)


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


def load_tokenizer(model: str | Path) -> Tokenizer:
    """Only the tokenizer (fast: no weights are read)."""
    return Tokenizer.from_dir(resolve_model_dir(model))
