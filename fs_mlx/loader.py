"""`load`: from MODEL to a ready model, tokenizer and backend.

    MODEL              -> formats.hub.resolve: a directory or a .gguf file (downloaded if needed)
    --kernels CHOICE   -> the backend every layer computes with (model/backends.py)
    config.json        -> ModelConfig -> Transformer(config, backend), empty, in the checkpoint's layout
    *.safetensors      -> tensors -> sanitize (name mapping) -> checked -> cast -> loaded
                       -> fuse: q/k/v and gate/up joined (the load hook, model/fuse.py)
    tokenizer*.json    -> Tokenizer
    (a .gguf file gives all three from one file: formats/gguf.py; quantized layers: model/quantized.py)

The config is checked against the tensor index (headers only) before the model
is built, so a config that lies about its size costs nothing; then every tensor
is checked against the parameter the model expects before any is loaded, so a
wrong checkpoint fails with the tensor's name and file (docs/trust.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from .errors import FsxError
from .formats.hub import resolve
from .formats.safetensors import TensorInfo, load_indexed, tensor_index
from .formats.tokenizer import Tokenizer
from .model.backends import KERNEL_CHOICES, MLXBackend, ReferenceBackend
from .model.config import FLOAT_DTYPES, ModelConfig, check_against_tensors, load_config
from .model.fuse import fuse
from .model.transformer import Transformer


@dataclass
class LoadedModel:
    model: Transformer  # model.ops is its backend
    tokenizer: Tokenizer
    config: ModelConfig
    path: Path
    dtype: mx.Dtype  # compute dtype of activations and float weights

    @property
    def kernels(self) -> str:
        """The backend's name: mlx, metal, msl or reference."""
        return self.model.ops.name


def make_backend(choice: str = "auto"):
    """The backend for --kernels CHOICE: auto | metal | mlx | mlx-ops | msl | reference (model/backends.py)."""
    if choice not in KERNEL_CHOICES:
        raise FsxError(f"--kernels must be one of {', '.join(KERNEL_CHOICES)}, not {choice!r}")
    if choice == "auto":
        choice = "metal" if mx.metal.is_available() else "mlx"
    if choice in ("mlx", "mlx-ops"):
        return MLXBackend(cpu_kernels=choice == "mlx")
    if choice == "reference":
        return ReferenceBackend()
    if choice == "metal" and not mx.metal.is_available():
        raise FsxError("--kernels metal needs an Apple GPU (Metal is not available here; "
                       "--kernels msl runs the same kernels on the CPU, slowly)")
    from .kernels import MetalBackend

    return MetalBackend(executor=(choice == "msl"))


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
    model: str | Path | None = None,
    kernels="auto",
    dtype: mx.Dtype | None = None,
    quantize: tuple[int, int] | None = None,
    parallel: str | None = None,
) -> LoadedModel:
    """MODEL (directory, .gguf, alias, repo id; None = the default) -> LoadedModel.

    kernels: "auto" | "metal" | "mlx" | "msl" | "reference", or a backend object
    (e.g. CountingBackend(MLXBackend())). The model keeps it: two models loaded
    with different backends run side by side.
    quantize=(bits, group_size) quantizes float weights while loading, exactly as
    `fsx quantize` would write them (formats/quantize.py).
    parallel="tensor" | "pipeline": this process is one rank of a launched job
    and loads only its share of the model (model/parallel.py, distributed.py).
    """
    backend = make_backend(kernels) if isinstance(kernels, str) else kernels
    where = resolve(model)
    index = None
    if where.kind == "gguf":
        from .formats.gguf import load_gguf

        config, tensors, tokenizer = load_gguf(where.path)
    else:
        config = load_config(where.path)
        foreign = config.extra.get("quantization_config")
        if foreign and not config.quantization:  # GPTQ, AWQ, bitsandbytes, FP8, ...
            method = foreign.get("quant_method", "?") if isinstance(foreign, dict) else "?"
            raise FsxError(f"{model}: {method}-quantized checkpoints are not supported; use a float "
                           "or an MLX-quantized (mlx-community) checkpoint")
        index = tensor_index(where.path)  # headers only: nothing allocated yet
        check_against_tensors(config, {k: t.shape for k, t in index.items()}, str(where.path))
        tokenizer = Tokenizer.from_dir(where.path)
        tensors = load_indexed(index)
    if quantize is not None:
        config, tensors = quantize_on_load(config, tensors, *quantize)
        index = None  # the tensors are no longer the file's
    dtype = dtype or compute_dtype(config)
    split = join_ranks(parallel, config, backend, dtype) if parallel else None
    transformer = build_model(config, tensors, index, dtype, backend, split)
    return LoadedModel(transformer, tokenizer, config, where.path, dtype)


def quantize_on_load(
    config: ModelConfig, tensors: dict[str, mx.array], bits: int, group_size: int
) -> tuple[ModelConfig, dict[str, mx.array]]:
    from .formats.quantize import cast_floats, quantize_tensors, storage_dtype
    from .model.quantized import check_spec

    check_spec(bits, group_size)
    if config.quantization:
        raise FsxError(f"the model is already quantized ({config.quantization}); "
                       "--quantize needs float weights")
    skeleton = Transformer(config, ops=None)  # structure only: its arrays are never evaluated
    tensors = cast_floats(skeleton.sanitize(tensors), storage_dtype({"torch_dtype": config.torch_dtype}))
    tensors, block = quantize_tensors(skeleton, tensors, bits, group_size)
    return dataclasses.replace(config, quantization=block), tensors


def join_ranks(parallel: str, config: ModelConfig, backend, dtype: mx.Dtype):
    """This process's Split among the launched ranks, once all of them agree on what they run."""
    from . import __version__, distributed
    from .model.parallel import MODES, Split

    if parallel not in MODES:
        raise FsxError(f"--parallel must be one of {', '.join(MODES)}, not {parallel!r}")
    world = distributed.join()
    distributed.agree(world, software=f"fs-mlx {__version__}, mlx {mx.__version__}",
                      model=f"{config!r} {parallel} {backend.name} {dtype}")
    return Split(parallel, world.group)


def build_model(
    config: ModelConfig,
    tensors: dict[str, mx.array],
    index: dict[str, TensorInfo] | None,
    dtype: mx.Dtype,
    backend,
    split=None,
) -> Transformer:
    """A Transformer for `config` computing with `backend`, filled with `tensors` (checked, cast).

    With a `split` (model/parallel.py) it is this rank's share of the model.
    """
    if split is not None:
        tensors = Transformer(config, ops=None).sanitize(tensors)  # names as the split knows them
        config, tensors = split.local(config, tensors, index)
    model = Transformer(config, backend)
    if split is not None and split.mode == "pipeline":
        from .model.parallel import make_pipeline

        make_pipeline(model, config, split.group)
    tensors = model.sanitize(tensors)
    if config.quantization:
        from .model.quantized import (
            quantize_structure,  # swaps Linear layers for quantized ones
        )

        quantize_structure(model, config.quantization, tensors)
    check_tensors(model, tensors, index or {})
    tensors = {
        k: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) else v
        for k, v in tensors.items()
    }
    model.load_weights(list(tensors.items()), strict=True)
    model = fuse(model)  # q/k/v and gate/up joined; evaluates the parameters
    if split is not None and split.mode == "tensor":
        from .model.parallel import add_sums

        add_sums(model, split.group)
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
        from .formats.gguf import read_header
        from .formats.gguf_tokenizer import build_tokenizer

        return build_tokenizer(read_header(where.path))
    return Tokenizer.from_dir(where.path)
