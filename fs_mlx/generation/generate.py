"""The generation loop: prefill, then decode one token at a time.

    prompt tokens --prefill (chunks)--> KV cache + logits of the last position
    loop:  sample a token -> feed it back (one position) -> logits -> ...
    until: an EOS id, a stop string, max_tokens, or the context is full

Two things make it fast. The KV cache (cache.py) means each step computes one
position, not the whole sequence. And the loop never waits idle: MLX builds
arrays lazily, so step n+1's graph is built and queued (`mx.async_eval`)
before step n's token is read back, overlapping Python with computation.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Iterator

import mlx.core as mx

from ..errors import FsxError
from .cache import KVCache, make_cache
from .detokenizer import StreamingDetokenizer
from .sample import SamplingParams, make_logits_processors, make_sampler

if TYPE_CHECKING:  # the generation stage takes a loaded model; it does not load one
    from ..loader import LoadedModel

PREFILL_CHUNK = 512  # prompt tokens per forward pass: bounds activation memory for long prompts


@dataclass
class GenerationStats:
    prompt_tokens: int = 0  # prompt tokens actually computed (reused ones excluded)
    cached_tokens: int = 0  # prompt tokens reused from the KV cache
    prompt_tps: float = 0.0  # prompt_tokens / time to first token (mlx-lm's definition)
    generation_tokens: int = 0
    generation_tps: float = 0.0  # tokens after the first / time after the first
    ttft_s: float = 0.0
    peak_memory_gb: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return (
            f"prompt {self.prompt_tokens} tok at {self.prompt_tps:.1f} tok/s"
            + (f" (+{self.cached_tokens} cached)" if self.cached_tokens else "")
            + f" | generated {self.generation_tokens} tok at {self.generation_tps:.1f} tok/s"
            + f" | first token {self.ttft_s * 1000:.0f} ms | peak {self.peak_memory_gb:.2f} GB"
        )


@dataclass
class Response:
    text: str  # the new text since the previous response
    token: int | None  # the token just generated (None in the final response)
    finish_reason: str | None  # None while generating; then eos | length | stop | interrupted
    stats: GenerationStats = field(default_factory=GenerationStats)


class PromptCache:
    """A KV cache plus the tokens it holds, so a chat turn only prefills what is new."""

    def __init__(self, model):
        self.layers: list[KVCache] = make_cache(model)
        self.tokens: list[int] = []

    def reuse(self, prompt: list[int]) -> int:
        """Trim the cache to its longest common prefix with `prompt`; return its length.

        At least one prompt token is always left to compute: its logits start the reply.
        """
        common = 0
        limit = min(len(self.tokens), len(prompt) - 1)
        while common < limit and self.tokens[common] == prompt[common]:
            common += 1
        self.truncate(common)
        return len(self.tokens)

    def truncate(self, n: int) -> None:
        for c in self.layers:
            c.trim(c.offset - n)
        if any(c.offset != n for c in self.layers):
            # A sliding-window layer cannot move back past keys it dropped: start over.
            for c in self.layers:
                c.trim(c.offset)
            n = 0
        self.tokens = self.tokens[:n]

    def sync(self, fed: list[int]) -> None:
        """After an interruption: keep only what every layer finished storing."""
        n = min([len(fed)] + [c.offset for c in self.layers])
        self.tokens = list(fed[:n])
        self.truncate(n)

    @property
    def offset(self) -> int:
        return self.layers[0].offset


def prefill(model, tokens: list[int], cache: list[KVCache], chunk: int = PREFILL_CHUNK) -> mx.array:
    """Run the prompt through the model in chunks; return the last position's logits [1, vocab]."""
    for start in range(0, len(tokens) - 1, chunk):
        piece = tokens[start:min(start + chunk, len(tokens) - 1)]
        h = model.model(mx.array([piece]), cache=cache)  # the body only: these need no logits
        # Materialise the chunk, freeing its activations. h too: under pipeline
        # parallelism evaluating it is what sends the chunk on to the next rank.
        mx.eval(h, [c.state for c in cache])
    return model(mx.array([tokens[-1:]]), cache=cache)[:, -1, :]


def decode_tokens(
    model, first_logits: mx.array, cache: list[KVCache], sampler, processors, history: list[int]
) -> Iterator[int]:
    """Yield tokens forever; the caller stops. Step n+1 is queued before step n is read."""
    past = mx.array(history, dtype=mx.int32)

    def pick(logits: mx.array, past: mx.array) -> mx.array:
        for p in processors:
            logits = p(past, logits)
        return sampler(logits)  # [1]

    y = pick(first_logits, past)
    mx.async_eval(y)
    while True:
        if processors:
            past = mx.concatenate([past, y])
        next_y = pick(model(y[None], cache=cache)[:, -1, :], past)  # feeds y into the cache
        mx.async_eval(next_y)
        yield y.item()  # waits for y only; next_y is already being computed
        y = next_y


def stream_generate(
    lm: LoadedModel,
    prompt: list[int] | str,
    params: SamplingParams | None = None,
    max_tokens: int = 256,
    stop: tuple[str, ...] = (),
    cache: PromptCache | None = None,
    ignore_eos: bool = False,
    context: int | None = None,
) -> Iterator[Response]:
    """Generate a reply to `prompt`, yielding text as it becomes printable.

    prompt: token ids, or text (encoded as is: apply a chat template first with
    generation.chat.Conversation for a chat model). Passing the same `cache`
    across calls reuses every prompt token it already holds.
    """
    if isinstance(prompt, str):
        prompt = lm.tokenizer.encode(prompt)
    params = (params or SamplingParams()).validate()
    if max_tokens < 1:
        raise FsxError(f"max tokens must be at least 1, got {max_tokens}")
    if not prompt:
        raise FsxError("the prompt is empty")
    context = min(context or lm.config.max_position_embeddings, lm.config.max_position_embeddings)
    if len(prompt) >= context:
        raise FsxError(f"the prompt has {len(prompt)} tokens; the context holds {context}")
    max_tokens = min(max_tokens, context - len(prompt))
    if params.seed is not None:
        mx.random.seed(params.seed)

    cache = cache or PromptCache(lm.model)
    reused = cache.reuse(prompt)
    stats = GenerationStats(prompt_tokens=len(prompt) - reused, cached_tokens=reused)
    eos = set() if ignore_eos else set(lm.tokenizer.eos_token_ids)
    detok = StreamingDetokenizer(lm.tokenizer)
    held = ""  # text not yet shown because it might begin a stop string
    generated: list[int] = []
    mx.reset_peak_memory()

    start = time.perf_counter()
    first_logits = prefill(lm.model, prompt[reused:], cache.layers)
    tokens = decode_tokens(
        lm.model, first_logits, cache.layers, make_sampler(params),
        make_logits_processors(params), prompt,
    )
    finish = "length"
    try:
        for token in tokens:
            now = time.perf_counter()
            if not generated:
                stats.ttft_s = now - start
                stats.prompt_tps = stats.prompt_tokens / stats.ttft_s
                first_at = now
            generated.append(token)
            stats.generation_tokens = len(generated)
            if len(generated) > 1:
                stats.generation_tps = (len(generated) - 1) / (now - first_at)
            if token in eos:
                finish = "eos"
                break
            held += detok.add(token)
            shown, held, hit = split_stop(held, stop)
            yield Response(shown, token, None, stats)
            if hit:
                finish = "stop"
                break
            if len(generated) >= max_tokens:
                break
    except KeyboardInterrupt:
        finish = "interrupted"
    finally:
        tokens.close()
        # The cache holds the prompt and the tokens fed back so far.
        cache.sync(prompt + generated)
    if finish == "length":
        held += detok.flush()
    stats.peak_memory_gb = mx.get_peak_memory() / 1e9
    yield Response(held, None, finish, stats)


def split_stop(text: str, stop: tuple[str, ...]) -> tuple[str, str, bool]:
    """Split `text` into (safe to show, held back, stop string found)."""
    for s in stop:
        i = text.find(s)
        if i >= 0:
            return text[:i], "", True
    # Hold back the longest tail that is a prefix of some stop string.
    keep = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), keep, -1):
            if text.endswith(s[:n]):
                keep = n
                break
    return (text[:-keep], text[-keep:], False) if keep else (text, "", False)


def generate(lm: LoadedModel, prompt: list[int] | str, **kwargs) -> tuple[str, list[int], Response]:
    """The whole reply at once: (text, generated token ids, final response with stats)."""
    text, ids = [], []
    for r in stream_generate(lm, prompt, **kwargs):
        text.append(r.text)
        if r.token is not None:
            ids.append(r.token)
        last = r
    return "".join(text), ids, last
