#!/usr/bin/env python3
"""transformers' apply_chat_template with Gemma's chat templates, on the Gemma GGUF tokenizer.

tests/test_gemma_chat.py renders the same conversations with fs-mlx's sandboxed Jinja
(fs_mlx/generation/chat.py) and compares text for text and id for id. The tokenizer is
transformers' GGUF tokenizer of the tests' Gemma file (tests/gguf_files.py
`spm_tokenizer_gguf(path, vocab, "gemma3")` with the vocabulary recorded in
golden/vectors/gguf_tokenizers.json, so its <bos> and turn markers are Gemma's), carrying
each template of golden/templates/ (sources and licences in golden/templates/README.md):

- `gemma3-transformers-tests.jinja`: the Gemma 3 template as transformers' own test suite
  carries it (a system message, given as text parts, is folded into the first user turn).
- `google-gemma-2-2b-it.jinja`: Gemma 2's, as llama.cpp vendors it (a system message is an error).

For each template and each of `CHATS`, with add_generation_prompt true and false:
`rendered` = apply_chat_template(messages, tokenize=False), `ids` = the same tokenized
(checked equal to encode(rendered, add_special_tokens=False)), or `error` (the exception's
type and message) where the template refuses the conversation.

Usage:  python golden/make_gemma_chat_reference.py [--out PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent
REPO = GOLDEN.parent
sys.path.insert(0, str(GOLDEN))
sys.path.insert(0, str(REPO / "tests"))
import fs_mlx  # noqa: E402, F401  (before mlx.core, as tests/conftest.py does)
from gguf_files import spm_tokenizer_gguf, tokenizer_metadata_sha256  # noqa: E402
from make_golden import update_manifest, write_json  # noqa: E402

OUT = GOLDEN / "vectors" / "gemma_chat.json"
TEMPLATES = ["gemma3-transformers-tests.jinja", "google-gemma-2-2b-it.jinja"]

SYSTEM = {"role": "system", "content": [{"type": "text", "text": "You are terse.\n"}]}
CHATS = {
    "user": [{"role": "user", "content": "Hi there!"}],
    "system_folded": [SYSTEM, {"role": "user", "content": "  What is 2+2?\n"}],
    "multi_turn": [SYSTEM, {"role": "user", "content": "Name a colour."},
                   {"role": "assistant", "content": "Blue.  "}, {"role": "user", "content": "Another, in 中文 🎨"}],
    "parts": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "  Describe  this. "}]}],
    "system_as_string": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}],
    "not_alternating": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
}


def main(argv=None) -> int:
    from transformers import AutoTokenizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    vocab = json.loads((GOLDEN / "vectors" / "gguf_tokenizers.json").read_text())["gemma"]["vocab"]
    with tempfile.TemporaryDirectory() as tmp:
        path = spm_tokenizer_gguf(Path(tmp) / "gemma.gguf", vocab, "gemma3")
        tok = AutoTokenizer.from_pretrained(tmp, gguf_file=path.name)
        sha = tokenizer_metadata_sha256(path)
    templates = {}
    for name in TEMPLATES:
        source = (GOLDEN / "templates" / name).read_text(encoding="utf-8")
        tok.chat_template = source
        cases = []
        for chat, messages in CHATS.items():
            for gen in (True, False):
                case = {"chat": chat, "add_generation_prompt": gen}
                try:
                    rendered = tok.apply_chat_template(messages, add_generation_prompt=gen, tokenize=False)
                    ids = tok.apply_chat_template(messages, add_generation_prompt=gen, tokenize=True, return_dict=False)
                except Exception as e:  # the template refuses: raise_exception, or an undefined value
                    case["error"] = {"type": type(e).__name__, "message": str(e)}
                else:
                    ids = [int(i) for i in (ids["input_ids"] if isinstance(ids, dict) else ids)]
                    assert ids == tok.encode(rendered, add_special_tokens=False), (name, chat)
                    case.update(rendered=rendered, ids=ids)
                cases.append(case)
        templates[name] = {"sha256": hashlib.sha256(source.encode("utf-8")).hexdigest(), "cases": cases}

    out = {
        "source": {
            "tokenizer": "transformers.AutoTokenizer.from_pretrained(dir, gguf_file=...) on tests/gguf_files.py "
                         "spm_tokenizer_gguf(path, gguf_tokenizers.json['gemma']['vocab'], 'gemma3')",
            "renderer": "tokenizer.chat_template = golden/templates/<name>; apply_chat_template(messages, "
                        "add_generation_prompt=..., tokenize=False), and tokenize=True for ids",
        },
        "tokenizer_metadata_sha256": sha,
        "chats": CHATS,
        "templates": templates,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    for name, t in templates.items():
        print(f"  {name}: {sum('rendered' in c for c in t['cases'])} rendered, "
              f"{sum('error' in c for c in t['cases'])} refused")
    if args.out.resolve() == OUT.resolve():
        update_manifest("make_gemma_chat_reference", {
            "command": "python golden/make_gemma_chat_reference.py",
            "produces": ["golden/vectors/gemma_chat.json"],
            "templates": {name: t["sha256"] for name, t in templates.items()},
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
