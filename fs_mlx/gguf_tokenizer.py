"""A GGUF file's tokenizer, rebuilt from its metadata as a `tokenizers.Tokenizer`.

A GGUF carries no tokenizer.json: the vocabulary (`tokenizer.ggml.tokens`),
the BPE merges, each token's type (normal, control, user-defined), the special
ids and the name of the pre-tokenizer (`tokenizer.ggml.pre`) are metadata.
From them we build the same object tokenizer.json would give: byte-level BPE,
the split regex of the original model, special tokens matched whole. Only
byte-level BPE ("gpt2") files are supported; see docs/gguf.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import FsxError

if TYPE_CHECKING:
    from .gguf import GGUFHeader

# tokenizer.ggml.pre -> how text is split before BPE (the regexes are the
# tokenizer.json ones of the original models; llama.cpp has the same list).
_GPT2 = None  # ByteLevel's own regex
_SMOLLM = "smollm"  # digits one by one, then the GPT-2 regex (StarCoder/SmolLM tokenizer.json)
_QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS = {
    "default": _GPT2, "gpt2": _GPT2, "smollm": _SMOLLM,
    "qwen2": _QWEN2, "deepseek-r1-qwen": _QWEN2,
    "llama-bpe": _LLAMA3, "llama3": _LLAMA3, "llama-v3": _LLAMA3,
}
TOKEN_CONTROL, TOKEN_USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values


def build_tokenizer(header: GGUFHeader):
    """fs_mlx Tokenizer from `tokenizer.ggml.*` (byte-level BPE only)."""
    from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers import Tokenizer as HFTokenizer

    from .tokenizer import Tokenizer

    m, where = header.metadata, header.path
    kind = m.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise FsxError(
            f"{where}: unsupported GGUF tokenizer model {kind!r}; fs-mlx builds byte-level "
            "BPE ('gpt2') tokenizers from GGUF metadata"
        )
    pre = m.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise FsxError(
            f"{where}: unsupported GGUF pre-tokenizer {pre!r}; supported: "
            f"{', '.join(sorted(PRE_TOKENIZERS))}"
        )
    tokens = m.get("tokenizer.ggml.tokens")
    merges = m.get("tokenizer.ggml.merges")
    if not tokens or merges is None:
        raise FsxError(f"{where}: GGUF metadata lacks tokenizer.ggml.tokens/merges")
    types = m.get("tokenizer.ggml.token_type") or [1] * len(tokens)

    spelling = _bytes_to_unicode()  # byte-level BPE writes every byte as a printable char
    alphabet = set(spelling.values())
    vocab = {}
    for i, t in enumerate(tokens):
        t = t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8"))
        vocab.setdefault(t, i)
    pairs = [tuple(x.split(" ", 1)) for x in merges]
    backend = HFTokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False))

    split = PRE_TOKENIZERS[pre]
    if split is _GPT2:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif split is _SMOLLM:
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        if pre in ("qwen2", "deepseek-r1-qwen"):
            backend.normalizer = normalizers.NFC()  # as in Qwen's tokenizer.json
    backend.decoder = decoders.ByteLevel()

    # Control tokens (<|im_start|>) are special: matched whole, skipped when decoding
    # with skip_special_tokens. User-defined ones (<think>) are matched whole too.
    backend.add_special_tokens([
        AddedToken(t, special=True, normalized=False)
        for t, ty in zip(tokens, types) if ty == TOKEN_CONTROL and set(t) <= alphabet
    ])
    backend.add_tokens([
        AddedToken(t, special=False, normalized=False)
        for t, ty in zip(tokens, types) if ty == TOKEN_USER_DEFINED and t in vocab
    ])

    def token_id(key: str) -> int | None:
        i = m.get(f"tokenizer.ggml.{key}")
        return int(i) if i is not None and 0 <= int(i) < len(tokens) else None

    bos = token_id("bos_token_id")
    if m.get("tokenizer.ggml.add_bos_token") and bos is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{tokens[bos]} $A", pair=f"{tokens[bos]} $A $B", special_tokens=[(tokens[bos], bos)]
        )
    eos = sorted({i for k in ("eos_token_id", "eot_token_id", "eom_token_id")
                  if (i := token_id(k)) is not None})
    special = {name: tokens[i] for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                                                ("pad_token", "padding_token_id"), ("unk_token", "unknown_token_id"))
               if (i := token_id(key)) is not None}
    return Tokenizer(backend=backend, eos_token_ids=eos, bos_token_id=bos,
                     chat_template=m.get("tokenizer.chat_template"), special_tokens=special)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (bytes that print stand for themselves)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars
