#!/usr/bin/env python3
"""transformers' GGUF tokenizer on the small GGUF files the tests write, one per pre-tokenizer
and one per SentencePiece variant (Llama 2 style, Gemma, Phi-3).

tests/test_gguf.py checks fs-mlx's GGUF tokenizer against transformers'
(`AutoTokenizer.from_pretrained(dir, gguf_file=...)`). That loader imports torch, which the
tests do not have, so this script runs it once and records its outputs. It builds the files
with the tests' own writer (tests/gguf_files.py), in a temp dir, and writes
golden/vectors/gguf_tokenizers.json:

- per pre-tokenizer of `PRE_TOKENIZERS` (`tokenizer_gguf(path, pre)` = `write_gguf(path,
  random_model(), pre=pre)`): `tokenizer_metadata_sha256` (sha256 of every tokenizer.* key of
  the file, as canonical JSON; the test checks that the file it builds still has it), the
  tokenizer class, normalizer and pre-tokenizer transformers built, and for each of
  `TOKENIZER_TEXTS` `ids` = `encode(text)` (default add_special_tokens), `decoded` =
  `decode(ids)` and `splits`, the pieces its normalizer and pre-tokenizer cut the text into.
- `sentencepiece`: a SentencePiece ("llama") vocabulary, as TinyLlama / Llama 2 / Mistral 7B
  files carry one. `train_spm_vocab` trains a tiny BPE model with the `sentencepiece`
  library (byte_fallback, on a small corpus with accents, CJK, emoji and code) and records
  its tokens, scores and llama.cpp token types under `vocab` (the tests have no
  sentencepiece: they write the file from this record with `spm_tokenizer_gguf`). For each
  of `SPM_TEXTS`: `ids`, `ids_no_special` = `encode(text, add_special_tokens=False)`,
  `tokens_no_special`, `decoded` and `decoded_skip_special`.
- `gemma`: the same for a Gemma-style vocabulary (`train_gemma_vocab`: no dummy prefix,
  <pad> <eos> <bos> <unk> first, turn markers, newline and space runs, HTML tags as
  user-defined pieces, converted as llama.cpp's Gemma converter does) in a gemma3 file made
  from golden/checkpoints/gemma3-tiny, on `GEMMA_TEXTS`; a gemma2 file must give the same.
- `phi3`: the Llama 2 style vocabulary plus Phi-3's added tokens (`phi3_vocab`) in a phi3
  file made from golden/checkpoints/phi3-tiny, on `PHI3_TEXTS`.

Usage:  python golden/make_gguf_tokenizer_reference.py [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent
REPO = GOLDEN.parent
sys.path.insert(0, str(GOLDEN))
sys.path.insert(0, str(REPO / "tests"))  # the tests' GGUF writer, so the files are the same
import fs_mlx  # noqa: E402, F401  (before mlx.core, as tests/conftest.py does)
from gguf_files import (  # noqa: E402
    GEMMA_TEXTS,
    PHI3_TEXTS,
    PRE_TOKENIZERS,
    SPM_TEXTS,
    TOKENIZER_TEXTS,
    spm_tokenizer_gguf,
    tokenizer_gguf,
    tokenizer_metadata,
    tokenizer_metadata_sha256,
)
from make_golden import update_manifest, write_json  # noqa: E402

OUT = GOLDEN / "vectors" / "gguf_tokenizers.json"


def record(pre: str, tmp: Path) -> dict:
    from transformers import AutoTokenizer

    folder = tmp / pre
    folder.mkdir()
    path = tokenizer_gguf(folder / "t.gguf", pre)
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=path.name)
    meta = tokenizer_metadata(path)
    cases = []
    for text in TOKENIZER_TEXTS:
        ids = [int(i) for i in tok.encode(text)]
        cases.append({"text": text, "ids": ids, "decoded": tok.decode(ids), "splits": splits(tok, text)})
    return {
        "tokenizer_metadata_sha256": tokenizer_metadata_sha256(path),
        "gguf_tokenizer_ggml_pre": meta["tokenizer.ggml.pre"],
        "n_tokens": len(meta["tokenizer.ggml.tokens"]),
        "n_merges": len(meta["tokenizer.ggml.merges"]),
        "tokenizer_class_loaded": type(tok).__name__,
        "pre_tokenizer": json.loads(tok.backend_tokenizer.to_str())["pre_tokenizer"],
        "normalizer": json.loads(tok.backend_tokenizer.to_str())["normalizer"],
        "cases": cases,
    }


def splits(tok, text: str) -> list[str]:
    """The pieces the normalizer and pre-tokenizer cut `text` into before BPE (no added tokens
    here): this pins the split regex itself, which a small vocabulary cannot tell apart."""
    backend = tok.backend_tokenizer
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    return [piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(text)]


# The corpus the SentencePiece model is trained on: a few languages, emoji, code and whitespace,
# so the vocabulary has multi-space and newline pieces and needs byte fallback for the rest.
SPM_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! Hello, hello, HELLO.",
    "Café, naïve, résumé, déjà vu, crème brûlée, Ångström.",
    "中文文本，日本語のテキスト、한국어 문장.",
    "Emoji: 🤗 🚀 😀 ❤️ 👍",
    "def f(x):\n    return x * 2  # double\n",
    "for i in range(10): print(i, i ** 2)",
    "x = 12345 + 3.14; y = [1, 2, 3]",
    "don't, won't, we'll, it's, I'm",
    "    indented   text  with   spaces\n\nand newlines\n",
]


def train_spm(corpus: list[str], vocab_size: int, **options):
    """A tiny SentencePiece BPE model (one thread, fixed corpus: the same pieces every run)."""
    import io

    import sentencepiece as spm

    blob = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus * 30), model_writer=blob, model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, character_coverage=1.0, num_threads=1, split_digits=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", allow_whitespace_only_pieces=True,
        minloglevel=2, **options)
    return spm.SentencePieceProcessor(model_proto=blob.getvalue())


def llama_cpp_vocab(sp) -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types as llama.cpp's `_create_vocab_sentencepiece` reads a
    tokenizer.model: 1 normal, 2 unknown, 3 control, 5 unused, 6 byte (user-defined pieces of
    the model are normal until tokenizer_config.json says otherwise)."""
    n = sp.get_piece_size()
    types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i)
             else 6 if sp.is_byte(i) else 1 for i in range(n)]
    return [sp.id_to_piece(i) for i in range(n)], [sp.get_score(i) for i in range(n)], types


def train_spm_vocab() -> dict:
    """A tiny Llama 2 style SentencePiece BPE, written out as llama.cpp's converter reads a tokenizer.model."""
    sp = train_llama_spm()
    tokens, scores, types = llama_cpp_vocab(sp)
    return {
        "tokens": tokens, "scores": scores, "token_types": types,
        "bos_token_id": sp.bos_id(), "eos_token_id": sp.eos_id(), "unknown_token_id": sp.unk_id(),
        "add_bos_token": True, "add_eos_token": False,
    }


def train_llama_spm(add_dummy_prefix: bool = True):
    """The Llama 2 style model; add_dummy_prefix=False: the same pieces, the flag turned off in its
    normalizer spec (what a tokenizer.model without the "▁" in front says)."""
    sp = train_spm(SPM_CORPUS, 400, add_dummy_prefix=True)
    if add_dummy_prefix:
        return sp
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(sp.serialized_model_proto())
    proto.normalizer_spec.add_dummy_prefix = False
    return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


def record_no_space_prefix(tmp: Path, vocab: dict) -> dict:
    """tokenizer.ggml.add_space_prefix = false in a llama file (llama.cpp writes it from a tokenizer_config
    add_prefix_space: false): transformers' GGUF loader ignores the flag and still puts "▁" in front;
    the sentencepiece library, with the flag off in the model, does not. Both recorded per text:
    `ids_transformers` (encode, add_special_tokens=False), `ids_sentencepiece` and its `decoded_sentencepiece`."""
    from transformers import AutoTokenizer

    folder = tmp / "no_prefix"
    folder.mkdir()
    path = spm_tokenizer_gguf(folder / "t.gguf", {**vocab, "add_space_prefix": False})
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=path.name)
    sp = train_llama_spm(add_dummy_prefix=False)
    cases = [{"text": text, "ids_transformers": [int(i) for i in tok.encode(text, add_special_tokens=False)],
              "ids_sentencepiece": sp.encode(text), "decoded_sentencepiece": sp.decode(sp.encode(text))}
             for text in SPM_TEXTS]
    return {"tokenizer_metadata_sha256": tokenizer_metadata_sha256(path), "cases": cases}


# Gemma's tokenizer.model, in small: ids 0-3 <pad> <eos> <bos> <unk>, no dummy prefix, and
# user-defined pieces for the turn markers, runs of newlines and of spaces ("▁▁".., 31 of each in
# the real one) and HTML tags. Its tokenizer_config.json lists them in added_tokens_decoder, the
# turn markers as special: llama.cpp's converter makes those CONTROL, the others USER_DEFINED
# with "▁" written back as " ", all with score -1000 (conversion/base.py, _create_vocab_sentencepiece).
GEMMA_CORPUS = SPM_CORPUS + ["<h1>Title</h1> <table><tr><td>cell</td></tr></table>", "Ça coûte 5€ — «déjà»",
                             "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"]
GEMMA_SPECIAL = ["<mask>", "<unused0>"]  # control pieces of the model, after <pad> <eos> <bos> <unk>
GEMMA_USER_DEFINED = ["<start_of_turn>", "<end_of_turn>", "\n", "\n\n", "\n\n\n", "▁▁", "▁▁▁", "▁▁▁▁",
                      "<h1>", "<table>"]
GEMMA_SPECIAL_IN_CONFIG = {"<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<unused0>", "<start_of_turn>", "<end_of_turn>"}


def train_gemma_vocab() -> dict:
    sp = train_spm(GEMMA_CORPUS, 640, add_dummy_prefix=False, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
                   pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
                   control_symbols=GEMMA_SPECIAL, user_defined_symbols=GEMMA_USER_DEFINED)
    tokens, scores, types = llama_cpp_vocab(sp)
    for i, t in enumerate(tokens):  # tokenizer_config.json's added_tokens_decoder, as llama.cpp applies it
        if t in GEMMA_SPECIAL_IN_CONFIG:
            types[i], scores[i] = 3, -1000.0
        elif t in GEMMA_USER_DEFINED:
            types[i], scores[i], tokens[i] = 4, -1000.0, t.replace("▁", " ")
    # Gemma3Model.set_vocab: add_space_prefix false; ids from tokenizer_config.json
    return {"tokens": tokens, "scores": scores, "token_types": types, "bos_token_id": 2, "eos_token_id": 1,
            "unknown_token_id": 3, "padding_token_id": 0, "add_bos_token": True, "add_eos_token": False,
            "add_space_prefix": False}


# Phi-3's tokenizer is Llama 2's SentencePiece model plus added tokens after it (32000-32010 in the
# real one). Types as in llama.cpp's own Phi-3 vocabulary file (models/ggml-vocab-phi-3.gguf):
# the added tokens CONTROL, "</s>" USER_DEFINED (special: false in Phi-3's tokenizer_config.json),
# all with score -1000; eos and pad are <|endoftext|>.
PHI3_ADDED = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|system|>", "<|end|>", "<|user|>"]


def phi3_vocab(llama: dict) -> dict:
    tokens = list(llama["tokens"]) + PHI3_ADDED
    scores = list(llama["scores"]) + [-1000.0] * len(PHI3_ADDED)
    types = list(llama["token_types"]) + [3] * len(PHI3_ADDED)
    eos = tokens.index("</s>")
    types[eos], scores[eos] = 4, -1000.0
    end = tokens.index("<|endoftext|>")
    return {"tokens": tokens, "scores": scores, "token_types": types, "bos_token_id": llama["bos_token_id"],
            "eos_token_id": end, "unknown_token_id": llama["unknown_token_id"], "padding_token_id": end,
            "add_bos_token": True, "add_eos_token": False}


def record_spm(tmp: Path, name: str, vocab: dict, texts: list[str], arch: str = "llama") -> dict:
    from transformers import AutoTokenizer

    folder = tmp / name
    folder.mkdir()
    path = spm_tokenizer_gguf(folder / "t.gguf", vocab, arch)
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=path.name)
    cases = []
    for text in texts:
        ids = [int(i) for i in tok.encode(text)]
        plain = [int(i) for i in tok.encode(text, add_special_tokens=False)]
        cases.append({"text": text, "ids": ids, "ids_no_special": plain,
                      "tokens_no_special": tok.convert_ids_to_tokens(plain), "decoded": tok.decode(ids),
                      "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)})
    backend = json.loads(tok.backend_tokenizer.to_str())
    return {
        "architecture": arch,
        "tokenizer_metadata_sha256": tokenizer_metadata_sha256(path),
        "tokenizer_class_loaded": type(tok).__name__,
        "pre_tokenizer": backend["pre_tokenizer"],
        "normalizer": backend["normalizer"],
        "decoder": backend["decoder"],
        "cases": cases,
        "vocab": vocab,
    }


def record_gemma(tmp: Path) -> dict:
    """Gemma's vocabulary in a gemma3 file; a gemma2 file must give the same (transformers builds
    gemma, gemma2 and gemma3 vocabularies with `gemma_tokenizer`): checked here, recorded as
    `also_architectures`. AutoTokenizer refuses a gemma (1) file before it reaches the tokenizer
    (no config mapping for it): recorded as `refused_architectures` with its message."""
    vocab = train_gemma_vocab()
    result = record_spm(tmp, "gemma3", vocab, GEMMA_TEXTS, "gemma3")
    result["also_architectures"], result["refused_architectures"] = [], {}
    for arch in ("gemma", "gemma2"):
        try:
            other = record_spm(tmp, arch, vocab, GEMMA_TEXTS, arch)
        except ValueError as e:
            result["refused_architectures"][arch] = str(e)
            continue
        assert other["cases"] == result["cases"], arch
        result["also_architectures"].append(arch)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        results = {pre: record(pre, Path(tmp)) for pre in PRE_TOKENIZERS}
        llama_vocab = train_spm_vocab()
        spm_result = record_spm(Path(tmp), "spm", llama_vocab, SPM_TEXTS)
        spm_result["no_space_prefix"] = record_no_space_prefix(Path(tmp), llama_vocab)
        gemma = record_gemma(Path(tmp))
        phi3 = record_spm(Path(tmp), "phi3", phi3_vocab(llama_vocab), PHI3_TEXTS, "phi3")
        # transformers reads no add_space_prefix for Phi-3 (its normalizer always prepends): checked
        flagged = record_spm(Path(tmp), "phi3_flag", {**phi3_vocab(llama_vocab), "add_space_prefix": False},
                             PHI3_TEXTS, "phi3")
        assert flagged["cases"] == phi3["cases"]
        phi3["same_with_add_space_prefix_false"] = True
    out = {
        "source": {
            "builder": "tests/gguf_files.py: tokenizer_gguf(path, pre) = write_gguf(path, random_model(), pre=pre)",
            "loader": "transformers.AutoTokenizer.from_pretrained(dir, gguf_file=...)",
        },
        "texts": TOKENIZER_TEXTS,
        "pre_tokenizers": results,
        "sentencepiece": spm_result,
        "gemma": gemma,
        "phi3": phi3,
        "definitions": {
            "tokenizer_metadata_sha256": "sha256 of json.dumps({every tokenizer.* key: value}, sort_keys=True, "
                                         "ensure_ascii=False, separators=(',', ':')) read back with gguf-py",
            "cases[].ids": "AutoTokenizer.encode(text) (default add_special_tokens)",
            "cases[].decoded": "AutoTokenizer.decode(ids) (default skip_special_tokens=False)",
            "sentencepiece": "tokenizer.ggml.model = 'llama': a tiny SentencePiece BPE (train_spm_vocab), written by "
                             "tests/gguf_files.py spm_tokenizer_gguf(path, vocab) as a llama-architecture file",
            "sentencepiece.cases[].ids_no_special": "AutoTokenizer.encode(text, add_special_tokens=False)",
            "sentencepiece.cases[].decoded_skip_special": "AutoTokenizer.decode(ids, skip_special_tokens=True)",
            "pre_tokenizers.*.cases[].splits": "backend pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)): "
                                               "the pieces BPE sees",
            "sentencepiece.no_space_prefix": "the same vocabulary with tokenizer.ggml.add_space_prefix = false: "
                                              "transformers' ids (it ignores the flag) and the sentencepiece "
                                              "library's (add_dummy_prefix off in the model), which fs-mlx follows",
            "gemma": "a Gemma-style SentencePiece vocabulary (train_gemma_vocab) in a gemma3 file built from "
                     "golden/checkpoints/gemma3-tiny (spm_tokenizer_gguf(path, vocab, 'gemma3'), padded to the model's "
                     "1024 tokens with llama.cpp's [PAD<i>]); gemma and gemma2 files give the same cases",
            "phi3": "the sentencepiece vocabulary plus Phi-3's added tokens (phi3_vocab) in a phi3 file built from "
                    "golden/checkpoints/phi3-tiny",
            "smollm": "transformers' GGUF loader has no entry for pre='smollm' and uses GPT-2's regex; llama.cpp "
                      "also isolates every digit, which this vocabulary (no multi-digit tokens) cannot show",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    for pre, r in results.items():
        print(f"  {pre}: {r['tokenizer_class_loaded']}, metadata sha256 {r['tokenizer_metadata_sha256'][:16]}")
    for name, r in (("sentencepiece", spm_result), ("gemma", gemma), ("phi3", phi3)):
        print(f"  {name}: {r['tokenizer_class_loaded']}, metadata sha256 {r['tokenizer_metadata_sha256'][:16]}")
    if args.out.resolve() == OUT.resolve():
        update_manifest(
            "make_gguf_tokenizer_reference",
            {
                "command": "python golden/make_gguf_tokenizer_reference.py",
                "produces": ["golden/vectors/gguf_tokenizers.json"],
                "builder": out["source"]["builder"],
                "pre_tokenizers": {pre: r["tokenizer_metadata_sha256"] for pre, r in results.items()},
                "sentencepiece": spm_result["tokenizer_metadata_sha256"],
                "gemma": gemma["tokenizer_metadata_sha256"],
                "phi3": phi3["tokenizer_metadata_sha256"],
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
