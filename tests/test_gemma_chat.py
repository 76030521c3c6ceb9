"""Gemma's chat templates rendered by fs-mlx as transformers renders them.

golden/make_gemma_chat_reference.py ran transformers' apply_chat_template with each template
of golden/templates/ on transformers' GGUF tokenizer of the tests' Gemma file, and recorded
the text, the ids, or the error. Here the same file's fs-mlx tokenizer carries the same
template (once set by hand, once read from the GGUF's tokenizer.chat_template, as a real
Gemma GGUF carries it) and renders in fs-mlx's sandbox (generation/chat.py).
"""

import hashlib
import json
from pathlib import Path

import pytest

from gguf_files import spm_tokenizer_gguf, tokenizer_metadata_sha256
from fs_mlx.errors import FsxError
from fs_mlx.generation.chat import render
from fs_mlx.loader import load_tokenizer

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
REF = json.loads((GOLDEN / "vectors" / "gemma_chat.json").read_text())
GEMMA_VOCAB = json.loads((GOLDEN / "vectors" / "gguf_tokenizers.json").read_text())["gemma"]["vocab"]


def _template(name: str) -> str:
    return (GOLDEN / "templates" / name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def gemma_file(tmp_path_factory):
    path = spm_tokenizer_gguf(tmp_path_factory.mktemp("chat") / "gemma.gguf", GEMMA_VOCAB, "gemma3")
    assert tokenizer_metadata_sha256(path) == REF["tokenizer_metadata_sha256"], \
        "the Gemma file changed: re-run golden/make_gemma_chat_reference.py"
    return path


def _check(tokenizer, name):
    cases = REF["templates"][name]["cases"]
    assert len(cases) == 2 * len(REF["chats"])
    for case in cases:
        messages = REF["chats"][case["chat"]]
        where = (name, case["chat"], case["add_generation_prompt"])
        if "error" in case:
            with pytest.raises(FsxError) as e:
                render(tokenizer, messages, case["add_generation_prompt"])
            if case["error"]["type"] == "TemplateError":  # raise_exception(...): the template's own words
                assert case["error"]["message"] in str(e.value), where
            continue
        text = render(tokenizer, messages, case["add_generation_prompt"])
        assert text == case["rendered"], where
        assert tokenizer.encode(text, add_special_tokens=False) == case["ids"], where


@pytest.mark.parametrize("name", list(REF["templates"]))
def test_gemma_templates_render_like_transformers(gemma_file, name):
    source = _template(name)
    assert hashlib.sha256(source.encode("utf-8")).hexdigest() == REF["templates"][name]["sha256"]
    tokenizer = load_tokenizer(gemma_file)
    tokenizer.chat_template = source
    _check(tokenizer, name)


def test_gemma_template_from_the_gguf(tmp_path):
    # As a real Gemma 3 GGUF: the template is tokenizer.chat_template, read with the tokenizer.
    name = "gemma3-transformers-tests.jinja"
    path = spm_tokenizer_gguf(tmp_path / "gemma.gguf", {**GEMMA_VOCAB, "chat_template": _template(name)}, "gemma3")
    tokenizer = load_tokenizer(path)
    assert tokenizer.chat_template == _template(name) and tokenizer.special_tokens["bos_token"] == "<bos>"
    _check(tokenizer, name)
    # The system message lands in the first user turn; the ids start with BOS and the turn marker.
    folded = next(c for c in REF["templates"][name]["cases"] if c["chat"] == "system_folded")
    assert folded["rendered"].startswith("<bos><start_of_turn>user\nYou are terse.")
    assert folded["ids"][:2] == [GEMMA_VOCAB["bos_token_id"], GEMMA_VOCAB["tokens"].index("<start_of_turn>")]
