#!/usr/bin/env python3
"""transformers' GGUF tokenizer on the small GGUF files the tests write, one per pre-tokenizer.

tests/test_gguf.py::test_tokenizer_matches_transformers_gguf_tokenizer checks fs-mlx's GGUF
tokenizer against transformers' (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`). That
loader imports torch, which the tests do not have, so this script runs it once and records
its outputs. It builds the files with the tests' own writer (tests/gguf_files.py:
`tokenizer_gguf(path, pre)` = `write_gguf(path, random_model(), pre=pre)`), in a temp dir,
for each of `PRE_TOKENIZERS`, and writes golden/vectors/gguf_tokenizers.json:

- per pre-tokenizer: `tokenizer_metadata_sha256` (sha256 of every tokenizer.* key of the
  file, as canonical JSON; the test checks that the file it builds still has it), the
  tokenizer class and pre-tokenizer transformers built, and for each of `TOKENIZER_TEXTS`
  `ids` = `encode(text)` (default add_special_tokens) and `decoded` = `decode(ids)`.
- `sentencepiece`: a SentencePiece ("llama") vocabulary, as TinyLlama / Llama 2 / Mistral
  files carry one. `train_spm_vocab` trains a tiny BPE model with the `sentencepiece`
  library (byte_fallback, on a small corpus with accents, CJK, emoji and code) and records
  its tokens, scores and llama.cpp token types under `vocab` (the tests have no
  sentencepiece: they write the file from this record with `spm_tokenizer_gguf`). For each
  of `SPM_TEXTS`: `ids`, `ids_no_special` = `encode(text, add_special_tokens=False)`,
  `tokens_no_special` and `decoded`.

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
        cases.append({"text": text, "ids": ids, "decoded": tok.decode(ids)})
    return {
        "tokenizer_metadata_sha256": tokenizer_metadata_sha256(path),
        "gguf_tokenizer_ggml_pre": meta["tokenizer.ggml.pre"],
        "n_tokens": len(meta["tokenizer.ggml.tokens"]),
        "n_merges": len(meta["tokenizer.ggml.merges"]),
        "tokenizer_class_loaded": type(tok).__name__,
        "pre_tokenizer": json.loads(tok.backend_tokenizer.to_str())["pre_tokenizer"],
        "cases": cases,
    }


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


def train_spm_vocab() -> dict:
    """A tiny SentencePiece BPE, written out as llama.cpp's converter reads a tokenizer.model."""
    import io

    import sentencepiece as spm

    blob = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SPM_CORPUS * 30), model_writer=blob, model_type="bpe", vocab_size=400,
        byte_fallback=True, character_coverage=1.0, num_threads=1, split_digits=True, add_dummy_prefix=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", allow_whitespace_only_pieces=True,
        minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=blob.getvalue())
    # llama.cpp's token types: 1 normal, 2 unknown, 3 control, 5 unused, 6 byte.
    types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i)
             else 6 if sp.is_byte(i) else 1 for i in range(sp.get_piece_size())]
    return {
        "tokens": [sp.id_to_piece(i) for i in range(sp.get_piece_size())],
        "scores": [sp.get_score(i) for i in range(sp.get_piece_size())],
        "token_types": types,
        "bos_token_id": sp.bos_id(), "eos_token_id": sp.eos_id(), "unknown_token_id": sp.unk_id(),
        "add_bos_token": True, "add_eos_token": False,
    }


def record_spm(tmp: Path) -> dict:
    from transformers import AutoTokenizer

    folder = tmp / "spm"
    folder.mkdir()
    vocab = train_spm_vocab()
    path = spm_tokenizer_gguf(folder / "t.gguf", vocab)
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=path.name)
    cases = []
    for text in SPM_TEXTS:
        ids = [int(i) for i in tok.encode(text)]
        plain = [int(i) for i in tok.encode(text, add_special_tokens=False)]
        cases.append({"text": text, "ids": ids, "ids_no_special": plain,
                      "tokens_no_special": tok.convert_ids_to_tokens(plain), "decoded": tok.decode(ids)})
    backend = json.loads(tok.backend_tokenizer.to_str())
    return {
        "tokenizer_metadata_sha256": tokenizer_metadata_sha256(path),
        "tokenizer_class_loaded": type(tok).__name__,
        "pre_tokenizer": backend["pre_tokenizer"],
        "normalizer": backend["normalizer"],
        "decoder": backend["decoder"],
        "cases": cases,
        "vocab": vocab,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        results = {pre: record(pre, Path(tmp)) for pre in PRE_TOKENIZERS}
        spm_result = record_spm(Path(tmp))
    out = {
        "source": {
            "builder": "tests/gguf_files.py: tokenizer_gguf(path, pre) = write_gguf(path, random_model(), pre=pre)",
            "loader": "transformers.AutoTokenizer.from_pretrained(dir, gguf_file=...)",
        },
        "texts": TOKENIZER_TEXTS,
        "pre_tokenizers": results,
        "sentencepiece": spm_result,
        "definitions": {
            "tokenizer_metadata_sha256": "sha256 of json.dumps({every tokenizer.* key: value}, sort_keys=True, "
                                         "ensure_ascii=False, separators=(',', ':')) read back with gguf-py",
            "cases[].ids": "AutoTokenizer.encode(text) (default add_special_tokens)",
            "cases[].decoded": "AutoTokenizer.decode(ids) (default skip_special_tokens=False)",
            "sentencepiece": "tokenizer.ggml.model = 'llama': a tiny SentencePiece BPE (train_spm_vocab), written by "
                             "tests/gguf_files.py spm_tokenizer_gguf(path, vocab) as a llama-architecture file",
            "sentencepiece.cases[].ids_no_special": "AutoTokenizer.encode(text, add_special_tokens=False)",
            "smollm": "transformers' GGUF loader has no entry for pre='smollm' and uses GPT-2's regex; llama.cpp "
                      "also isolates every digit, which this vocabulary (no multi-digit tokens) cannot show",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    for pre, r in results.items():
        print(f"  {pre}: {r['tokenizer_class_loaded']}, metadata sha256 {r['tokenizer_metadata_sha256'][:16]}")
    print(f"  sentencepiece: {spm_result['tokenizer_class_loaded']}, "
          f"metadata sha256 {spm_result['tokenizer_metadata_sha256'][:16]}")
    if args.out.resolve() == OUT.resolve():
        update_manifest(
            "make_gguf_tokenizer_reference",
            {
                "command": "python golden/make_gguf_tokenizer_reference.py",
                "produces": ["golden/vectors/gguf_tokenizers.json"],
                "builder": out["source"]["builder"],
                "pre_tokenizers": {pre: r["tokenizer_metadata_sha256"] for pre, r in results.items()},
                "sentencepiece": spm_result["tokenizer_metadata_sha256"],
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
