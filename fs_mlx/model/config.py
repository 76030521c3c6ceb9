"""ModelConfig: the architecture, read from a checkpoint's config.json.

Field names are the Hugging Face ones (`hidden_size`, `num_key_value_heads`,
...), so the checkpoint's vocabulary flows through unchanged; unknown keys
are ignored. One dataclass covers every supported architecture: Qwen3 is a
Llama with per-head QK-norm and no attention bias.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx

from ..errors import FsxError
from .rope import SCALING_TYPES, scaling_type

# model_type -> what that family fixes, whatever its config.json says:
#   qk_norm  attention RMS-normalises q and k per head (over head_dim) before RoPE
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "qwen3": {"qk_norm": True},
    "llama": {"qk_norm": False},
}

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


@dataclass
class ModelConfig:
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    vocab_size: int
    num_key_value_heads: int | None = None  # None: multi-head (= num_attention_heads)
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    rope_traditional: bool = False  # True: interleaved pairs (llama.cpp order)
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    max_position_embeddings: int = 4096
    hidden_act: str = "silu"
    torch_dtype: str | None = None  # the checkpoint's storage dtype, as written
    eos_token_id: int | list[int] | None = None
    bos_token_id: int | None = None
    # mlx-community quantized checkpoints: {"group_size": 64, "bits": 4, ...}
    quantization: dict[str, Any] | None = None
    qk_norm: bool = False  # set from ARCHITECTURES[model_type]
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        self.validate()
        for name, value in ARCHITECTURES[self.model_type].items():
            setattr(self, name, value)

    def validate(self) -> None:
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
        if self.hidden_act not in ("silu", "swish"):
            raise FsxError(f"unsupported hidden_act {self.hidden_act!r}; only silu (SwiGLU)")
        kind = scaling_type(self.rope_scaling)
        if kind is not None and kind not in SCALING_TYPES:
            raise FsxError(f"unsupported rope_scaling type {kind!r}; supported: {', '.join(SCALING_TYPES)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config.json") -> "ModelConfig":
        # An unsupported architecture is the more useful message: check it first.
        if d.get("model_type") is not None and d["model_type"] not in ARCHITECTURES:
            supported = ", ".join(sorted(ARCHITECTURES))
            raise FsxError(
                f"{source}: unsupported architecture model_type={d['model_type']!r}; "
                f"fs-mlx supports: {supported}"
            )
        missing = [k for k in REQUIRED_FIELDS if d.get(k) is None]
        if missing:
            raise FsxError(f"{source}: missing required field(s): {', '.join(missing)}")
        d = dict(d)
        # transformers 5 moves rope_theta (and the scaling) into rope_parameters.
        rope_params = d.get("rope_parameters") or {}
        if "rope_theta" not in d and "rope_theta" in rope_params:
            d["rope_theta"] = rope_params["rope_theta"]
        if d.get("rope_scaling") is None and rope_params.get("rope_type") not in (None, "default"):
            d["rope_scaling"] = rope_params
        if d.get("torch_dtype") is None and d.get("dtype") is not None:
            d["torch_dtype"] = d["dtype"]
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", *FIXED_BY_ARCHITECTURE}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        try:
            return cls(**known, extra=extra)
        except (TypeError, ValueError, ZeroDivisionError) as e:
            raise FsxError(f"{source}: invalid value: {e}") from None


def load_config(model_dir: Path) -> ModelConfig:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FsxError(f"{model_dir}: no config.json (expected a Hugging Face model directory)")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FsxError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise FsxError(f"{path}: expected a JSON object")
    return ModelConfig.from_dict(d, source=str(path))
