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
    TOKENIZER_TEXTS,
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        results = {pre: record(pre, Path(tmp)) for pre in PRE_TOKENIZERS}
    out = {
        "source": {
            "builder": "tests/gguf_files.py: tokenizer_gguf(path, pre) = write_gguf(path, random_model(), pre=pre)",
            "loader": "transformers.AutoTokenizer.from_pretrained(dir, gguf_file=...)",
        },
        "texts": TOKENIZER_TEXTS,
        "pre_tokenizers": results,
        "definitions": {
            "tokenizer_metadata_sha256": "sha256 of json.dumps({every tokenizer.* key: value}, sort_keys=True, "
                                         "ensure_ascii=False, separators=(',', ':')) read back with gguf-py",
            "cases[].ids": "AutoTokenizer.encode(text) (default add_special_tokens)",
            "cases[].decoded": "AutoTokenizer.decode(ids) (default skip_special_tokens=False)",
            "smollm": "transformers' GGUF loader has no entry for pre='smollm' and uses GPT-2's regex; llama.cpp "
                      "also isolates every digit, which this vocabulary (no multi-digit tokens) cannot show",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    for pre, r in results.items():
        print(f"  {pre}: {r['tokenizer_class_loaded']}, metadata sha256 {r['tokenizer_metadata_sha256'][:16]}")
    if args.out.resolve() == OUT.resolve():
        update_manifest(
            "make_gguf_tokenizer_reference",
            {
                "command": "python golden/make_gguf_tokenizer_reference.py",
                "produces": ["golden/vectors/gguf_tokenizers.json"],
                "builder": out["source"]["builder"],
                "pre_tokenizers": {pre: r["tokenizer_metadata_sha256"] for pre, r in results.items()},
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
