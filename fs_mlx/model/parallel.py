"""One model across N processes ("ranks"): tensor and pipeline parallelism.

Tensor parallelism (Megatron-LM's split; mlx-lm's `shard` does the same).
Rank r of N holds 1/N of every block:

    attention  q, k, v   column-split by heads: rows of q_proj [Hq*D, hidden] for heads
                         r*Hq/N .. (r+1)*Hq/N, and the kv heads those query heads read
               o         row-split: the matching columns of o_proj [hidden, Hq*D]
    MLP        gate, up  column-split: rows r*inter/N .. of [inter, hidden]
               down      row-split: the matching columns of down_proj [hidden, inter]

A row-split layer sees only its share of the inputs, so its output is a
partial sum; one `all_sum` over the ranks completes it (`SumOverRanks`). That is
two all_sums of [B, L, hidden] per block, and nothing else crosses the wire:
embedding, norms and lm_head are replicated, so every rank ends with the same
logits and samples the same token. (The head could be vocab-split too, at the
price of an all_gather of the logits every token: docs/distributed.md.)

So each rank's model is an ordinary Transformer of a narrower config
(Hq/N heads, Hkv/N kv heads, inter/N) plus SumOverRanks after o_proj and
down_proj: every backend, Metal kernels included, just sees smaller shapes.

Pipeline parallelism: rank r holds a run of consecutive layers. Rank 0 embeds
the tokens, every rank runs its layers and sends the activations [B, L, hidden]
to the next rank; the last rank's output is gathered back to every rank, which
applies the (replicated) final norm and head. One hop per rank boundary instead
of two all_sums per layer, but the ranks take turns rather than work at once.

Both splits act on the checkpoint's tensors (after `sanitize`, before loading),
so a rank never holds, and from safetensors never reads, the other ranks' parts.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from ..errors import FsxError
from .config import ModelConfig
from .transformer import TransformerBody

MODES = ("tensor", "pipeline")
# Tensor parallelism knows these layouts (q/k/v, o, gate/up, down as separate
# dense or quantized layers); pipeline mode moves whole layers of any family.
TENSOR_FAMILIES = ("llama", "qwen3")

# Tensor parallelism: which layers split along their outputs (rows of the stored
# [out, in] matrix) and which along their inputs (columns).
COLUMN_SPLIT = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj")
ROW_SPLIT = ("self_attn.o_proj", "mlp.down_proj")

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class Split:
    """How this process's share of the model is chosen: mode, and the ranks' group."""

    mode: str  # "tensor" | "pipeline"
    group: Any  # mx.distributed.Group

    @property
    def rank(self) -> int:
        return self.group.rank()

    @property
    def size(self) -> int:
        return self.group.size()

    def local(self, config: ModelConfig, tensors: dict[str, mx.array], index: dict | None):
        """(this rank's config, this rank's tensors) from the whole model's."""
        if self.mode == "tensor":
            return tensor_config(config, self.size), tensor_shard(tensors, self.rank, self.size, index)
        first, stop = pipeline_layers(config.num_hidden_layers, self.rank, self.size)
        if config.moe and config.decoder_sparse_step != 1:
            raise FsxError("--parallel pipeline: decoder_sparse_step other than 1 is not supported")
        # Per-layer fields follow the layers: this rank's layer i is the model's first + i.
        local = dataclasses.replace(
            config, num_hidden_layers=stop - first, layer_types=config.layer_types[first:stop],
            mlp_only_layers=[i - first for i in config.mlp_only_layers if first <= i < stop])
        return local, pipeline_shard(tensors, first, stop)


# --- tensor parallelism ------------------------------------------------------------

def tensor_config(config: ModelConfig, n: int) -> ModelConfig:
    """The config of one rank's share: 1/n of the heads and of the MLP width."""
    if config.model_type not in TENSOR_FAMILIES:
        raise FsxError(f"--parallel tensor supports {' and '.join(TENSOR_FAMILIES)} checkpoints, "
                       f"not {config.model_type}; use --parallel pipeline (splits layers, any family)")
    hq, hkv, inter = config.num_attention_heads, config.num_key_value_heads, config.intermediate_size
    for what, count in (("num_attention_heads", hq), ("num_key_value_heads", hkv),
                        ("intermediate_size", inter)):
        if count % n:
            raise FsxError(f"--parallel tensor: {what} ({count}) does not divide by {n} ranks; "
                           "use --parallel pipeline (splits layers, not heads)")
    return dataclasses.replace(config, num_attention_heads=hq // n, num_key_value_heads=hkv // n,
                               intermediate_size=inter // n)


def tensor_shard(tensors: dict[str, mx.array], rank: int, n: int, index: dict | None) -> dict[str, mx.array]:
    """Rank `rank`'s slice of every split tensor; the replicated ones as they are.

    Quantized layers split the same way: their weight/scales/biases rows are
    the output rows, and along the inputs they must split on whole groups.
    A row-split layer's bias is added once, after the sum: rank 0 keeps it.
    """
    out = {}
    for name, t in tensors.items():
        layer, _, tensor = name.rpartition(".")
        if layer.endswith(COLUMN_SPLIT):
            out[name] = _take(name, t, 0, rank, n, index)
        elif layer.endswith(ROW_SPLIT) and tensor == "bias":
            out[name] = t if rank == 0 else mx.zeros_like(t)
        elif layer.endswith(ROW_SPLIT):
            if f"{layer}.scales" in tensors:  # quantized: the inputs split on whole groups
                groups = tensors[f"{layer}.scales"].shape[1]
                if groups % n:
                    raise FsxError(
                        f"--parallel tensor: {layer} is quantized in {groups} groups along its "
                        f"inputs, which do not split into {n} equal parts; use --parallel pipeline "
                        "or a checkpoint with a smaller group size")
            out[name] = _take(name, t, 1, rank, n, index)
        else:
            out[name] = t
    return out


def _take(name: str, t: mx.array, axis: int, rank: int, n: int, index: dict | None) -> mx.array:
    """Part `rank` of n of t along `axis`, as its own array (not a view of the whole)."""
    size = t.shape[axis] // n
    start, stop = rank * size, (rank + 1) * size
    info = (index or {}).get(name)
    if info is not None and tuple(info.shape) == tuple(t.shape):
        from ..formats.safetensors import read_slice  # only the slice's bytes are read

        return read_slice(info, axis, start, stop)
    # GGUF, or quantized while loading: the whole tensor is read; copy out the slice
    # so that the whole one is freed once loading ends (a slice would keep it alive).
    part = t[start:stop] if axis == 0 else t[:, start:stop]
    return mx.array(part)


class SumOverRanks(nn.Module):
    """A row-split layer: its output on each rank is a partial sum; all_sum completes it."""

    def __init__(self, layer: nn.Module, group):
        super().__init__()
        self.layer = layer
        self.group = group

    def __call__(self, x: mx.array) -> mx.array:
        return mx.distributed.all_sum(self.layer(x), group=self.group)  # [..., hidden]


def add_sums(model: nn.Module, group) -> None:
    """After loading: an all_sum after every row-split layer (o_proj, down_proj)."""
    for layer in model.layers:
        layer.self_attn.o_proj = SumOverRanks(layer.self_attn.o_proj, group)
        layer.mlp.down_proj = SumOverRanks(layer.mlp.down_proj, group)


# --- pipeline parallelism ----------------------------------------------------------

def pipeline_layers(n_layers: int, rank: int, n: int) -> tuple[int, int]:
    """Layers first..stop-1 of rank `rank`: n_layers split into n runs, earlier runs longer by one."""
    if n_layers < n:
        raise FsxError(f"--parallel pipeline: {n} ranks but only {n_layers} layers to share")
    base, extra = divmod(n_layers, n)
    first = rank * base + min(rank, extra)
    return first, first + base + (1 if rank < extra else 0)


def pipeline_shard(tensors: dict[str, mx.array], first: int, stop: int) -> dict[str, mx.array]:
    """Layers first..stop-1, renumbered from 0; everything outside the layers replicated.

    Tensors of other ranks' layers are dropped before they are ever read (loading is lazy).
    """
    out = {}
    for name, t in tensors.items():
        m = _LAYER.match(name)
        if m is None:
            out[name] = t
        elif first <= int(m.group(1)) < stop:
            out[f"model.layers.{int(m.group(1)) - first}.{m.group(2)}"] = t
    return out


class PipelineBody(TransformerBody):
    """TransformerBody for one pipeline stage: receive, run my layers, pass on.

    Every rank returns the same thing as the whole body would: the last
    stage's output, gathered back to everyone (so each rank computes the same
    logits and samples the same token), then the final norm.
    """

    def __init__(self, config: ModelConfig, ops, group):
        super().__init__(config, ops)
        self.group = group

    def __call__(self, tokens: mx.array, cache=None, trace: dict | None = None) -> mx.array:
        rank, n = self.group.rank(), self.group.size()
        B, L = tokens.shape
        dtype = self.norm.weight.dtype
        if rank == 0:
            h = self.embed(tokens)  # [B, L, hidden]
        else:
            h = mx.distributed.recv((B, L, self.norm.weight.shape[0]), dtype, rank - 1, group=self.group)
        # as in TransformerBody: the cache knows which keys each query may see
        mask = cache[0].make_mask(L) if cache is not None else ("causal" if L > 1 else None)
        for i, layer in enumerate(self.layers):
            h = layer(h, mask, cache[i] if cache is not None else None)
        if rank < n - 1:
            h = mx.distributed.send(h, rank + 1, group=self.group)  # evaluates to h, once sent
        # Everyone gets the last stage's output: [n*B, L, hidden] -> its last B rows.
        h = mx.distributed.all_gather(h, group=self.group)[(n - 1) * B:]
        return self.norm(h)


def make_pipeline(model: nn.Module, config: ModelConfig, group) -> None:
    """Before loading: swap the model's body for a pipeline stage of the same layers."""
    model.model = PipelineBody(config, model.ops, group)
