"""Sampling: from logits to the next token.

    logits [B, vocab]
      -> logits processors (repetition / presence penalties: look at past tokens)
      -> temperature -> top-k -> top-p -> min-p   (keep a plausible set)
      -> categorical draw   (or argmax when temperature is 0: greedy)

The order is transformers' (penalties first, then temperature, then the
filters), so the same settings mean the same thing here and there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import mlx.core as mx

from ..errors import FsxError
from ..files import read_json

Sampler = Callable[..., mx.array]  # (logits [B, V], key=None) -> tokens [B]; key: a PRNG key
LogitsProcessor = Callable[[mx.array, mx.array], mx.array]  # (past tokens [T], logits [B, V])


MAX_TEMPERATURE = 100.0
MAX_TOP_K = 1 << 24  # = config.MAX_VOCAB


@dataclass
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off
    repetition_penalty: float = 1.0  # 1 = off; >1 discourages tokens already seen
    presence_penalty: float = 0.0  # 0 = off; subtracted once from every seen token
    seed: int | None = None

    def validate(self) -> "SamplingParams":
        checks = [
            (0 <= self.temperature <= MAX_TEMPERATURE,
             f"temperature must be >= 0 and <= {MAX_TEMPERATURE:g} (0 = greedy), got {self.temperature}"),
            (0 <= self.top_k <= MAX_TOP_K,
             f"top-k must be >= 0 and <= {MAX_TOP_K} (0 = off; no vocabulary is larger), got {self.top_k}"),
            (0 < self.top_p <= 1, f"top-p must be in (0, 1], got {self.top_p}"),
            (0 <= self.min_p < 1, f"min-p must be in [0, 1), got {self.min_p}"),
            (self.repetition_penalty > 0 and math.isfinite(self.repetition_penalty),
             f"repetition penalty must be > 0 (1 = off), got {self.repetition_penalty}"),
            (math.isfinite(self.presence_penalty),
             f"presence penalty must be a finite number, got {self.presence_penalty}"),
            (self.seed is None or 0 <= self.seed < 2**64,
             f"seed must be in [0, 2**64) (MLX's seed is unsigned 64-bit), got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise FsxError(message)
        return self

    def describe(self) -> str:
        if self.temperature == 0:
            s = "greedy"
        else:
            s = f"temperature {self.temperature:g}"
            s += f", top-k {self.top_k}" if self.top_k else ""
            s += f", top-p {self.top_p:g}" if self.top_p < 1 else ""
            s += f", min-p {self.min_p:g}" if self.min_p else ""
        s += f", repetition penalty {self.repetition_penalty:g}" if self.repetition_penalty != 1 else ""
        s += f", presence penalty {self.presence_penalty:g}" if self.presence_penalty else ""
        return s + (f", seed {self.seed}" if self.seed is not None else "")


def checkpoint_defaults(model_dir: Path | None) -> dict:
    """The sampling settings a checkpoint recommends (generation_config.json).

    Qwen3 ships temperature 0.6, top-p 0.95, top-k 20; a file with
    do_sample false (or none at all) means greedy.
    """
    path = Path(model_dir) / "generation_config.json" if model_dir else None
    if path is None or not path.exists():
        return {}
    try:
        g = read_json(path)
    except FsxError:  # a broken file recommends nothing (the model still runs)
        return {}
    if not isinstance(g, dict) or not g.get("do_sample", False):
        return {"temperature": 0.0}
    keys = {"temperature", "top_k", "top_p", "min_p", "repetition_penalty"}
    return {k: g[k] for k in keys if isinstance(g.get(k), (int, float)) and not isinstance(g.get(k), bool)}


def resolve_params(user: dict, defaults: dict) -> tuple[SamplingParams, str]:
    """User options win; the checkpoint's defaults fill the rest. Says which came from where."""
    known = {f.name for f in fields(SamplingParams)}
    chosen = {k: v for k, v in defaults.items() if k in known}
    chosen.update({k: v for k, v in user.items() if v is not None and k in known})
    params = SamplingParams(**chosen).validate()
    from_ckpt = sorted(k for k in defaults if k in known and user.get(k) is None)
    source = f" (from generation_config.json: {', '.join(from_ckpt)})" if from_ckpt else ""
    return params, params.describe() + source


def make_sampler(p: SamplingParams) -> Sampler:
    """The sampler for p. Pass `key` (mx.random.key) for a draw of its own; without
    one, draws come from MLX's global generator (what `mx.random.seed` sets)."""
    if p.temperature == 0:
        return lambda logits, key=None: mx.argmax(logits, axis=-1)

    def sample(logits: mx.array, key: mx.array | None = None) -> mx.array:
        logits = logits.astype(mx.float32) / p.temperature
        if p.top_k:
            logits = apply_top_k(logits, p.top_k)
        if p.top_p < 1:
            logits = apply_top_p(logits, p.top_p)
        if p.min_p:
            logits = apply_min_p(logits, p.min_p)
        return mx.random.categorical(logits, key=key)

    return sample


def apply_top_k(logits: mx.array, k: int) -> mx.array:
    """Keep the k largest logits (ties at the k-th value are kept too)."""
    if k >= logits.shape[-1]:
        return logits
    kth = mx.sort(logits, axis=-1)[..., -k][..., None]
    return mx.where(logits < kth, -mx.inf, logits)


def apply_top_p(logits: mx.array, p: float) -> mx.array:
    """Keep the smallest set of top tokens whose probabilities sum to at least p."""
    order = mx.argsort(-logits, axis=-1)
    sorted_logits = mx.take_along_axis(logits, order, axis=-1)
    probs = mx.softmax(sorted_logits, axis=-1)
    # A token stays if the mass *before* it is still below p (so the top one always stays).
    before = mx.cumsum(probs, axis=-1) - probs
    sorted_logits = mx.where(before < p, sorted_logits, -mx.inf)
    return mx.put_along_axis(mx.full(logits.shape, -mx.inf), order, sorted_logits, axis=-1)


def apply_min_p(logits: mx.array, min_p: float) -> mx.array:
    """Drop tokens less likely than min_p times the most likely one."""
    threshold = mx.max(logits, axis=-1, keepdims=True) + math.log(min_p)
    return mx.where(logits < threshold, -mx.inf, logits)


def make_logits_processors(p: SamplingParams) -> list[LogitsProcessor]:
    processors: list[LogitsProcessor] = []
    if p.repetition_penalty != 1:
        processors.append(lambda past, logits: repetition_penalty(past, logits, p.repetition_penalty))
    if p.presence_penalty:
        processors.append(lambda past, logits: presence_penalty(past, logits, p.presence_penalty))
    return processors


def repetition_penalty(past: mx.array, logits: mx.array, penalty: float) -> mx.array:
    """CTRL's penalty (as transformers): seen tokens' logits divided by it if
    positive, multiplied if negative — both make them less likely."""
    if past.size == 0:
        return logits
    seen = logits[:, past]  # [B, T]
    seen = mx.where(seen > 0, seen / penalty, seen * penalty)
    logits[:, past] = seen
    return logits


def presence_penalty(past: mx.array, logits: mx.array, penalty: float) -> mx.array:
    """Subtract `penalty` once from every token already seen, however often."""
    if past.size == 0:
        return logits
    seen = mx.zeros((logits.shape[-1],), logits.dtype)
    seen[past] = 1  # repeated ids write the same 1: presence, not count
    return logits - penalty * seen
