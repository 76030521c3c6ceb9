"""Rotary position embedding: the frequencies, and every scaling rule, in one place.

RoPE rotates each pair of features (x_a, x_b) of a query or key by an angle
that grows with the token's position p:

    theta_j = p * scale * inv_freq[j],      inv_freq[j] = base^(-2j / dims),  j = 0 .. dims/2 - 1
    (x_a, x_b) -> (x_a cos theta_j - x_b sin theta_j,  x_a sin theta_j + x_b cos theta_j)

The pairs are (j, j + dims/2) in Hugging Face's rotate-half order, or
(2j, 2j + 1) in the "traditional" interleaved order llama.cpp uses. Only the
first `dims` features rotate; the rest pass through (partial rotary).

Scaling rules stretch long contexts by changing the frequencies or positions:
  linear  positions divided by `factor` (scale = 1 / factor)
  llama3  low frequencies divided by `factor`, high ones kept, a smooth ramp
          between (Llama 3.1's rule, as transformers computes it)

`Rope` below is what a model holds: computed once at build time, handed to
every backend (MLX's `mx.fast.rope` wants `base` or the *periods*
1 / inv_freq; the kernels and the plain reference want `inv_freq`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from ..errors import FsxError

SCALING_TYPES = ("linear", "llama3")


@dataclass(frozen=True, eq=False)
class Rope:
    dims: int  # features rotated (<= head_dim, even)
    traditional: bool  # True: interleaved pairs (2j, 2j+1); False: rotate-half (j, j+dims/2)
    scale: float  # positions are multiplied by this (linear scaling: 1 / factor)
    base: float | None  # the plain rule's base, or None when the frequencies are custom
    inv_freq: mx.array  # float32 [dims / 2]: angle per unit of (scaled) position
    periods: mx.array | None  # float32 [dims / 2]: 1 / inv_freq, mx.fast.rope's `freqs` (None: use base)


def scaling_type(scaling: dict[str, Any] | None) -> str | None:
    """config.json's rope_scaling block -> its rule name (None or 'default': plain RoPE)."""
    if not scaling:
        return None
    kind = scaling.get("rope_type") or scaling.get("type")
    return None if kind == "default" else kind


# Each rule's numbers in config.json's rope_scaling block: name -> required? All must be
# finite and > 0 (a factor of 0 divides by zero; a negative one runs backwards).
SCALING_FIELDS: dict[str, dict[str, bool]] = {
    "linear": {"factor": True},
    "llama3": {"factor": True, "low_freq_factor": False, "high_freq_factor": False,
               "original_max_position_embeddings": False},
}


def check_scaling(scaling: dict[str, Any] | None) -> str | None:
    """What is wrong with a rope_scaling block (None: nothing). Checked when the config loads."""
    if scaling is None:
        return None
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind is not None and not isinstance(kind, str):
        return f"rope_scaling type must be a string, got {kind!r}"
    kind = scaling_type(scaling)
    if kind is None:
        return None
    if kind not in SCALING_TYPES:
        return f"unsupported rope_scaling type {kind!r}; supported: {', '.join(SCALING_TYPES)}"
    for name, required in SCALING_FIELDS.get(kind, {}).items():
        value = scaling.get(name)
        if value is None and not required:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            return f"rope_scaling {kind!r} needs {name} > 0 (a finite number), got {value!r}"
    if kind == "llama3" and scaling.get("high_freq_factor", 4.0) <= scaling.get("low_freq_factor", 1.0):
        return "rope_scaling 'llama3' needs high_freq_factor > low_freq_factor"
    return None


def make_rope(dims: int, base: float, traditional: bool, scaling: dict[str, Any] | None) -> Rope:
    """The RoPE a model with these config values uses."""
    kind = scaling_type(scaling)
    if kind is None:
        return Rope(dims, traditional, 1.0, base, base_inv_freq(dims, base), None)
    if kind == "linear":
        return Rope(dims, traditional, 1.0 / scaling["factor"], base, base_inv_freq(dims, base), None)
    if kind == "llama3":
        periods = mx.array(llama3_periods(dims, base, scaling), dtype=mx.float32)
        inv = mx.reciprocal(periods)
        mx.eval(periods, inv)
        return Rope(dims, traditional, 1.0, None, inv, periods)
    raise FsxError(f"unsupported rope_scaling type {kind!r}; supported: {', '.join(SCALING_TYPES)}")


def base_inv_freq(dims: int, base: float) -> mx.array:
    """float32 [dims/2]: base^(-2j/dims), computed exactly as MLX's CPU rope does.

    MLX evaluates exp(-j * (ln(base) / (dims/2))) in float32 with ln(base)
    rounded to float first; computing it the same way keeps theta the same
    float, so the kernels and the reference agree with mx.fast.rope bit for bit
    in the angle (MLX's GPU path uses exp2/log2 instead: see docs/kernels.md).
    """
    half = dims // 2
    step = np.float32(np.log(np.float32(base))) / np.float32(half)
    inv = mx.exp(mx.arange(0, -half, -1, dtype=mx.float32) * mx.array(step, mx.float32))
    mx.eval(inv)
    return inv


def llama3_periods(dims: int, base: float, s: dict[str, Any]) -> list[float]:
    """Llama 3.1's frequency-dependent stretch, as transformers computes it: periods 1/inv_freq."""
    factor, low, high = s["factor"], s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0)
    old_ctx = s.get("original_max_position_embeddings", 8192)
    periods = []
    for i in range(dims // 2):
        wavelen = base ** (2 * i / dims) * 2 * math.pi  # tokens per full turn of pair i
        if wavelen < old_ctx / high:  # fast-turning pairs: unchanged
            periods.append(wavelen / (2 * math.pi))
        elif wavelen > old_ctx / low:  # slow-turning pairs: stretched by factor
            periods.append(wavelen / (2 * math.pi) * factor)
        else:  # in between: a linear ramp from stretched to unchanged
            smooth = (old_ctx / wavelen - low) / (high - low)
            inv = (1 - smooth) * (2 * math.pi / wavelen) / factor + smooth * (2 * math.pi / wavelen)
            periods.append(1 / inv)
    return periods


def positions(offset: int | mx.array, L: int) -> mx.array:
    """float32 [L] or [B, L]: offset + 0 .. L-1 (one offset per batch row when given as [B])."""
    p = mx.arange(L, dtype=mx.float32)
    if isinstance(offset, mx.array) and offset.ndim == 1:
        return offset.astype(mx.float32)[:, None] + p[None, :]
    return p + offset
