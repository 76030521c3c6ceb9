"""OpenAI's API, as data: request bodies checked and turned into scheduler requests,
scheduler events turned into OpenAI's response and chunk objects.

No HTTP here (that is serve.py) and no model (that is generation/batch.py):
only what the fields mean. Shapes follow OpenAI's API reference, so the
official `openai` client reads them unmodified:

    POST /v1/chat/completions   {"model", "messages", ...} -> "chat.completion" / "chat.completion.chunk"
    POST /v1/completions        {"model", "prompt", ...}   -> "text_completion" (stream chunks too)

Every problem with a request becomes an ApiError: an HTTP status and OpenAI's
error object {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field

from ..errors import FsxError
from ..generation.batch import Event, Request, Usage
from ..generation.chat import render
from ..generation.sample import resolve_params

MAX_STOP = 16  # stop strings per request (OpenAI allows 4; more costs a little per token)
MAX_TOP_LOGPROBS = 20  # as OpenAI


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, type: str = "invalid_request_error",
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class Settings:
    """What every request is checked against: the served model and the server's limits."""

    model_id: str
    tokenizer: object
    context: int  # tokens: prompt + reply
    default_max_tokens: int  # a reply's length when the request gives none
    sampling_defaults: dict = field(default_factory=dict)  # the checkpoint's generation_config.json


@dataclass
class Parsed:
    """A checked request: what to run and how to answer."""

    request: Request
    stream: bool
    include_usage: bool
    logprobs: bool


# --- field checks --------------------------------------------------------------------

def _number(body: dict, name: str, low: float | None = None, high: float | None = None,
            integer: bool = False, low_open: bool = False):
    """body[name] checked: None when absent; ApiError naming the field when wrong."""
    v = body.get(name)
    if v is None:
        return None
    kind = "an integer" if integer else "a number"
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)) or (
            isinstance(v, float) and not math.isfinite(v)):
        raise ApiError(400, f"'{name}' must be {kind}, got {v!r}", param=name)
    if low is not None and (v <= low if low_open else v < low) or high is not None and v > high:
        where = (f"> {low}" if low_open else f">= {low}") if high is None else \
            f"in {'(' if low_open else '['}{low}, {high}]"
        raise ApiError(400, f"'{name}' must be {where}, got {v}", param=name)
    return v


def _bool(body: dict, name: str, default: bool = False) -> bool:
    v = body.get(name)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise ApiError(400, f"'{name}' must be true or false, got {v!r}", param=name)
    return v


def _stop(body: dict) -> tuple[str, ...]:
    v = body.get("stop")
    if v is None:
        return ()
    stops = [v] if isinstance(v, str) else v
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, "'stop' must be a non-empty string or a list of them", param="stop")
    if len(stops) > MAX_STOP:
        raise ApiError(400, f"'stop' may hold at most {MAX_STOP} strings, got {len(stops)}", param="stop")
    return tuple(stops)


def _check_model(body: dict, s: Settings) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required: a model id from GET /v1/models", param="model")
    if model != s.model_id:
        raise ApiError(404, f"the model '{model}' does not exist; this server serves '{s.model_id}'",
                       param="model", code="model_not_found")


def _common(body: dict, s: Settings, prompt: list[int], logprobs: int | None) -> Parsed:
    """The fields chat and completions share; the context check."""
    if _number(body, "n", 1, 1, integer=True) not in (None, 1):
        raise ApiError(400, "only n = 1 is supported", param="n")
    if _number(body, "frequency_penalty", -2, 2):
        raise ApiError(400, "'frequency_penalty' is not supported; use 'presence_penalty' "
                       "or 'repetition_penalty'", param="frequency_penalty")
    user = {
        "temperature": _number(body, "temperature", 0, 2),
        "top_p": _number(body, "top_p", 0, 1, low_open=True),
        "top_k": _number(body, "top_k", 0, integer=True),
        "min_p": _number(body, "min_p", 0, 1),
        "repetition_penalty": _number(body, "repetition_penalty", 0, low_open=True),
        "presence_penalty": _number(body, "presence_penalty", -2, 2),
        "seed": _number(body, "seed", 0, 2**64 - 1, integer=True),  # MLX's seeds: unsigned 64-bit
    }
    try:
        params, _ = resolve_params(user, s.sampling_defaults)
    except FsxError as e:
        raise ApiError(400, str(e)) from None

    max_tokens = _number(body, "max_completion_tokens", 1, integer=True)
    if max_tokens is None:
        max_tokens = _number(body, "max_tokens", 1, integer=True)
    room = s.context - len(prompt)
    if room < 1:
        raise ApiError(400, f"the prompt has {len(prompt)} tokens; this server's context holds "
                       f"{s.context}", param="messages", code="context_length_exceeded")
    if max_tokens is None:
        max_tokens = min(s.default_max_tokens, room)
    elif max_tokens > room:
        raise ApiError(400, f"max_tokens ({max_tokens}) plus the prompt ({len(prompt)} tokens) exceed "
                       f"the context of {s.context} tokens", param="max_tokens",
                       code="context_length_exceeded")

    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object", param="stream_options")
    stream = _bool(body, "stream")
    request = Request(prompt, max_tokens, params, _stop(body), logprobs,
                      ignore_eos=_bool(body, "ignore_eos"))  # an extension (vLLM's too): fixed-length replies
    return Parsed(request, stream, _bool(options or {}, "include_usage"), logprobs is not None)


# --- the two request kinds ---------------------------------------------------------------

def _message_text(m, i: int) -> dict:
    if not isinstance(m, dict) or not isinstance(m.get("role"), str):
        raise ApiError(400, f"messages[{i}] must be an object with a 'role'", param="messages")
    content = m.get("content")
    if isinstance(content, list):  # content parts: only text ones are understood
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, f"messages[{i}].content: only text parts are supported", param="messages")
            texts.append(part["text"])
        content = "".join(texts)
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise ApiError(400, f"messages[{i}].content must be a string or a list of text parts",
                       param="messages")
    return {"role": m["role"], "content": content}


def parse_chat(body: dict, s: Settings) -> Parsed:
    _check_model(body, s)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content} objects",
                       param="messages")
    messages = [_message_text(m, i) for i, m in enumerate(messages)]
    kwargs = body.get("chat_template_kwargs")
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, dict):
        raise ApiError(400, "'chat_template_kwargs' must be an object", param="chat_template_kwargs")
    taken = {"messages", "add_generation_prompt", *s.tokenizer.special_tokens} & set(kwargs)
    if taken:  # the server sets these itself
        raise ApiError(400, f"'chat_template_kwargs' may not set {', '.join(sorted(taken))}",
                       param="chat_template_kwargs")
    if body.get("enable_thinking") is not None:  # the shortcut vLLM and mlx-lm accept too
        kwargs = {**kwargs, "enable_thinking": _bool(body, "enable_thinking")}
    try:
        text = render(s.tokenizer, messages, add_generation_prompt=True, **kwargs)
    except FsxError as e:
        raise ApiError(400, str(e), param="messages") from None
    except Exception as e:  # the template met values it cannot handle (it is the checkpoint's code)
        raise ApiError(400, f"the model's chat template failed on these messages: "
                       f"{type(e).__name__}: {e}", param="messages") from None
    prompt = s.tokenizer.encode(text, add_special_tokens=False)  # the template wrote BOS, if any
    logprobs = None
    if _bool(body, "logprobs"):
        logprobs = _number(body, "top_logprobs", 0, MAX_TOP_LOGPROBS, integer=True) or 0
    return _common(body, s, prompt, logprobs)


def parse_completion(body: dict, s: Settings) -> Parsed:
    _check_model(body, s)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str) and prompt:
        ids = s.tokenizer.encode(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool)
                                                     for t in prompt):
        vocab = s.tokenizer.vocab_size
        if not all(0 <= t < vocab for t in prompt):
            raise ApiError(400, f"'prompt' token ids must be in 0..{vocab - 1}", param="prompt")
        ids = prompt
    else:
        raise ApiError(400, "'prompt' must be a non-empty string or list of token ids "
                       "(one prompt per request)", param="prompt")
    if _bool(body, "echo"):
        raise ApiError(400, "'echo' is not supported", param="echo")
    if body.get("suffix"):
        raise ApiError(400, "'suffix' is not supported", param="suffix")
    logprobs = _number(body, "logprobs", 0, 5, integer=True)  # the legacy API: an int, up to 5
    return _common(body, s, ids, logprobs)


# --- responses ----------------------------------------------------------------------------

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "error": "error"}


def new_id(kind: str) -> str:
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"


def usage_json(u: Usage) -> dict:
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_tokens}}


class Reply:
    """Builds one request's response objects from its events (chat or completion)."""

    def __init__(self, kind: str, model_id: str, tokenizer, logprobs: bool, include_usage: bool = False):
        self.kind, self.model_id, self.tokenizer = kind, model_id, tokenizer
        self.logprobs, self.include_usage = logprobs, include_usage
        self.id = new_id(kind)
        self.created = int(time.time())
        self.text: list[str] = []
        self.entries: list = []  # logprobs per token
        self.first_chunk = True

    def _token(self, i: int) -> str:
        return self.tokenizer.decode([i])

    def _logprob_entry(self, e: Event) -> dict:
        t = self._token(e.token)
        tops = [(self._token(i), lp) for i, lp in (e.top_logprobs or [])]
        if self.kind == "chat":
            return {"token": t, "logprob": e.logprob, "bytes": list(t.encode()),
                    "top_logprobs": [{"token": s, "logprob": lp, "bytes": list(s.encode())} for s, lp in tops]}
        return {"token": t, "logprob": e.logprob, "top": dict(tops)}

    def _logprobs_json(self, entries: list) -> dict | None:
        if not self.logprobs:
            return None
        if self.kind == "chat":
            return {"content": entries}
        offsets, at = [], 0
        for x in entries:
            offsets.append(at)
            at += len(x["token"])
        return {"tokens": [x["token"] for x in entries], "token_logprobs": [x["logprob"] for x in entries],
                "top_logprobs": [x["top"] for x in entries], "text_offset": offsets}

    def _envelope(self, obj: str, choice: dict, usage: dict | None = None, with_usage_key: bool = False) -> dict:
        d = {"id": self.id, "object": obj, "created": self.created, "model": self.model_id,
             "system_fingerprint": "fs-mlx", "choices": [choice] if choice is not None else []}
        if usage is not None or with_usage_key:
            d["usage"] = usage
        return d

    # non-streaming: collect, then one object
    def add(self, e: Event) -> None:
        self.text.append(e.text)
        if self.logprobs and e.token is not None and e.logprob is not None:
            self.entries.append(self._logprob_entry(e))

    def response(self, final: Event) -> dict:
        text = "".join(self.text)
        choice = {"index": 0, "logprobs": self._logprobs_json(self.entries),
                  "finish_reason": FINISH[final.finish_reason]}
        if self.kind == "chat":
            choice["message"] = {"role": "assistant", "content": text}
            obj = "chat.completion"
        else:
            choice["text"] = text
            obj = "text_completion"
        return self._envelope(obj, choice, usage_json(final.usage))

    # streaming: one chunk per event
    def chunk(self, e: Event) -> list[dict]:
        """The chunks for one event (the final event: the finishing chunk, then usage if asked)."""
        out = []
        finish = FINISH[e.finish_reason] if e.finish_reason else None
        entries = [self._logprob_entry(e)] if self.logprobs and e.logprob is not None else []
        if e.text or entries or finish or self.first_chunk:
            if self.kind == "chat":
                delta = {"content": e.text}
                if self.first_chunk:
                    delta["role"] = "assistant"
                choice = {"index": 0, "delta": delta, "logprobs": self._logprobs_json(entries) if entries else None,
                          "finish_reason": finish}
                obj = "chat.completion.chunk"
            else:
                choice = {"index": 0, "text": e.text, "logprobs": self._logprobs_json(entries) if entries else None,
                          "finish_reason": finish}
                obj = "text_completion"
            out.append(self._envelope(obj, choice, with_usage_key=self.include_usage))
            self.first_chunk = False
        if finish and self.include_usage:
            obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
            out.append(self._envelope(obj, None, usage_json(e.usage)))
        return out
