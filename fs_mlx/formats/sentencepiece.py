"""SentencePiece BPE vocabularies in GGUF files, built as transformers' GGUF loader builds them.

A GGUF with `tokenizer.ggml.model = "llama"` carries a SentencePiece model's pieces and
scores, but no merges and no word on how text is prepared: that knowledge lives in the
original tokenizer.json, which a GGUF does not carry. transformers' GGUF loader
(integrations/gguf/gguf_tokenizer_mapping.py) picks it by `general.architecture`, and so
do we (docs/tokenizer.md, "SentencePiece variants"):

| variant | architectures | text before BPE | merges ranked by | decoding |
|---|---|---|---|---|
| llama (LlamaTokenizer) | llama, mistral, ... | "▁" for spaces, one "▁" in front of the text (Metaspace) | score | drops the front space |
| gemma (GemmaTokenizer) | gemma, gemma2, gemma3 | "▁" for spaces, nothing in front | position in the file | keeps every space |
| phi3 (LlamaTokenizer + normalizer) | phi3 | "▁" for spaces, one "▁" in front of every piece between special tokens | score | drops the front space |

Everything here returns a `tokenizers.Tokenizer` without its added tokens and BOS; the
caller (gguf_tokenizer.py) adds those the same way for every variant.
"""

from __future__ import annotations

import itertools

from ..errors import FsxError

SPACE = "\u2581"  # "▁": how SentencePiece spells a space inside a piece
VARIANTS = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "phi3": "phi3"}  # anything else: "llama"


def variant(arch) -> str:
    return VARIANTS.get(arch, "llama")


def build(m: dict, tokens: list[str], arch, where):
    """The BPE backend (normalizer, pre-tokenizer, model, decoder) for a SentencePiece vocabulary."""
    scores = m.get("tokenizer.ggml.scores")
    if scores is None or len(scores) != len(tokens):
        raise FsxError(f"{where}: GGUF SentencePiece vocabulary lacks tokenizer.ggml.scores")
    kind = variant(arch)
    if kind == "gemma":
        return _gemma(m, tokens)
    # Phi-3's normalizer always puts the "▁" in front (transformers reads no flag for it), so its
    # decoder always drops one; a Llama 2 style file may say add_space_prefix = false.
    prefix = kind == "phi3" or bool(m.get("tokenizer.ggml.add_space_prefix", True))
    backend = _llama(m, tokens, dict(zip(tokens, (float(s) for s in scores))), prefix)
    if kind == "phi3":
        _phi3(backend)
    return backend


def _bpe(m: dict, tokens: list[str], rank: dict[str, float], unk: str | None = None):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models

    vocab = {t: i for i, t in enumerate(tokens)}  # a repeated piece: its last id, as in transformers
    merges = ([tuple(x.split(" ", 1)) for x in m["tokenizer.ggml.merges"]] if m.get("tokenizer.ggml.merges")
              else merges_from_ranks(vocab, rank))
    # fuse_unk and byte_fallback as in transformers' LlamaTokenizer and GemmaTokenizer: a character
    # with no piece becomes its UTF-8 bytes, the <0xNN> tokens.
    return HFTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True))


def _llama(m: dict, tokens: list[str], scores: dict[str, float], prefix: bool):
    """LlamaTokenizer (TinyLlama, Llama 2, Mistral 7B v0.1-v0.3): Metaspace with a "▁" in front.

    No unk token on the model, as in transformers (a character with neither a piece nor
    byte tokens is dropped). Text gets "▁" for each space and one in front (prepend only
    at the start; none if `prefix` is false: the file's `tokenizer.ggml.add_space_prefix`,
    which transformers ignores and llama.cpp and sentencepiece honour); decoding undoes both.
    """
    from tokenizers import decoders, pre_tokenizers

    backend = _bpe(m, tokens, scores)
    backend.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=SPACE, prepend_scheme="first" if prefix else "never", split=False)
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:  # drop the space the prefix "▁" decodes to
        steps.append(decoders.Strip(content=" ", left=1))
    backend.decoder = decoders.Sequence(steps)
    return backend


def _phi3(backend) -> None:
    """Phi-3: the LlamaTokenizer, but the "▁" in front comes from a normalizer.

    transformers rebuilds what Phi-3's tokenizer.json does (`phi3_tokenizer`): Prepend("▁")
    and Replace(" ", "▁") as a normalizer, no pre-tokenizer. Normalizers run on each piece
    of text between special tokens, so "<|user|>hi" is "<|user|>" + "▁hi", and " hi" is
    "▁▁hi" where Metaspace gives "▁hi". The decoder stays the LlamaTokenizer's (drops one
    front space).
    """
    from tokenizers import normalizers

    backend.normalizer = normalizers.Sequence(
        [normalizers.Prepend(prepend=SPACE), normalizers.Replace(pattern=" ", content=SPACE)])
    backend.pre_tokenizer = None


def _gemma(m: dict, tokens: list[str]):
    """GemmaTokenizer (Gemma 1, 2, 3): spaces become "▁", nothing is put in front.

    Two things transformers' `gemma_tokenizer` fixes in Gemma files, and so do we:
    1. llama.cpp's converter writes Gemma's user-defined space runs with real spaces ("  "),
       while the text they must match is spelled with "▁": a token of spaces only is respelled
       "▁" * len before the merges are derived. (The file's "  " then names no token of the
       vocabulary, so it is not added as a whole-match token; runs of spaces are found by BPE.)
    2. Merges are ranked by position in the file, not by score: Gemma's scores do not follow
       its merge order (llama.cpp writes -1000 for every added token, the space runs included).
    The model knows "<unk>" as its unk token (GemmaTokenizer's default), when the vocabulary has it.
    """
    from tokenizers import decoders, normalizers, pre_tokenizers

    tokens = [SPACE * len(t) if " " in t and not t.strip() else t for t in tokens]
    positions = {t: -float(i) for i, t in enumerate(tokens)}
    backend = _bpe(m, tokens, positions, unk="<unk>" if "<unk>" in positions else None)
    backend.normalizer = normalizers.Replace(" ", SPACE)
    # GemmaTokenizer's own pre-tokenizer: after the normalizer there is no " " left to split
    # on, so it does nothing; kept so the pipeline is transformers' one for one.
    backend.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    backend.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    return backend


def merges_from_ranks(vocab: dict[str, int], rank: dict[str, float]) -> list[tuple[str, str]]:
    """BPE merges a SentencePiece vocabulary implies (transformers' `generate_merges`).

    Every way to cut a piece into two pieces of the vocabulary is a merge; a piece with a
    higher rank (score, or -position for Gemma) was learned earlier, so its merges come
    first (ties: longer left, then longer right part; then file order). Only cuts whose
    two lengths are lengths of some piece are tried: the same merges, but a hostile file's
    one megabyte-long token costs a few cuts, not a million slices of up to a megabyte.
    """
    lengths = {len(t) for t in vocab}
    sizes = sorted(lengths)
    merges = []
    for piece, r in rank.items():
        n = len(piece)
        cuts = [(piece[:k], piece[k:], r) for k in itertools.takewhile(lambda k: k < n, sizes)
                if n - k in lengths and piece[:k] in vocab and piece[k:] in vocab]
        merges += sorted(cuts, key=lambda c: (vocab[c[0]], vocab[c[1]]))
    merges.sort(key=lambda c: (c[2], len(c[0]), len(c[1])), reverse=True)
    return [(a, b) for a, b, _ in merges]
