"""Continuous batching: many requests decoded together, one forward per step.

The scheduler owns the model and runs in one thread (all MLX work happens
there). Requests arrive from any thread (`submit`); each gets back its tokens
and text through the callback it gave, one `Event` per generated token and a
final one with the finish reason and usage.

    waiting --admit--> prefilling --last chunk--> running (a row of the batch) --> done
                       (its own KVCache,          (one row of each layer's
                        one chunk per step)        BatchKVCache)

One step of the loop:
  1. drop the sequences whose clients went away (their rows and caches are freed)
  2. admit waiting requests while fewer than `max_batch` sequences are active
  3. prefill one chunk of the oldest prefilling sequence; after its last chunk it
     samples its first token and joins the batch as a new row
  4. decode: one forward of [B, 1] tokens for all running rows, each row at its
     own position (per-row RoPE offsets and masks, generation/cache.py), then
     sample each row with its own settings; finished rows leave

So a long new prompt delays the running streams by one chunk per step, never
by its whole prefill. The prefix cache (prefix_cache.py) lets a new request
start from the KV of an earlier one that began with the same tokens.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import mlx.core as mx

from ..errors import FsxError
from .cache import BatchKVCache, KVCache
from .detokenizer import StreamingDetokenizer
from .generate import PREFILL_CHUNK, split_stop
from .prefix_cache import PrefixCache
from .sample import SamplingParams, make_logits_processors, make_sampler

log = logging.getLogger("fs_mlx.batch")


@dataclass
class Request:
    prompt: list[int]  # token ids, chat template already applied
    max_tokens: int
    params: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # None: off; k >= 0: the chosen token's logprob and the top k
    ignore_eos: bool = False


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int  # prompt tokens whose KV came from the prefix cache


@dataclass
class Event:
    """What the scheduler reports: one per generated token, then a final one."""

    text: str  # new printable text (stop strings and unfinished characters held back)
    token: int | None = None  # None in the final event
    logprob: float | None = None  # log p(token), from the model's logits (before sampling filters)
    top_logprobs: list[tuple[int, float]] | None = None
    finish_reason: str | None = None  # final event: eos | stop | length | error
    usage: Usage | None = None  # final event only
    error: str | None = None  # finish_reason == "error": what went wrong


class Busy(FsxError):
    """The waiting queue is full: the client should retry later."""


class Sequence:
    """One request in flight: its tokens, its cache while prefilling, its sampler."""

    def __init__(self, request: Request, emit: Callable[[Event], None], tokenizer, eos: set[int]):
        self.request = request
        self.emit = emit
        self.prompt = request.prompt
        self.generated: list[int] = []
        self.cache: list[KVCache] | None = None  # during prefill; then a row of the batch
        self.prefilled = 0  # prompt tokens in the cache
        self.cached_tokens = 0
        self.cancelled = False
        self.eos = set() if request.ignore_eos else eos
        self.detok = StreamingDetokenizer(tokenizer)
        self.held = ""  # text that may begin a stop string
        self.sampler = make_sampler(request.params)
        self.processors = make_logits_processors(request.params)
        seed = request.params.seed
        self.key = mx.random.key(seed) if seed is not None else None  # this request's own draws

    def pick(self, logits: mx.array) -> tuple[mx.array, mx.array | None, mx.array | None]:
        """logits [1, V] -> (token [1], its logprob, top-k (ids, logprobs)), all lazy."""
        raw = logits.astype(mx.float32)
        for p in self.processors:
            logits = p(mx.array(self.prompt + self.generated, dtype=mx.int32), logits)
        key = None
        if self.key is not None:
            self.key, key = mx.random.split(self.key)
        token = self.sampler(logits, key=key)
        if self.request.logprobs is None:
            return token, None, None
        logprobs = raw - mx.logsumexp(raw, axis=-1, keepdims=True)  # [1, V]
        chosen = mx.take_along_axis(logprobs, token[:, None], axis=-1)  # [1, 1]
        k = self.request.logprobs
        top = mx.argsort(-logprobs, axis=-1)[:, :k] if k else None  # [1, k]
        return token, chosen, (top, mx.take_along_axis(logprobs, top, axis=-1)) if k else None

    def accept(self, token: int, logprob, top) -> bool:
        """Take a sampled token: report its text; True when the sequence is finished."""
        self.generated.append(token)
        event = Event("", token)
        if logprob is not None:
            event.logprob = logprob.item()
            if top is not None:
                ids, lps = top
                event.top_logprobs = list(zip(ids[0].tolist(), lps[0].tolist()))
        if token in self.eos:
            return self.finish("eos", event)
        self.held += self.detok.add(token)
        event.text, self.held, hit = split_stop(self.held, self.request.stop)
        if hit:
            return self.finish("stop", event)
        if len(self.generated) >= self.request.max_tokens:
            return self.finish("length", event)
        self.emit(event)
        return False

    def finish(self, reason: str, last: Event) -> bool:
        if reason == "eos":  # as stream_generate: show what was held for a stop string
            last.text += self.held
        elif reason == "length":
            last.text += self.held + self.detok.flush()
        last.finish_reason = reason
        last.usage = Usage(len(self.prompt), len(self.generated), self.cached_tokens)
        self.emit(last)
        return True

    @property
    def fed(self) -> list[int]:
        """The tokens whose KV is in the cache: the prompt and all generated but the last."""
        return self.prompt + self.generated[:-1]


class Scheduler:
    def __init__(self, lm, max_batch: int = 8, max_queue: int = 64,
                 prefill_chunk: int = PREFILL_CHUNK, prefix_cache_bytes: int = 512 << 20,
                 context: int | None = None):
        self.lm = lm
        self.context = min(context or lm.config.max_position_embeddings, lm.config.max_position_embeddings)
        self.model = lm.model
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.prefill_chunk = prefill_chunk
        self.prefix_cache = PrefixCache(prefix_cache_bytes) if prefix_cache_bytes else None
        self.eos = set(lm.tokenizer.eos_token_ids)

        self.waiting: deque[Sequence] = deque()  # guarded by _lock (submit runs in other threads)
        self.prefilling: deque[Sequence] = deque()
        self.rows: list[Sequence] = []  # row b of every layer's BatchKVCache is rows[b]
        self.cache: list[BatchKVCache] = [BatchKVCache() for _ in self.model.layers]
        self.steps = 0  # decode forwards run
        self.peak_rows = 0  # the most sequences decoded together so far

        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    # --- the client side (any thread) ------------------------------------------------

    def submit(self, request: Request, emit: Callable[[Event], None]) -> Sequence:
        """Queue a request; `emit` is called from the scheduler thread for each event."""
        if not request.prompt:
            raise FsxError("the prompt is empty")
        if request.max_tokens < 1:
            raise FsxError(f"max_tokens must be at least 1, got {request.max_tokens}")
        if len(request.prompt) + request.max_tokens > self.context:
            raise FsxError(f"the prompt ({len(request.prompt)} tokens) plus max_tokens "
                           f"({request.max_tokens}) exceed the context of {self.context} tokens")
        seq = Sequence(request, emit, self.lm.tokenizer, self.eos)
        with self._lock:
            if len(self.waiting) >= self.max_queue:
                raise Busy(f"the server is busy: {len(self.waiting)} requests are waiting")
            self.waiting.append(seq)
        self._wake.set()
        return seq

    def cancel(self, seq: Sequence) -> None:
        """The client went away: the sequence leaves at the next step, emitting nothing more."""
        seq.cancelled = True
        self._wake.set()

    @property
    def load(self) -> dict:
        return {"waiting": len(self.waiting), "prefilling": len(self.prefilling),
                "running": len(self.rows), "max_batch": self.max_batch, "decode_steps": self.steps,
                "peak_batch": self.peak_rows, "active_memory_mb": round(mx.get_active_memory() / 1e6, 1),
                "prefix_cache_mb": round(self.prefix_cache.nbytes / 1e6, 1) if self.prefix_cache else 0.0}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="fsx-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --- the scheduler thread ------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop:
            if not (self.waiting or self.prefilling or self.rows):
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            try:
                self.step()
            except Exception as e:  # a bug or an MLX failure: fail these requests, keep serving
                log.exception("scheduler step failed")
                self._fail_all(f"{type(e).__name__}: {e}")

    def step(self) -> None:
        self._drop_cancelled()
        self._admit()
        if self.prefilling:
            self._prefill_chunk(self.prefilling[0])
        if self.rows:
            self._decode()

    def _drop_cancelled(self) -> None:
        with self._lock:
            self.waiting = deque(s for s in self.waiting if not s.cancelled)
        self.prefilling = deque(s for s in self.prefilling if not s.cancelled)
        if any(s.cancelled for s in self.rows):
            self._keep_rows([b for b, s in enumerate(self.rows) if not s.cancelled])

    def _admit(self) -> None:
        while len(self.prefilling) + len(self.rows) < self.max_batch:
            with self._lock:
                if not self.waiting:
                    return
                seq = self.waiting.popleft()
            # Full caches, also for sliding-window layers: a batch row keeps every position
            # (the attention masks the ones outside the window), so the rows can be copied.
            seq.cache = [KVCache() for _ in self.model.layers]
            if self.prefix_cache is not None:
                n, kv = self.prefix_cache.lookup(seq.prompt)
                if n:
                    for c, (k, v) in zip(seq.cache, kv):
                        c.update_and_fetch(k, v)  # a copy into this sequence's own buffers
                    seq.prefilled = seq.cached_tokens = n
            self.prefilling.append(seq)

    def _prefill_chunk(self, seq: Sequence) -> None:
        """One chunk of seq's prompt; after the last, its first token, and a row in the batch."""
        rest = seq.prompt[seq.prefilled:]
        if len(rest) > self.prefill_chunk:
            piece = rest[:self.prefill_chunk]
            self.model.model(mx.array([piece]), cache=seq.cache)  # the body only: no logits needed
            mx.eval([c.state for c in seq.cache])
            seq.prefilled += len(piece)
            return
        logits = self.model(mx.array([rest]), cache=seq.cache)[:, -1, :]  # [1, V]
        seq.prefilled = len(seq.prompt)
        token, logprob, top = seq.pick(logits)
        mx.eval(token, logprob, top)
        self.prefilling.popleft()
        kv = [(c.keys[..., :c.offset, :], c.values[..., :c.offset, :]) for c in seq.cache]
        seq.cache = None
        if self.prefix_cache is not None:
            self.prefix_cache.insert(seq.prompt, kv)
        if seq.accept(token.item(), logprob, top):
            return
        for c, (k, v) in zip(self.cache, kv):
            c.add(k, v)
        self.rows.append(seq)

    def _decode(self) -> None:
        """One forward for every running row: each feeds its last token."""
        tokens = mx.array([[s.generated[-1]] for s in self.rows])  # [B, 1]
        logits = self.model(tokens, cache=self.cache)[:, -1, :]  # [B, V]
        picks = [s.pick(logits[b:b + 1]) for b, s in enumerate(self.rows)]
        mx.eval(picks, [c.state for c in self.cache])
        self.steps += 1
        self.peak_rows = max(self.peak_rows, len(self.rows))
        done = [s.accept(t.item(), lp, top) for s, (t, lp, top) in zip(self.rows, picks)]
        if any(done):
            self._keep_rows([b for b, d in enumerate(done) if not d], finished=True)

    def _keep_rows(self, keep: list[int], finished: bool = False) -> None:
        if finished and self.prefix_cache is not None:  # remember finished sequences for later turns
            for b, s in enumerate(self.rows):
                if b not in keep and not s.cancelled:
                    self.prefix_cache.insert(s.fed, [c.row(b) for c in self.cache])
        self.rows = [self.rows[b] for b in keep]
        for c in self.cache:
            c.keep(keep)

    def _fail_all(self, message: str) -> None:
        """After an unexpected error nothing in flight can be trusted: end every active sequence."""
        for s in list(self.prefilling) + self.rows:
            if not s.cancelled:
                s.emit(Event("", finish_reason="error", error=message,
                             usage=Usage(len(s.prompt), len(s.generated), s.cached_tokens)))
        self.prefilling.clear()
        self.rows = []
        self.cache = [BatchKVCache() for _ in self.model.layers]


def wait_idle(scheduler: Scheduler, timeout: float = 10.0) -> bool:
    """For tests: True once nothing is waiting, prefilling or running."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not (scheduler.waiting or scheduler.prefilling or scheduler.rows):
            return True
        time.sleep(0.01)
    return False
