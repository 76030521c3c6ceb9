"""ModelConfig: the architecture, read from a checkpoint's config.json.

Field names are the Hugging Face ones (`hidden_size`, `num_key_value_heads`,
...), so the checkpoint's vocabulary flows through unchanged; unknown keys
are ignored. One dataclass covers every supported architecture: the
families differ by the named fields of ARCHITECTURES (what a family fixes)
and by a few config.json fields of their own (docs/forward-pass.md has the
table).

config.json is untrusted input (docs/trust.md), so the dataclass is a pydantic
schema: each field is declared once, with its type and range, and pydantic
checks them all (strictly: "64" is not 64, 1e9 is not an integer, "yes" is not
true). The rules between fields follow in `__post_init__`; the rules between
the config and the weights (`check_against_tensors`) run before any layer is
built, so a config that claims a billion layers costs nothing. To add a field,
add one line: `name: Type = default` (a bounded `Annotated` type for sizes;
`list[...]`, not tuple, for JSON arrays).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any

import mlx.core as mx
from pydantic import ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass

from ..errors import FsxError
from ..files import read_json
from .rope import check_scaling

# model_type -> what that family fixes, whatever its config.json says:
#   qk_norm         attention RMS-normalises q and k per head (over head_dim) before RoPE
#   qkv_bias        q/k/v projections have a bias (o_proj has one only with attention_bias)
#   norm_plus_one   RMSNorm multiplies by (1 + w): Gemma stores w around 0
#   embed_scale     embeddings are multiplied by sqrt(hidden_size)
#   sandwich_norms  each sub-layer's output is normed too: four norms per block (Gemma 3)
#   sliding_layers  which layers attend through a sliding window (see layer_types):
#                   "none", "all" (when sliding_window is set), "qwen" (layers from
#                   max_window_layers on, when use_sliding_window), "pattern" (every
#                   sliding_window_pattern-th layer is global, the others local)
#   moe             mixture-of-experts MLPs (model/moe.py)
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "llama": {"qk_norm": False, "sliding_layers": "none"},
    "qwen3": {"qk_norm": True, "sliding_layers": "qwen"},
    "qwen2": {"qk_norm": False, "qkv_bias": True, "sliding_layers": "qwen"},
    "mistral": {"qk_norm": False, "sliding_layers": "all"},
    "phi3": {"qk_norm": False, "sliding_layers": "all"},
    "gemma3_text": {"qk_norm": True, "norm_plus_one": True, "embed_scale": True,
                    "sandwich_norms": True, "sliding_layers": "pattern"},
    "qwen3_moe": {"qk_norm": True, "sliding_layers": "qwen", "moe": True},
}

# What transformers assumes when config.json leaves a field out, where it differs
# from ModelConfig's defaults below.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "mistral": {"sliding_window": 4096},
    "gemma3_text": {"head_dim": 256, "query_pre_attn_scalar": 256, "sliding_window": 4096,
                    "rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0,
                    "sliding_window_pattern": 6, "tie_word_embeddings": True,
                    "hidden_activation": "gelu_pytorch_tanh"},
}
ACTIVATIONS = ("silu", "swish", "gelu_pytorch_tanh")  # SwiGLU, or GeGLU with tanh-approximated GELU
LAYER_TYPES = ("full_attention", "sliding_attention")

# These have no sensible default: a checkpoint that lacks one is broken.
# The float types a checkpoint may store (config.json's torch_dtype / dtype) -> MLX's.
FLOAT_DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}

FIXED_BY_ARCHITECTURE = {name for arch in ARCHITECTURES.values() for name in arch}

REQUIRED_FIELDS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "num_attention_heads",
    "vocab_size",
)

# Bounds that keep every shape and product inside MLX's 32-bit dimensions, each far
# above any real model (largest today: hidden 16384, 126 layers, 128 heads, 262k vocab).
# The real bound is tighter: the weights must have exactly these shapes.
MAX_WIDTH = 1 << 20  # hidden_size, intermediate_size
MAX_LAYERS = 1 << 12
MAX_HEADS = 1 << 12  # also head_dim
MAX_VOCAB = 1 << 24
MAX_POSITIONS = (1 << 31) - 1

Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]
Heads = Annotated[int, Field(ge=1, le=MAX_HEADS)]
TokenId = Annotated[int, Field(ge=0, lt=MAX_VOCAB)]
Positive = Annotated[float, Field(gt=0)]


@dataclass(config=ConfigDict(strict=True, allow_inf_nan=False))
class ModelConfig:
    model_type: str
    hidden_size: Width
    num_hidden_layers: Annotated[int, Field(ge=1, le=MAX_LAYERS)]
    intermediate_size: Width
    num_attention_heads: Heads
    vocab_size: Annotated[int, Field(ge=1, le=MAX_VOCAB)]
    num_key_value_heads: Heads | None = None  # None: multi-head (= num_attention_heads)
    head_dim: Heads | None = None  # None: hidden_size // num_attention_heads
    rms_norm_eps: Annotated[float, Field(gt=0, lt=1)] = 1e-6
    rope_theta: Positive = 10000.0
    rope_scaling: dict[str, Any] | None = None
    rope_traditional: bool = False  # True: interleaved pairs (llama.cpp order)
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    max_position_embeddings: Annotated[int, Field(ge=1, le=MAX_POSITIONS)] = 4096
    hidden_act: str = "silu"
    torch_dtype: str | None = None  # the checkpoint's storage dtype, as written
    eos_token_id: TokenId | list[TokenId] | None = None
    bos_token_id: TokenId | None = None
    # mlx-community quantized checkpoints: {"group_size": 64, "bits": 4, ...}
    quantization: dict[str, Any] | None = None
    # partial rotary (Phi-4-mini): only head_dim * factor features rotate
    partial_rotary_factor: Annotated[float, Field(gt=0, le=1)] = 1.0
    original_max_position_embeddings: Annotated[int, Field(ge=1, le=MAX_POSITIONS)] | None = None
    # sliding windows: a query sees itself and the sliding_window - 1 keys before it
    sliding_window: Annotated[int, Field(ge=1, le=MAX_POSITIONS)] | None = None
    use_sliding_window: bool = True  # Qwen's switch (False in their configs)
    max_window_layers: Annotated[int, Field(ge=0, le=MAX_LAYERS)] = 0  # Qwen: layers from here on slide
    sliding_window_pattern: Annotated[int, Field(ge=1, le=MAX_LAYERS)] = 6  # Gemma 3: every 6th is global
    layer_types: list[str] | None = None  # per layer: "full_attention" | "sliding_attention"
    # Gemma 3
    hidden_activation: str | None = None  # Gemma's name for hidden_act
    query_pre_attn_scalar: Positive | None = None  # attention scale = this^-0.5 (None: head_dim)
    rope_local_base_freq: Positive | None = None  # RoPE base of the sliding layers (None: rope_theta)
    final_logit_softcapping: Positive | None = None  # logits = c * tanh(logits / c)
    attn_logit_softcapping: float | None = None  # not supported (Gemma 2)
    # Mixture of experts (Qwen3-MoE)
    num_experts: Annotated[int, Field(ge=0, le=MAX_HEADS)] = 0
    num_experts_per_tok: Annotated[int, Field(ge=0, le=MAX_HEADS)] = 0
    moe_intermediate_size: Annotated[int, Field(ge=0, le=MAX_WIDTH)] = 0
    norm_topk_prob: bool = False  # renormalise the top-k router weights to sum to 1
    decoder_sparse_step: Annotated[int, Field(ge=1, le=MAX_LAYERS)] = 1  # every step-th layer is MoE ...
    mlp_only_layers: list[Annotated[int, Field(ge=0, le=MAX_LAYERS)]] = field(default_factory=list)  # ... but these
    # set from ARCHITECTURES[model_type]
    qk_norm: bool = False
    qkv_bias: bool = False
    norm_plus_one: bool = False
    embed_scale: bool = False
    sandwich_norms: bool = False
    sliding_layers: str = "none"
    moe: bool = False
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.model_type not in ARCHITECTURES:  # the more useful message: first
            self.validate()
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            if self.hidden_size < self.num_attention_heads:
                raise FsxError(f"hidden_size ({self.hidden_size}) is smaller than "
                               f"num_attention_heads ({self.num_attention_heads}) and no head_dim is given")
            self.head_dim = self.hidden_size // self.num_attention_heads
        self.validate()
        for name, value in ARCHITECTURES[self.model_type].items():
            setattr(self, name, value)
        if self.layer_types is None:
            self.layer_types = self._default_layer_types()
        if len(self.layer_types) != self.num_hidden_layers or not set(self.layer_types) <= set(LAYER_TYPES):
            raise FsxError(f"layer_types must list {self.num_hidden_layers} entries of "
                           "'full_attention' or 'sliding_attention'")
        if "sliding_attention" in self.layer_types and not self.sliding_window:
            raise FsxError("layer_types has sliding_attention layers but sliding_window is not set")

    def _default_layer_types(self) -> list[str]:
        """Which layers slide, by the family's rule (transformers' config classes)."""
        n, rule = self.num_hidden_layers, self.sliding_layers
        if rule == "all" and self.sliding_window:
            sliding = [True] * n
        elif rule == "qwen" and self.sliding_window and self.use_sliding_window:
            sliding = [i >= self.max_window_layers for i in range(n)]
        elif rule == "pattern":
            sliding = [(i + 1) % self.sliding_window_pattern != 0 for i in range(n)]
        else:
            sliding = [False] * n
        return ["sliding_attention" if s else "full_attention" for s in sliding]

    @property
    def activation(self) -> str:
        """The gated MLP's activation: silu (SwiGLU) or gelu_pytorch_tanh (GeGLU)."""
        return self.hidden_activation or self.hidden_act

    @property
    def rope_dims(self) -> int:
        """Features per head that RoPE rotates (all of them unless partial_rotary_factor < 1)."""
        return int(self.head_dim * self.partial_rotary_factor)

    def is_sliding(self, layer: int) -> bool:
        return self.layer_types[layer] == "sliding_attention"

    def is_moe_layer(self, layer: int) -> bool:
        return (self.moe and self.num_experts > 0 and layer not in self.mlp_only_layers
                and (layer + 1) % self.decoder_sparse_step == 0)

    def validate(self) -> None:
        """The rules between fields (pydantic has checked each field alone)."""
        if self.model_type not in ARCHITECTURES:
            supported = ", ".join(sorted(ARCHITECTURES))
            raise FsxError(
                f"unsupported architecture model_type={self.model_type!r}; "
                f"fs-mlx supports: {supported}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise FsxError(
                f"num_attention_heads ({self.num_attention_heads}) is not a multiple "
                f"of num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim % 2:
            raise FsxError(f"head_dim must be even (RoPE rotates pairs of features), got {self.head_dim}")
        act = self.hidden_activation or self.hidden_act
        if act not in ACTIVATIONS:
            raise FsxError(f"unsupported hidden_act {act!r}; supported: {', '.join(ACTIVATIONS)}")
        if int(self.head_dim * self.partial_rotary_factor) % 2:
            raise FsxError(f"partial_rotary_factor {self.partial_rotary_factor} of head_dim {self.head_dim} "
                           "rotates an odd number of features")
        if self.attn_logit_softcapping is not None:
            raise FsxError("attn_logit_softcapping is not supported (Gemma 2); Gemma 3 has none")
        if self.extra.get("use_bidirectional_attention"):
            raise FsxError("use_bidirectional_attention is not supported (an encoder, not a language model)")
        if ARCHITECTURES[self.model_type].get("moe") and (
                self.num_experts <= 0 or not 0 < self.num_experts_per_tok <= self.num_experts
                or self.moe_intermediate_size <= 0):
            raise FsxError(f"{self.model_type}: num_experts, num_experts_per_tok (1..num_experts) "
                           "and moe_intermediate_size must be positive")
        if problem := check_scaling(self.rope_scaling):
            raise FsxError(problem)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config.json") -> "ModelConfig":
        model_type = d.get("model_type")
        if model_type is not None and not isinstance(model_type, str):
            raise FsxError(f"{source}: model_type must be a string, got {_show(model_type)}")
        # An unsupported architecture is the more useful message: check it first.
        if model_type is not None and model_type not in ARCHITECTURES:
            supported = ", ".join(sorted(ARCHITECTURES))
            raise FsxError(
                f"{source}: unsupported architecture model_type={_show(model_type)}; "
                f"fs-mlx supports: {supported}"
            )
        missing = [k for k in REQUIRED_FIELDS if d.get(k) is None]
        if missing:
            raise FsxError(f"{source}: missing required field(s): {', '.join(missing)}")
        d = dict(d)
        # transformers 5 moves rope_theta (and the scaling) into rope_parameters.
        rope_params = d.get("rope_parameters") or {}
        if not isinstance(rope_params, dict):
            raise FsxError(f"{source}: rope_parameters must be an object, got {_show(rope_params)}")
        if isinstance(rope_params.get("full_attention"), dict) or isinstance(rope_params.get("sliding_attention"), dict):
            # transformers 5's Gemma 3: one RoPE block per layer type
            local = rope_params.get("sliding_attention") or {}
            if isinstance(local, dict) and "rope_theta" in local:
                d["rope_local_base_freq"] = local["rope_theta"]
            rope_params = rope_params.get("full_attention") or {}
            if not isinstance(rope_params, dict):
                raise FsxError(f"{source}: rope_parameters.full_attention must be an object")
        if "partial_rotary_factor" in rope_params and "partial_rotary_factor" not in d:
            d["partial_rotary_factor"] = rope_params["partial_rotary_factor"]
        if "rope_theta" not in d and "rope_theta" in rope_params:
            d["rope_theta"] = rope_params["rope_theta"]
        if d.get("rope_scaling") is None and rope_params.get("rope_type") not in (None, "default"):
            d["rope_scaling"] = rope_params
        if d.get("torch_dtype") is None and d.get("dtype") is not None:
            d["torch_dtype"] = d["dtype"]
        if d.get("num_experts") is None and d.get("num_local_experts") is not None:
            d["num_experts"] = d["num_local_experts"]  # transformers 5's name when it saves Qwen3-MoE
        scaling = d.get("rope_scaling")
        if isinstance(scaling, dict):
            scaling = dict(scaling)
            if model_type == "phi3" and scaling.get("type", scaling.get("rope_type")) in ("su", "yarn"):
                scaling["rope_type"] = "longrope"  # Phi-3's old names for it, as transformers reads them
            if "original_max_position_embeddings" not in scaling and d.get("original_max_position_embeddings"):
                scaling["original_max_position_embeddings"] = d["original_max_position_embeddings"]
            d["rope_scaling"] = scaling
        # A missing field (not an explicit null) gets the family's default.
        for k, v in FAMILY_DEFAULTS.get(model_type, {}).items():
            d.setdefault(k, v)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", *FIXED_BY_ARCHITECTURE}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        try:
            return cls(**known, extra=extra)
        except ValidationError as e:
            raise FsxError(f"{source}: {_explain(e)}") from None
        except FsxError as e:
            raise FsxError(f"{source}: {e}") from None


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _explain(error: ValidationError) -> str:
    """pydantic's errors -> one line: 'field: what is wrong (got value)', per bad field."""
    by_field: dict[str, list[dict]] = {}
    for e in error.errors():
        by_field.setdefault(str(e["loc"][0]) if e["loc"] else "config", []).append(e)
    parts = []
    for name, errors in by_field.items():
        # In a union (int | list[int] | None) a range error says more than "not a list".
        ranged = [e for e in errors if not e["type"].endswith("_type")]
        if len(errors) > 1 and not ranged:
            what = "must be " + " or ".join(dict.fromkeys(_type_name(e) for e in errors))
        else:
            what = (ranged or errors)[0]["msg"].lower().removeprefix("input should be ")
            what = what.replace("a valid integer", "an integer").replace("a valid ", "a ")
            what = what if what.startswith(("must", "field")) else f"must be {what}"
        parts.append(f"{name} {what}, got {_show(errors[0]['input'])}")
    more = f" (and {len(parts) - 3} more)" if len(parts) > 3 else ""
    return "; ".join(parts[:3]) + more


def _type_name(e: dict) -> str:
    loc = [p for p in e["loc"][1:] if isinstance(p, str)]
    return re.sub(r"constrained-int", "int", loc[0]) if loc else e["type"].removesuffix("_type")


def read_config_json(model_dir: Path) -> dict[str, Any]:
    """config.json as written: a bounded, regular-file JSON object (or one clear error)."""
    path = Path(model_dir) / "config.json"
    if not path.exists():
        raise FsxError(f"{model_dir}: no config.json (expected a Hugging Face model directory)")
    d = read_json(path)
    if not isinstance(d, dict):
        raise FsxError(f"{path}: expected a JSON object")
    return d


def load_config(model_dir: Path) -> ModelConfig:
    return ModelConfig.from_dict(read_config_json(model_dir), source=str(Path(model_dir) / "config.json"))


# --- the config against the weights ------------------------------------------------

_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def check_against_tensors(config: ModelConfig, shapes: dict[str, tuple[int, ...]], source: str) -> None:
    """Refuse a config that the tensor index contradicts, before any layer is built.

    `shapes`: Hugging Face tensor name -> stored shape, from the safetensors headers
    or the GGUF tensor table (nothing read but headers). The layer count, the
    vocabulary and the width are what building a model costs; each must be what
    the stored tensors hold. The rest (heads, intermediate size) is checked tensor
    by tensor after the (lazy, unallocated) model exists: loader.check_tensors.
    """
    layers = {int(m.group(1)) for name in shapes if (m := _LAYER.match(name))}
    if layers != set(range(config.num_hidden_layers)):
        have = f"layers 0..{max(layers)} ({len(layers)} distinct)" if layers else "no layers"
        raise FsxError(f"{source}: config says num_hidden_layers={config.num_hidden_layers}, "
                       f"the weights hold {have}")
    embed = shapes.get("model.embed_tokens.weight")
    if embed is not None and (not embed or embed[0] != config.vocab_size):
        raise FsxError(f"{source}: config says vocab_size={config.vocab_size}, the embedding "
                       f"model.embed_tokens.weight has shape {list(embed)}")
    norm = shapes.get("model.norm.weight")
    if norm is not None and tuple(norm) != (config.hidden_size,):
        raise FsxError(f"{source}: config says hidden_size={config.hidden_size}, the final norm "
                       f"model.norm.weight has shape {list(norm)}")
