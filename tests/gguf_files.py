"""GGUF files written the way llama.cpp's converter writes them, from our random models.

Shared by tests/test_gguf.py (and test_bench.py) and by golden/make_gguf_tokenizer_reference.py,
which records transformers' GGUF tokenizer on exactly the files `tokenizer_gguf` builds here:
golden/vectors/gguf_tokenizers.json. If this writer changes what it puts in the tokenizer
metadata, `tokenizer_metadata_sha256` changes and the test says to re-record.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import gguf as ggufpy
import numpy as np

from checkpoints import random_model, tiny_tokenizer
from fs_mlx.model.fuse import stored_weights
from fs_mlx.formats import gguf

Q = ggufpy.GGMLQuantizationType

# The pre-tokenizers test_gguf checks against transformers' GGUF tokenizer, and the strings.
PRE_TOKENIZERS = ["qwen2", "smollm", "llama-bpe", "default"]
TOKENIZER_TEXTS = ["the quick brown fox", "  hello   world\n\n", "x = 12345 + 3.14", "don't WE'LL",
                   "<|im_start|>hi<|im_end|>", "émoji 🤗 中文", "def f(x): return x\t"]
# SentencePiece ("llama") vocabularies: the shared strings, then what only SentencePiece does
# differently (the "▁" prefix, runs of spaces, newlines, a character not in the vocab -> bytes).
SPM_TEXTS = TOKENIZER_TEXTS + [" leading space", "multiple   spaces  here ", "line one\nline two\n\nend\n",
                               "unseen Ω and ẞ", "<s>literal</s> <unk>", ""]


def write_gguf(path, model, *, arch=None, types=None, pre="qwen2", tok_model="gpt2", permute=None,
               extra_meta=None, skip=(), spm=None):
    """A GGUF as llama.cpp's converter writes it, from one of our random models.

    `spm`: a SentencePiece vocabulary (`spm_vocab` keys, as recorded in gguf_tokenizers.json)
    written as llama.cpp writes one: model "llama", pre "default", tokens, scores, token types,
    no merges, bos/eos/unk ids and add_bos/add_eos.
    """
    c = model.config
    arch = arch or c.model_type
    w = ggufpy.GGUFWriter(str(path), arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(256)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_key_length(c.head_dim)
    w.add_value_length(c.head_dim)
    if f"{arch}.rope.freq_base" not in (extra_meta or {}):
        w.add_rope_freq_base(c.rope_theta)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    if spm is not None:
        _add_spm_tokenizer(w, spm)
    else:
        _add_byte_level_tokenizer(w, c, tok_model, pre)
    if c.rope_scaling:  # Llama 3.1+: llama.cpp stores the per-frequency divisors, not the parameters
        from fs_mlx.model.rope import llama3_periods

        plain = c.rope_theta ** (np.arange(0, c.head_dim, 2) / c.head_dim)
        periods = np.array(llama3_periods(c.head_dim, c.rope_theta, c.rope_scaling))
        w.add_tensor("rope_freqs.weight", (periods / plain).astype(np.float32))
    for k, v in (extra_meta or {}).items():
        w.add_string(k, v)
    names = _hf_to_gguf(c)
    for hf, t in stored_weights(model).items():
        name = names[hf]
        if name in skip:
            continue
        a = np.array(t, dtype=np.float32)
        if permute and (".attn_q." in name or ".attn_k." in name):
            heads = c.num_attention_heads if ".attn_q." in name else c.num_key_value_heads
            a = a.reshape(heads, 2, a.shape[0] // heads // 2, a.shape[1]).swapaxes(1, 2).reshape(a.shape)
        qtype = (types or {}).get(name.split(".")[-2] if name.startswith("blk") else name.split(".")[0])
        if qtype == Q.Q6_K:  # gguf-py cannot quantize K-types: random but valid blocks
            w.add_tensor(name, random_q6_k(a.shape), raw_dtype=qtype)
        elif qtype is not None and a.ndim == 2:
            w.add_tensor(name, ggufpy.quants.quantize(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _add_byte_level_tokenizer(w, c, tok_model, pre):
    """Our tiny byte-level BPE, as llama.cpp writes a "gpt2" vocabulary."""
    tok = json.loads(tiny_tokenizer().to_str())
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab] + [f"<unused{i}>" for i in range(c.vocab_size - len(vocab))]
    kinds = [3 if t.startswith("<|") else 1 for t in tokens]  # 3 = control
    w.add_tokenizer_model(tok_model)
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(kinds)
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in tok["model"]["merges"]])
    w.add_eos_token_id(2)
    w.add_bos_token_id(1)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}")


def _add_spm_tokenizer(w, spm: dict):
    """What llama.cpp's convert_hf_to_gguf.py `_set_vocab_sentencepiece` writes."""
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(spm["tokens"])
    w.add_token_scores([float(x) for x in spm["scores"]])
    w.add_token_types(spm["token_types"])
    w.add_bos_token_id(spm["bos_token_id"])
    w.add_eos_token_id(spm["eos_token_id"])
    w.add_unk_token_id(spm["unknown_token_id"])
    w.add_add_bos_token(spm["add_bos_token"])
    w.add_add_eos_token(spm["add_eos_token"])


def spm_tokenizer_gguf(path, spm: dict) -> Path:
    """A llama-architecture file with a SentencePiece vocabulary (TinyLlama / Llama 2 style)."""
    model = random_model(model_type="llama", vocab_size=len(spm["tokens"]))
    return write_gguf(Path(path), model, spm=spm, permute=True)


def random_q6_k(shape):
    """Q6_K blocks of 256 weights: ql[128] qh[64] int8 scales[16] fp16 d = 210 bytes."""
    rows, cols = shape
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, size=(rows, cols // 256, 210), dtype=np.uint8)
    blocks[..., 192:208] = rng.integers(-8, 8, size=(rows, cols // 256, 16)).astype(np.int8).view(np.uint8)
    blocks[..., 208:210] = np.full((rows, cols // 256, 1), 0.002, np.float16).view(np.uint8)
    return blocks.reshape(rows, -1)


def _hf_to_gguf(c):
    table = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    for i in range(c.num_hidden_layers):
        for g, h in gguf._LAYER_NAMES.items():
            table[f"model.layers.{i}.{h}.weight"] = f"blk.{i}.{g}.weight"
    return table


def tokenizer_gguf(path, pre: str) -> Path:
    """The file whose tokenizer is compared with transformers' (recorded in gguf_tokenizers.json)."""
    return write_gguf(Path(path), random_model(), pre=pre)


def tokenizer_metadata(path) -> dict:
    """Every tokenizer.* key of a GGUF (vocab, token types, merges, pre, ids, chat template), as plain values."""
    reader = ggufpy.GGUFReader(str(path))
    out = {}
    for k in sorted(reader.fields):
        if k.startswith("tokenizer."):
            v = reader.fields[k].contents()
            out[k] = v.item() if hasattr(v, "item") else v
    return out


def tokenizer_metadata_sha256(path) -> str:
    """sha256 of `tokenizer_metadata` as canonical JSON: what the recorded tokenizer was built from."""
    blob = json.dumps(tokenizer_metadata(path), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
