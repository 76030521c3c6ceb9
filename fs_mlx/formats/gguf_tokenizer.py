"""A GGUF file's tokenizer, rebuilt from its metadata as a `tokenizers.Tokenizer`.

A GGUF carries no tokenizer.json: the vocabulary (`tokenizer.ggml.tokens`),
the BPE merges, each token's type (normal, control, user-defined), the special
ids and the name of the pre-tokenizer (`tokenizer.ggml.pre`) are metadata.
From them we build the same object transformers' GGUF loader builds, which is
the oracle the tests compare with (golden/make_gguf_tokenizer_reference.py).
Two kinds of vocabulary are supported (docs/gguf.md): byte-level BPE ("gpt2":
Qwen, SmolLM, Llama 3, Phi-4-mini, Mistral Nemo's tekken) built here, and
SentencePiece BPE ("llama": Llama 2, Mistral 7B, Gemma, Phi-3) built in
formats/sentencepiece.py with the variant of each architecture.
"""

from __future__ import annotations

from typing import Protocol

from ..errors import FsxError
from . import sentencepiece


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
# Mistral Nemo / Ministral ("tekken"): case changes split words, digits one by one.
_TEKKEN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Phi-4-mini ("gpt-4o", the o200k split): as tekken, with contractions kept on the word, digits by three.
_GPT4O = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS = {
    "default": _GPT2, "gpt2": _GPT2, "smollm": _SMOLLM,
    "qwen2": _QWEN2, "deepseek-r1-qwen": _QWEN2,
    "llama-bpe": _LLAMA3, "llama3": _LLAMA3, "llama-v3": _LLAMA3, "pixtral": _LLAMA3,
    "tekken": _TEKKEN, "gpt-4o": _GPT4O,
}
TOKEN_CONTROL, TOKEN_USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values
# Turn enders a GGUF does not name as EOS. A Hugging Face checkpoint lists them in
# generation_config.json (Gemma 3: <eos> and <end_of_turn>; Phi-3: <|endoftext|> and <|end|>),
# which a GGUF does not carry: llama.cpp recognises them by their text (its end-of-generation
# list in llama-vocab.cpp), and so do we, for control tokens of the families we run.
END_OF_TURN = ("<end_of_turn>", "<|end|>", "<|im_end|>", "<|eot_id|>")
# The special tokens the constructor of the class transformers builds registers (GPT2Tokenizer,
# LlamaTokenizer, GemmaTokenizer): special in the tokenizer whenever the vocabulary has them.
# A name the vocabulary lacks is appended as a new token by transformers (Llama 3 files get an
# "<|endoftext|>" at id 128256); we do not: no embedding row would have its id.
CLASS_SPECIALS = {"gpt2": ("<|endoftext|>",), "llama": ("<unk>", "<s>", "</s>"), "phi3": ("<unk>", "<s>", "</s>"),
                  "gemma": ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")}
MODELS = ("gpt2", "llama")  # tokenizer.ggml.model: byte-level BPE, SentencePiece BPE


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
    if kind == "llama":  # the variant (Llama 2, Gemma, Phi-3) goes by the architecture, as in transformers
        backend = sentencepiece.build(m, tokens, arch, where)
        defaults = CLASS_SPECIALS[sentencepiece.variant(arch)]
    else:
        backend, defaults = _byte_level(m, tokens, where), CLASS_SPECIALS["gpt2"]

    # Control tokens (<|im_start|>, <s>) are special: matched whole, skipped when decoding
    # with skip_special_tokens. So are the special tokens of the class transformers builds,
    # whatever their type in the file (Phi-3's "</s>" is user-defined, yet skipped).
    # User-defined ones (<think>, Gemma's "\n\n") are matched whole too. Only tokens of the
    # vocabulary as built: a byte-level control token spelled outside the byte alphabet is a
    # llama.cpp mislabel, Gemma's "  " is "▁▁" now (transformers skips those too).
    vocab = backend.get_vocab(with_added_tokens=False)
    backend.add_special_tokens([
        AddedToken(t, special=True, normalized=False)
        for t, ty in zip(tokens, types) if (ty == TOKEN_CONTROL or t in defaults) and t in vocab
    ])
    backend.add_tokens([
        AddedToken(t, special=False, normalized=False)
        for t, ty in zip(tokens, types) if ty == TOKEN_USER_DEFINED and t in vocab and t not in defaults
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
    eos = {i for k in ("eos_token_id", "eot_token_id", "eom_token_id") if (i := _token_id(m, k, len(tokens))) is not None}
    eos = sorted(eos | {i for i, (t, ty) in enumerate(zip(tokens, types)) if ty == TOKEN_CONTROL and t in END_OF_TURN})
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


def _byte_level(m: dict, tokens: list[str], where):
    """Byte-level BPE ("gpt2"): every token spelled in GPT-2's byte alphabet, the split regex of `pre`."""
    from tokenizers import Regex, decoders, models, pre_tokenizers
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
        # No normalizer: Qwen's tokenizer.json has NFC, but neither transformers' GGUF loader nor
        # llama.cpp applies it to a GGUF vocabulary ("e" + U+0301 stays two characters).
    backend.decoder = decoders.ByteLevel()
    return backend


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
