"""Streaming detokenization: print text as tokens arrive, never half a character.

One token is not always whole text. A byte-level BPE may split an emoji's
four UTF-8 bytes over several tokens, and a SentencePiece-style (Metaspace)
tokenizer only knows whether "▁word" means " word" or "word" from what came
before it. So each new token is decoded together with the token before it
("prefix" context), and the difference is emitted only once it no longer ends
in U+FFFD, the replacement character that marks an incomplete UTF-8 sequence
(or once 4 tokens have piled up: then the bytes are invalid, not incomplete).
(This is the prefix-offset method used by text-generation-inference.)
"""

from __future__ import annotations

from ..formats.tokenizer import Tokenizer

REPLACEMENT = "\ufffd"
MAX_CHAR_BYTES = 4


class StreamingDetokenizer:
    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.prefix = 0  # tokens[prefix:read] are the context already printed
        self.read = 0  # tokens[read:] are not printed yet
        self.text = ""  # everything emitted so far

    def add(self, token: int) -> str:
        """Add one token; return the new text that is now safe to print (maybe "")."""
        self.tokens.append(token)
        decode = self.tokenizer.decode
        before = decode(self.tokens[self.prefix:self.read])
        now = decode(self.tokens[self.prefix:])
        # No UTF-8 character spans more than 4 bytes (so 4 tokens): past that the
        # bytes are invalid, not incomplete, and waiting longer would stall the stream.
        complete = not now.endswith(REPLACEMENT) or len(self.tokens) - self.read >= MAX_CHAR_BYTES
        if len(now) > len(before) and complete:
            delta = now[len(before):]
            self.prefix, self.read = self.read, len(self.tokens)
            self.text += delta
            return delta
        return ""

    def flush(self) -> str:
        """At the end: whatever is still held back (an incomplete character stays as U+FFFD)."""
        decode = self.tokenizer.decode
        before = decode(self.tokens[self.prefix:self.read])
        now = decode(self.tokens[self.prefix:])
        delta = now[len(before):] if len(now) > len(before) else ""
        self.prefix = self.read = len(self.tokens)
        self.text += delta
        return delta
