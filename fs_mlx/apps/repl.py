"""`fsx run`: chat with a model in the terminal.

A loop of: read a message (or a /command) -> render the conversation with the
model's chat template -> generate, reusing the KV cache for every token of
the conversation it already holds -> stream the reply -> print its stats.
Ctrl-C stops a reply and keeps the conversation; Ctrl-D leaves.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ..errors import FsxError
from ..generation.chat import Conversation, has_thinking
from ..generation.generate import GenerationStats, PromptCache, stream_generate
from ..generation.sample import SamplingParams
from ..loader import LoadedModel

HELP = """\
commands:
  /help            this text
  /reset           forget the conversation (keeps the system prompt)
  /system TEXT     set the system prompt (and reset)
  /stats           statistics of the last reply and of the context
  /think /no_think turn the model's thinking on or off (Qwen3)
  /exit            leave (or Ctrl-D)
multi-line input: start and end with \"\"\" , or end a line with \\ to continue.
Ctrl-C stops a reply; the conversation is kept."""

DIM, RESET = "\033[2m", "\033[0m"


@dataclass
class ChatOptions:
    params: SamplingParams
    max_tokens: int = 512
    context: int = 4096
    hide_think: bool = False
    stop: tuple[str, ...] = ()


class ThinkingPrinter:
    """Prints a reply, showing <think>...</think> dimmed (or not at all)."""

    def __init__(self, out, hide: bool, color: bool):
        self.out, self.hide, self.color = out, hide, color
        self.thinking = False

    def write(self, text: str) -> None:
        while text:
            tag = "</think>" if self.thinking else "<think>"
            before, found, text = text.partition(tag)
            self._emit(before)
            if found:
                self.thinking = not self.thinking
                if not self.thinking and self.hide:
                    text = text.lstrip("\n")
                elif not self.hide:
                    self._emit(found, force_dim=True)
        self.out.flush()

    def _emit(self, s: str, force_dim: bool = False) -> None:
        if not s or (self.thinking and self.hide):
            return
        dim = (self.thinking or force_dim) and self.color
        self.out.write(f"{DIM}{s}{RESET}" if dim else s)

    def end(self) -> None:
        if self.color:
            self.out.write(RESET)
        self.thinking = False


class ChatSession:
    def __init__(self, lm: LoadedModel, opts: ChatOptions, system: str | None, think: bool,
                 out=sys.stdout):
        self.lm, self.opts, self.out = lm, opts, out
        self.color = out.isatty()
        self.conv = Conversation(lm.tokenizer, system=system, think=think)
        self.cache = PromptCache(lm.model)
        self.last_stats: GenerationStats | None = None

    def say(self, text: str, dim: bool = True) -> None:
        self.out.write((f"{DIM}{text}{RESET}" if dim and self.color else text) + "\n")
        self.out.flush()

    # --- commands -----------------------------------------------------------
    def command(self, line: str) -> bool:
        """Handle a /command; return False when the session should end."""
        name, _, arg = line.partition(" ")
        if name in ("/exit", "/quit", "/bye"):
            return False
        if name == "/help":
            self.say(HELP, dim=False)
        elif name == "/reset":
            self.conv.reset()
            self.say("[conversation reset]")
        elif name == "/system":
            self.conv.system = arg.strip() or None
            self.conv.reset()
            self.say(f"[system prompt {'set' if arg.strip() else 'cleared'}; conversation reset]")
        elif name == "/stats":
            self.say(self.last_stats.line() if self.last_stats else "[no reply yet]")
            self.say(f"[context: {self.cache.offset} of {self.opts.context} tokens in the KV cache]")
        elif name in ("/think", "/no_think"):
            if not has_thinking(self.lm.tokenizer):
                self.say("[this model's template has no thinking mode]")
            else:
                self.conv.think = name == "/think"
                self.say(f"[thinking {'on' if self.conv.think else 'off'}]")
        else:
            self.say(f"[unknown command {name}; /help lists them]")
        return True

    # --- one turn -----------------------------------------------------------
    def reply(self, message: str) -> str:
        """Generate and print the reply to `message`; return the reply text."""
        self.conv.turns.append({"role": "user", "content": message})
        try:
            dropped = self.conv.fit(self.opts.context, reserve=self.opts.max_tokens)
        except FsxError as e:
            self.conv.turns.pop()
            self.say(f"[{e}]")
            return ""
        if dropped:
            self.say(f"[context full: dropped the {dropped} oldest message(s) to fit "
                     f"{self.opts.context} tokens]")
        printer = ThinkingPrinter(self.out, self.opts.hide_think, self.color)
        parts: list[str] = []
        finish = "interrupted"
        stream = None
        try:
            prompt = self.conv.prompt_tokens()
            stream = stream_generate(
                self.lm, prompt, self.opts.params, max_tokens=self.opts.max_tokens,
                stop=self.opts.stop, cache=self.cache, context=self.opts.context,
            )
            for r in stream:
                parts.append(r.text)
                printer.write(r.text)
                if r.finish_reason:
                    finish, self.last_stats = r.finish_reason, r.stats
        except KeyboardInterrupt:
            pass  # stop this reply only
        finally:
            if stream is not None:
                stream.close()  # syncs the KV cache with what was actually computed
            printer.end()
        text = "".join(parts)
        if text or finish != "interrupted":
            self.conv.turns.append({"role": "assistant", "content": text})
        else:  # stopped before a word was said: as if the message was never sent
            self.conv.turns.pop()
        self.out.write("\n")
        if finish == "interrupted":
            self.say("[interrupted]")
        elif self.last_stats:
            note = {"length": " | stopped at --max-tokens", "stop": " | stop string"}.get(finish, "")
            self.say(f"[{self.last_stats.line()}{note}]")
        return text


def read_message(prompt: str = ">>> ") -> str:
    """One message: a line, lines joined by a trailing backslash, or a \"\"\" block."""
    line = input(prompt)
    if line.strip().startswith('"""'):
        lines = [line.strip()[3:]]
        while not lines[-1].rstrip().endswith('"""'):
            lines.append(input("... "))
        lines[-1] = lines[-1].rstrip()[:-3]
        return "\n".join(lines).strip()
    lines = [line]
    while lines[-1].endswith("\\"):
        lines[-1] = lines[-1][:-1]
        lines.append(input("... "))
    return "\n".join(lines).strip()


def chat_loop(session: ChatSession) -> None:
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    session.say("Type a message; /help for commands, Ctrl-D or /exit to leave.")
    while True:
        try:
            message = read_message()
        except EOFError:
            session.out.write("\n")
            return
        except KeyboardInterrupt:
            session.out.write("\n")
            session.say("[Ctrl-C stops a reply; use /exit or Ctrl-D to leave]")
            continue
        if not message:
            continue
        if message.startswith("/"):
            if not session.command(message):
                return
            continue
        session.reply(message)
