"""A GGUF file's tokenizer, rebuilt from its metadata as a `tokenizers.Tokenizer`.

A GGUF carries no tokenizer.json: the vocabulary (`tokenizer.ggml.tokens`),
the BPE merges, each token's type (normal, control, user-defined), the special
ids and the name of the pre-tokenizer (`tokenizer.ggml.pre`) are metadata.
From them we build the same object tokenizer.json would give: byte-level BPE,
the split regex of the original model, special tokens matched whole. Two kinds
of vocabulary are supported (docs/gguf.md): byte-level BPE ("gpt2": Qwen,
SmolLM, Llama 3) and SentencePiece BPE ("llama": TinyLlama, Llama 2, Mistral
7B v0.1), the latter built as transformers' GGUF loader builds it.
"""

from __future__ import annotations

from typing import Protocol

from ..errors import FsxError


class GGUFHeader(Protocol):
    """What the tokenizer reads of formats/gguf.py's GGUFHeader (this module does not import the reader)."""

    path: object
    metadata: dict

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
MODELS = ("gpt2", "llama")  # tokenizer.ggml.model: byte-level BPE, SentencePiece BPE
# Architectures whose SentencePiece vocabulary transformers builds its own way (Gemma respells
# space tokens and orders merges by position; Phi-3 prefixes with a normalizer): refused.
_OWN_SENTENCEPIECE = ("gemma", "gemma2", "gemma3", "phi3")


def build_tokenizer(header: GGUFHeader):
    """fs_mlx Tokenizer from `tokenizer.ggml.*` (byte-level BPE or SentencePiece BPE)."""
    try:
        return _build(header)
    except FsxError:
        raise
    except Exception as e:  # tokenizers raises plain Exceptions: a merge naming an unknown token, ...
        raise FsxError(f"{header.path}: the GGUF tokenizer metadata is inconsistent "
                       f"({type(e).__name__}: {str(e)[:200]})") from None


def _build(header: GGUFHeader):
    from tokenizers import AddedToken

    from .tokenizer import Tokenizer

    m, where = header.metadata, header.path
    kind = m.get("tokenizer.ggml.model")
    if kind not in MODELS:
        raise FsxError(
            f"{where}: unsupported GGUF tokenizer model {kind!r}; fs-mlx builds byte-level "
            "BPE ('gpt2') and SentencePiece BPE ('llama') tokenizers from GGUF metadata"
        )
    tokens = m.get("tokenizer.ggml.tokens")
    if not tokens:
        raise FsxError(f"{where}: GGUF metadata lacks tokenizer.ggml.tokens")
    _check_types(m, where)
    types = m.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    arch = m.get("general.architecture")
    if kind == "llama" and arch in _OWN_SENTENCEPIECE:
        raise FsxError(f"{where}: the SentencePiece vocabulary of a {arch!r} GGUF needs {arch}-specific "
                       "handling that fs-mlx does not have")
    if kind == "llama":
        backend, spelled = _sentencepiece(m, tokens, where), None
    else:
        backend, spelled = _byte_level(m, tokens, where)

    # Control tokens (<|im_start|>, <s>) are special: matched whole, skipped when decoding
    # with skip_special_tokens. User-defined ones (<think>) are matched whole too.
    backend.add_special_tokens([
        AddedToken(t, special=True, normalized=False)
        for t, ty in zip(tokens, types) if ty == TOKEN_CONTROL and set(t) <= spelled
    ] if kind == "gpt2" else [
        # transformers' LlamaTokenizer also makes its unk token special: "<unk>" in text is one token.
        AddedToken(t, special=True, normalized=False)
        for i, (t, ty) in enumerate(zip(tokens, types))
        if ty == TOKEN_CONTROL or i == _token_id(m, "unknown_token_id", len(tokens))
    ])
    vocab = backend.get_vocab(with_added_tokens=False)
    backend.add_tokens([
        AddedToken(t, special=False, normalized=False)
        for t, ty in zip(tokens, types) if ty == TOKEN_USER_DEFINED and t in vocab
    ])

    bos = _token_id(m, "bos_token_id", len(tokens))
    add_bos = m.get("tokenizer.ggml.add_bos_token")
    if add_bos is None:  # old SentencePiece files say nothing: llama.cpp (and transformers) add BOS
        add_bos = kind == "llama"
    if add_bos and bos is not None:
        from tokenizers import processors

        b = tokens[bos]  # pairs: transformers' LlamaTokenizer puts a BOS before each part
        backend.post_processor = processors.TemplateProcessing(
            single=f"{b} $A", pair=f"{b} $A {b}:1 $B:1" if kind == "llama" else f"{b} $A $B",
            special_tokens=[(b, bos)]
        )
    eos = sorted({i for k in ("eos_token_id", "eot_token_id", "eom_token_id")
                  if (i := _token_id(m, k, len(tokens))) is not None})
    special = {name: tokens[i] for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                                                ("pad_token", "padding_token_id"), ("unk_token", "unknown_token_id"))
               if (i := _token_id(m, key, len(tokens))) is not None}
    return Tokenizer(backend=backend, eos_token_ids=eos, bos_token_id=bos,
                     chat_template=m.get("tokenizer.chat_template"), special_tokens=special)


# What each tokenizer.ggml.* value must be: a metadata value of another type (an int
# array where strings belong, a string where a bool does) is refused with its key.
_TYPES = {
    "tokens": (list, str), "token_type": (list, int), "scores": (list, (int, float)),
    "merges": (list, str), "pre": (str, None), "chat_template": (str, None),
    "add_bos_token": (bool, None), "add_space_prefix": (bool, None),
}


def _check_types(m: dict, where) -> None:
    from ..model.config import MAX_VOCAB

    for key, (kind, item) in _TYPES.items():
        full = "tokenizer.chat_template" if key == "chat_template" else f"tokenizer.ggml.{key}"
        value = m.get(full)
        if value is None:
            continue
        ok = isinstance(value, kind) and (item is None or all(
            isinstance(x, item) and not (item is not bool and isinstance(x, bool)) for x in value))
        if not ok:
            what = f"a list of {getattr(item, '__name__', 'numbers')}" if item else kind.__name__
            raise FsxError(f"{where}: GGUF metadata {full} must be {what}")
    tokens = m["tokenizer.ggml.tokens"]
    if len(tokens) > MAX_VOCAB:
        raise FsxError(f"{where}: GGUF vocabulary of {len(tokens)} tokens (at most {MAX_VOCAB})")
    for key in ("token_type", "scores"):
        values = m.get(f"tokenizer.ggml.{key}")
        if values is not None and len(values) != len(tokens):
            raise FsxError(f"{where}: GGUF metadata tokenizer.ggml.{key} has {len(values)} entries "
                           f"for {len(tokens)} tokens")


def _token_id(m: dict, key: str, n: int) -> int | None:
    i = m.get(f"tokenizer.ggml.{key}")  # an id outside the vocabulary (or not an id) is ignored
    return i if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n else None


def _sentencepiece(m: dict, tokens: list[str], where):
    """SentencePiece BPE ("llama"), as transformers' GGUF loader builds it (a LlamaTokenizer).

    The file has tokens and scores but no merges: BPE merges are recovered from the
    scores (`_merges_from_scores`). Pieces spell a space as "▁"; a character with no
    piece falls back to its UTF-8 bytes, the `<0xNN>` tokens (byte_fallback). Text gets
    "▁" for each space and one in front (Metaspace, prepend only at the start, unless
    `tokenizer.ggml.add_space_prefix` is false); decoding undoes both.
    """
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    scores = m.get("tokenizer.ggml.scores")
    if scores is None or len(scores) != len(tokens):
        raise FsxError(f"{where}: GGUF SentencePiece vocabulary lacks tokenizer.ggml.scores")
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = ([tuple(x.split(" ", 1)) for x in m["tokenizer.ggml.merges"]] if m.get("tokenizer.ggml.merges")
              else _merges_from_scores(vocab, dict(zip(tokens, (float(s) for s in scores)))))
    # No unk_token on the model, as in transformers (a character with neither a piece nor
    # byte tokens is dropped); fuse_unk and byte_fallback as in its LlamaTokenizer.
    backend = HFTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=True, byte_fallback=True))
    prefix = bool(m.get("tokenizer.ggml.add_space_prefix", True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="first" if prefix else "never", split=False)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:  # drop the space the prefix "▁" decodes to
        steps.append(decoders.Strip(content=" ", left=1))
    backend.decoder = decoders.Sequence(steps)
    return backend


def _merges_from_scores(vocab: dict[str, int], scores: dict[str, float]) -> list[tuple[str, str]]:
    """BPE merges a SentencePiece vocabulary implies (transformers' `generate_merges`).

    Every way to cut a piece into two pieces of the vocabulary is a merge; a piece
    with a higher score was learned earlier, so its merges rank first (ties: longer
    left, then longer right part; then file order).
    """
    merges = []
    for piece, score in scores.items():
        cuts = [(piece[:k], piece[k:], score) for k in range(1, len(piece))
                if piece[:k] in vocab and piece[k:] in vocab]
        merges += sorted(cuts, key=lambda c: (vocab[c[0]], vocab[c[1]]))
    merges.sort(key=lambda c: (c[2], len(c[0]), len(c[1])), reverse=True)
    return [(a, b) for a, b, _ in merges]


def _byte_level(m: dict, tokens: list[str], where):
    """Byte-level BPE ("gpt2"): the backend and the byte alphabet its tokens are spelled in."""
    from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    pre = m.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise FsxError(
            f"{where}: unsupported GGUF pre-tokenizer {pre!r}; supported: "
            f"{', '.join(sorted(PRE_TOKENIZERS))}"
        )
    merges = m.get("tokenizer.ggml.merges")
    if merges is None:
        raise FsxError(f"{where}: GGUF metadata lacks tokenizer.ggml.merges")

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
    return backend, alphabet


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
