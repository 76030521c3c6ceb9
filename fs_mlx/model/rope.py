"""Rotary position embedding: the frequencies, and every scaling rule, in one place.

RoPE rotates each pair of features (x_a, x_b) of a query or key by an angle
that grows with the token's position p:

    theta_j = p * scale * inv_freq[j],      inv_freq[j] = base^(-2j / dims),  j = 0 .. dims/2 - 1
    (x_a, x_b) -> (x_a cos theta_j - x_b sin theta_j,  x_a sin theta_j + x_b cos theta_j)

The pairs are (j, j + dims/2) in Hugging Face's rotate-half order, or
(2j, 2j + 1) in the "traditional" interleaved order llama.cpp uses. Only the
first `dims` features rotate; the rest pass through (partial rotary).

Scaling rules stretch long contexts by changing the frequencies or positions
(each as transformers' `ROPE_INIT_FUNCTIONS` computes it; tests/test_rope_scaling.py
compares with values recorded from them):
  linear    positions divided by `factor` (scale = 1 / factor)
  llama3    low frequencies divided by `factor`, high ones kept, a smooth ramp
            between (Llama 3.1)
  yarn      the same idea with YaRN's ramp over the pairs, plus an "attention
            factor" that multiplies the rotated features (Qwen3's 128k, Qwen2.5)
  longrope  per-pair divisors from the config: `short_factor` while the sequence
            fits `original_max_position_embeddings`, `long_factor` beyond, plus
            an attention factor (Phi-3/3.5/4-mini)
  dynamic   NTK-aware: once the sequence outgrows `max_position_embeddings`, the
            base grows with it
The last two depend on the sequence length: the model asks `rope.at(length)`
for the RoPE of a forward pass whose last position is length - 1.

`Rope` below is what a model holds: computed once at build time, handed to
every backend (MLX's `mx.fast.rope` wants `base` or the *periods*
1 / inv_freq; the kernels and the plain reference want `inv_freq`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import mlx.core as mx
import numpy as np

from ..errors import FsxError

SCALING_TYPES = ("linear", "llama3", "yarn", "longrope", "dynamic")


@dataclass(frozen=True, eq=False)
class Rope:
    dims: int  # features rotated (<= head_dim, even)
    traditional: bool  # True: interleaved pairs (2j, 2j+1); False: rotate-half (j, j+dims/2)
    scale: float  # positions are multiplied by this (linear scaling: 1 / factor)
    base: float | None  # the plain rule's base, or None when the frequencies are custom
    inv_freq: mx.array  # float32 [dims / 2]: angle per unit of (scaled) position
    periods: mx.array | None  # float32 [dims / 2]: 1 / inv_freq, mx.fast.rope's `freqs` (None: use base)
    # yarn/longrope: the rotated features (cos and sin) are multiplied by this, so the
    # attention scores of rotated q.k grow by mscale^2 (transformers' attention_scaling)
    mscale: float = 1.0
    # longrope/dynamic: length -> the Rope for a forward pass over positions < length
    by_length: Callable[[int], "Rope"] | None = None

    def at(self, length: int) -> "Rope":
        """The RoPE for a forward pass whose last position is length - 1."""
        return self if self.by_length is None else self.by_length(length)


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
    "yarn": {"factor": False, "original_max_position_embeddings": False, "attention_factor": False,
             "beta_fast": False, "beta_slow": False},
    "longrope": {"factor": False, "original_max_position_embeddings": False, "attention_factor": False},
    "dynamic": {"factor": True},
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
    if kind == "longrope":
        for name in ("short_factor", "long_factor"):
            value = scaling.get(name)
            if not isinstance(value, list) or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x < math.inf for x in value):
                return f"rope_scaling 'longrope' needs {name}: a list of numbers > 0"
    return None


def make_rope(dims: int, base: float, traditional: bool, scaling: dict[str, Any] | None,
              max_position_embeddings: int = 4096) -> Rope:
    """The RoPE a model with these config values uses.

    dims: the rotated features (head_dim * partial_rotary_factor).
    max_position_embeddings: config.json's; yarn/longrope/dynamic read it.
    """
    kind = scaling_type(scaling)
    if kind is None:
        return Rope(dims, traditional, 1.0, base, base_inv_freq(dims, base), None)
    if kind == "linear":
        return Rope(dims, traditional, 1.0 / scaling["factor"], base, base_inv_freq(dims, base), None)
    if kind == "llama3":
        return custom_rope(dims, traditional, np.array(llama3_periods(dims, base, scaling)))
    if kind == "yarn":
        inv, mscale = yarn_inv_freq(dims, base, scaling, max_position_embeddings)
        return custom_rope(dims, traditional, 1.0 / inv, mscale)
    if kind == "longrope":
        return longrope(dims, base, traditional, scaling, max_position_embeddings)
    if kind == "dynamic":
        return dynamic_ntk(dims, base, traditional, scaling["factor"], max_position_embeddings)
    raise FsxError(f"unsupported rope_scaling type {kind!r}; supported: {', '.join(SCALING_TYPES)}")


def custom_rope(dims: int, traditional: bool, periods: np.ndarray, mscale: float = 1.0,
                by_length: Callable[[int], Rope] | None = None) -> Rope:
    """A Rope with explicit per-pair periods (1 / inv_freq), float32."""
    periods = mx.array(np.asarray(periods, dtype=np.float32))
    inv = mx.reciprocal(periods)
    mx.eval(periods, inv)
    return Rope(dims, traditional, 1.0, None, inv, periods, float(mscale), by_length)


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


def _torch_inv_freq(dims: int, base: float) -> np.ndarray:
    """float32 [dims/2]: 1 / base^(2j/dims), computed as transformers does (float32 pow)."""
    return (np.float32(1.0) / (np.float32(base) ** (np.arange(0, dims, 2, dtype=np.float32) / np.float32(dims))))


def yarn_inv_freq(dims: int, base: float, s: dict[str, Any], max_pos: int) -> tuple[np.ndarray, float]:
    """YaRN (transformers' _compute_yarn_parameters): (inv_freq float32 [dims/2], attention factor).

    Pairs that turn many times within the original context (fast) keep their
    frequency, pairs that turn less than once (slow) are divided by `factor`,
    and a linear ramp over the pair index blends the two in between.
    """
    factor = s.get("factor")
    old_ctx = s.get("original_max_position_embeddings") or max_pos
    if factor is None:
        factor = max_pos / old_ctx

    def mscale_of(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = s.get("attention_factor")
    if attention_factor is None:
        m, m_all = s.get("mscale"), s.get("mscale_all_dim")
        attention_factor = mscale_of(factor, m) / mscale_of(factor, m_all) if m and m_all else mscale_of(factor)
    beta_fast, beta_slow = s.get("beta_fast") or 32, s.get("beta_slow") or 1

    def pair_turning(rotations: float) -> float:  # the pair index that turns `rotations` times in old_ctx
        return dims * math.log(old_ctx / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = pair_turning(beta_fast), pair_turning(beta_slow)
    if s.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dims - 1)
    if low == high:
        high += 0.001  # no division by zero
    ramp = np.clip((np.arange(dims // 2, dtype=np.float32) - np.float32(low)) / np.float32(high - low), 0, 1)
    keep = (np.float32(1) - ramp).astype(np.float32)  # 1: extrapolate (unchanged), 0: interpolate (/ factor)
    pos_freqs = np.float32(base) ** (np.arange(0, dims, 2, dtype=np.float32) / np.float32(dims))
    inv_extra = np.float32(1.0) / pos_freqs
    inv_inter = np.float32(1.0) / (np.float32(factor) * pos_freqs)
    inv = inv_inter * (np.float32(1) - keep) + inv_extra * keep
    return inv.astype(np.float32), float(attention_factor)


def longrope(dims: int, base: float, traditional: bool, s: dict[str, Any], max_pos: int) -> Rope:
    """LongRoPE (transformers' _compute_longrope_parameters): per-pair divisors of the frequencies,
    `short_factor` up to the original context and `long_factor` beyond it."""
    old_ctx = s.get("original_max_position_embeddings") or max_pos
    factor = s.get("factor") or max_pos / old_ctx
    attention_factor = s.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(old_ctx))
    for name in ("short_factor", "long_factor"):
        if len(s.get(name) or []) != dims // 2:
            raise FsxError(f"rope_scaling.{name} must list {dims // 2} numbers (one per rotated pair)")
    pos_freqs = np.float32(base) ** (np.arange(0, dims, 2, dtype=np.float32) / np.float32(dims))
    ropes = {}
    for name in ("short_factor", "long_factor"):
        inv = np.float32(1.0) / (np.asarray(s[name], dtype=np.float32) * pos_freqs)
        ropes[name] = custom_rope(dims, traditional, 1.0 / inv, attention_factor)
    short, long = ropes["short_factor"], ropes["long_factor"]

    def by_length(length: int) -> Rope:
        return long if length > old_ctx else short

    return dataclasses.replace(short, by_length=by_length)


def dynamic_ntk(dims: int, base: float, traditional: bool, factor: float, max_pos: int) -> Rope:
    """Dynamic NTK (transformers' _compute_dynamic_ntk_parameters): beyond max_pos the base grows as
    base * (factor * length / max_pos - (factor - 1)) ^ (dims / (dims - 2))."""
    plain = Rope(dims, traditional, 1.0, base, base_inv_freq(dims, base), None)

    @functools.lru_cache(maxsize=8)  # every layer of one step asks for the same length
    def by_length(length: int) -> Rope:
        if length <= max_pos:
            return plain
        b = base * ((factor * length / max_pos) - (factor - 1)) ** (dims / (dims - 2))
        return custom_rope(dims, traditional, 1.0 / _torch_inv_freq(dims, b))

    return dataclasses.replace(plain, by_length=by_length)


def scale_rotated(x: mx.array, rope: Rope) -> mx.array:
    """x [..., D] with its first rope.dims features multiplied by rope.mscale (yarn, longrope).

    The MLX backend's multiply after mx.fast.rope; the qk_norm_rope kernel folds
    the factor into its rotation (metal/qk_norm_rope.metal: mscale)."""
    if rope.mscale == 1.0:
        return x
    m = mx.array(rope.mscale, dtype=mx.float32).astype(x.dtype)
    if rope.dims == x.shape[-1]:
        return x * m
    return mx.concatenate([x[..., : rope.dims] * m, x[..., rope.dims:]], axis=-1)


def positions(offset: int | mx.array, L: int) -> mx.array:
    """float32 [L] or [B, L]: offset + 0 .. L-1 (one offset per batch row when given as [B])."""
    p = mx.arange(L, dtype=mx.float32)
    if isinstance(offset, mx.array) and offset.ndim == 1:
        return offset.astype(mx.float32)[:, None] + p[None, :]
    return p + offset
