"""Text <-> token ids, with the special tokens a checkpoint declares.

The heavy lifting is Hugging Face `tokenizers` reading `tokenizer.json`
(byte-level BPE for Qwen3/SmolLM2, Metaspace BPE for Llama/SentencePiece
style models). What this module adds is the bookkeeping that is spread over
three files in a Hugging Face checkpoint: which ids end a turn (EOS), which
one starts a text (BOS), and the chat template.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from ..errors import FsxError
from ..files import read_bytes, read_json


@dataclass
class Tokenizer:
    backend: HFTokenizer
    eos_token_ids: list[int] = field(default_factory=list)  # every id that ends generation
    bos_token_id: int | None = None
    chat_template: str | None = None
    special_tokens: dict[str, str] = field(default_factory=dict)  # {"eos_token": "<|im_end|>", ...}
    clean_up_tokenization_spaces: bool = False

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Ids as transformers' tokenizer.encode(text) gives them (BOS only if the
        tokenizer's own post-processor adds one)."""
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        text = self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)
        return _clean_up(text) if self.clean_up_tokenization_spaces else text

    def id_to_token(self, i: int) -> str | None:
        return self.backend.id_to_token(i)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    @classmethod
    def from_dir(cls, model_dir: Path) -> "Tokenizer":
        model_dir = Path(model_dir)
        path = model_dir / "tokenizer.json"
        if not path.exists():
            raise FsxError(f"{model_dir}: no tokenizer.json")
        data = read_bytes(path, MAX_TOKENIZER_BYTES)  # a regular file, of a sane size
        try:
            backend = HFTokenizer.from_str(data.decode("utf-8"))
        except Exception as e:  # tokenizers raises plain Exception subclasses
            raise FsxError(f"{path}: cannot parse tokenizer: {str(e)[:300]}") from None

        config = _read_json(model_dir / "config.json")
        gen_config = _read_json(model_dir / "generation_config.json")
        tok_config = _read_json(model_dir / "tokenizer_config.json")
        special = {
            k: _token_text(tok_config.get(k))
            for k in ("bos_token", "eos_token", "pad_token", "unk_token")
            if _token_text(tok_config.get(k))
        }

        # EOS: the union of what config.json, generation_config.json and the
        # tokenizer declare. Qwen3 lists <|endoftext|> in one and <|im_end|> in another.
        eos: list[int] = []
        for source in (config.get("eos_token_id"), gen_config.get("eos_token_id")):
            eos += source if isinstance(source, list) else [source] if source is not None else []
        eos = [i for i in eos if _is_id(i)]  # config.json's were validated; the others were not
        if "eos_token" in special and backend.token_to_id(special["eos_token"]) is not None:
            eos.append(backend.token_to_id(special["eos_token"]))
        bos = config.get("bos_token_id", gen_config.get("bos_token_id"))
        bos = bos if _is_id(bos) else None
        if bos is None and "bos_token" in special:
            bos = backend.token_to_id(special["bos_token"])

        return cls(
            backend=backend,
            eos_token_ids=sorted(set(int(i) for i in eos)),
            bos_token_id=bos,
            chat_template=_chat_template(model_dir, tok_config),
            special_tokens=special,
            clean_up_tokenization_spaces=bool(tok_config.get("clean_up_tokenization_spaces", False)),
        )


MAX_TOKENIZER_BYTES = 256 * 1024 * 1024  # tokenizer.json: Gemma 3's is 33 MB
MAX_TEMPLATE_BYTES = 1024 * 1024  # chat_template.jinja: real ones are < 20 kB


def _is_id(i: Any) -> bool:
    return isinstance(i, int) and not isinstance(i, bool) and i >= 0


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    d = read_json(path)  # a regular file, bounded in size and nesting
    return d if isinstance(d, dict) else {}


def _token_text(tok: Any) -> str | None:
    # tokenizer_config.json writes special tokens as strings or as AddedToken dicts.
    if isinstance(tok, dict):
        return tok.get("content")
    return tok if isinstance(tok, str) else None


def _chat_template(model_dir: Path, tok_config: dict[str, Any]) -> str | None:
    jinja = model_dir / "chat_template.jinja"
    if jinja.exists():
        try:
            return read_bytes(jinja, MAX_TEMPLATE_BYTES).decode("utf-8")
        except UnicodeDecodeError as e:
            raise FsxError(f"{jinja}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    template = tok_config.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    return template if isinstance(template, str) else None


def _clean_up(text: str) -> str:
    # transformers' clean_up_tokenization: undo spaces before punctuation.
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                 (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(a, b)
    return text
