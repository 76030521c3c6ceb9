"""Chat templates: from a list of messages to the exact prompt a model was trained on.

Each checkpoint ships its own Jinja template (tokenizer_config.json or
chat_template.jinja). Templates are untrusted input, so they are rendered in
Jinja's immutable sandbox with limits on size, steps and time (sandbox.py),
with the same globals transformers provides (`raise_exception`,
`strftime_now`, a `tojson` that keeps non-ASCII text).
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

from jinja2 import TemplateError

from ..errors import FsxError
from ..formats.tokenizer import Tokenizer
from .sandbox import MAX_SIZE, BoundedEnvironment, TemplateLimitError, check_source, render_bounded

# For models without a template: plain ChatML, which most instruction-tuned models know.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MAX_INDENT = 64  # tojson(indent=...): templates use 2 or 4; 10**9 asked for gigabytes


def _raise(message: str):
    raise TemplateError(message)


def _tojson(x, indent=None, separators=None, sort_keys=False):
    if indent is not None and not (isinstance(indent, int) and 0 <= indent <= MAX_INDENT):
        raise TemplateLimitError(f"tojson indent must be an integer in [0, {MAX_INDENT}], got {indent!r}")
    return json.dumps(x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=8)
def _compile(source: str):
    if len(source) > MAX_SIZE:
        raise TemplateLimitError(f"the template is {len(source):,} characters, over {MAX_SIZE:,}")
    env = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(check_source(env, source))


def render(
    tokenizer: Tokenizer,
    messages: list[dict],
    add_generation_prompt: bool = True,
    **kwargs,
) -> str:
    """The prompt text for `messages`; kwargs reach the template (enable_thinking=...).

    Whatever the template does wrong (a Jinja error, a limit, a Python error inside
    a filter, a lone surrogate in its output) ends in one FsxError naming it.
    """
    source = tokenizer.chat_template or CHATML
    try:
        text = render_bounded(_compile(source), messages=messages,
                              add_generation_prompt=add_generation_prompt,
                              **{**tokenizer.special_tokens, **kwargs})
    except TemplateError as e:
        raise FsxError(f"the model's chat template failed: {e}") from None
    except Exception as e:  # e.g. 1/0, int('x'), range(10**6) in a template: the template's fault
        raise FsxError(f"the model's chat template failed: {type(e).__name__}: {str(e)[:200]}") from None
    # A lone surrogate ('\ud800', from a template or a JSON message) cannot be encoded
    # as UTF-8 (the tokenizer would fail on it): each becomes one U+FFFD.
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def has_thinking(tokenizer: Tokenizer) -> bool:
    """Qwen3-style templates understand enable_thinking and <think> blocks."""
    return bool(tokenizer.chat_template and "enable_thinking" in tokenizer.chat_template)


class Conversation:
    """The messages of one chat, and the prompt tokens for the next reply."""

    def __init__(self, tokenizer: Tokenizer, system: str | None = None, think: bool = True):
        self.tokenizer = tokenizer
        self.system = system
        self.think = think
        self.turns: list[dict] = []  # user / assistant messages, oldest first

    @property
    def messages(self) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.turns

    def prompt_tokens(self) -> list[int]:
        kwargs = {"enable_thinking": self.think} if has_thinking(self.tokenizer) else {}
        text = render(self.tokenizer, self.messages, add_generation_prompt=True, **kwargs)
        # The template writes the special tokens itself (BOS included): add none.
        return self.tokenizer.encode(text, add_special_tokens=False)

    def fit(self, context: int, reserve: int) -> int:
        """Drop the oldest turns until the prompt plus `reserve` new tokens fit `context`.

        Returns how many turns were dropped (the system prompt is always kept);
        raises if even the last user message alone does not fit.
        """
        dropped = 0
        while len(self.prompt_tokens()) + reserve > context:
            if len(self.turns) <= 1:
                raise FsxError(
                    f"the message is too long: {len(self.prompt_tokens())} prompt tokens + "
                    f"{reserve} for the reply exceed the context of {context} tokens"
                )
            self.turns.pop(0)
            dropped += 1
            # Keep turns starting with a user message, as templates expect.
            while self.turns and self.turns[0]["role"] != "user":
                self.turns.pop(0)
                dropped += 1
        return dropped

    def reset(self) -> None:
        self.turns.clear()
