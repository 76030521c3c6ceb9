"""GGUF files written the way llama.cpp's converter writes them, from our random models.

Shared by tests/test_gguf.py (and test_bench.py) and by golden/make_gguf_tokenizer_reference.py,
which records transformers' GGUF tokenizer on exactly the files `tokenizer_gguf` builds here:
golden/vectors/gguf_tokenizers.json. If this writer changes what it puts in the tokenizer
metadata, `tokenizer_metadata_sha256` changes and the test says to re-record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import gguf as ggufpy
import numpy as np

from checkpoints import random_model, tiny_tokenizer
from fs_mlx.model.fuse import stored_weights
from fs_mlx.formats import gguf

Q = ggufpy.GGMLQuantizationType

# The pre-tokenizers test_gguf checks against transformers' GGUF tokenizer, and the strings.
# qwen2: Qwen2/2.5/2.5-Coder and Qwen3(-MoE) files; gpt-4o: Phi-4-mini; tekken: Mistral Nemo, Ministral.
PRE_TOKENIZERS = ["qwen2", "smollm", "llama-bpe", "default", "gpt-4o", "tekken"]
TOKENIZER_TEXTS = ["the quick brown fox", "  hello   world\n\n", "x = 12345 + 3.14", "don't WE'LL",
                   "<|im_start|>hi<|im_end|>", "émoji 🤗 中文", "def f(x): return x\t",
                   "CamelCase HTTPServer i'm 1234567 a/b/\r\n", "e\u0301 (e + combining acute)"]
# SentencePiece ("llama") vocabularies: the shared strings, then what only SentencePiece does
# differently (the "▁" prefix, runs of spaces, newlines, a character not in the vocab -> bytes).
SPM_TEXTS = TOKENIZER_TEXTS + [" leading space", "multiple   spaces  here ", "line one\nline two\n\nend\n",
                               "unseen Ω and ẞ", "<s>literal</s> <unk>", ""]
# Gemma's vocabulary (gemma, gemma2, gemma3 files): what its variant does differently (no "▁" in
# front, space runs and newline runs as tokens, turn markers and user-defined tags inside text).
GEMMA_TEXTS = SPM_TEXTS + [
    "<start_of_turn>user\nWrite  code:\n\n    x = 1<end_of_turn>\n<start_of_turn>model\n",
    "   three, then\ttab\t\tand\n\n\n\nfour newlines", "<h1>Title</h1><table>", "<bos>text<eos> <pad>",
    "Ça coûte 5€ — «déjà»", "e\u0301 (e + combining acute)", "  ", "\n",
]
# Phi-3's vocabulary: its turn markers, and the "▁" its normalizer puts after each special token.
PHI3_TEXTS = SPM_TEXTS + [
    "<|user|>\nHello  there<|end|>\n<|assistant|>\n", "<|system|>You are helpful.<|end|><|user|> hi<|end|>",
    "  two leading spaces", "<|endoftext|>", "e\u0301 (e + combining acute)",
]


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
    for k, v in (extra_meta or {}).items():  # a later value replaces the one written above
        if isinstance(v, list):
            w.add_array(k, v)
        elif isinstance(v, int) and not isinstance(v, bool):
            w.add_uint32(k, v)
        else:
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


def _add_spm_tokenizer(w, spm: dict, n_vocab: int | None = None):
    """What llama.cpp's convert_hf_to_gguf.py `_set_vocab_sentencepiece` writes.

    n_vocab: the model's vocabulary size when it is larger than the tokenizer's; llama.cpp's
    converter fills the rest with "[PAD<i>]" tokens of type UNUSED (5), score -10000.
    Gemma files also say add_space_prefix = false (Gemma*Model.set_vocab), Gemma 2's eot.
    """
    tokens, scores, types = list(spm["tokens"]), [float(x) for x in spm["scores"]], list(spm["token_types"])
    for i in range(len(tokens), n_vocab or 0):
        tokens.append(f"[PAD{i}]")
        scores.append(-10000.0)
        types.append(5)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(spm["bos_token_id"])
    w.add_eos_token_id(spm["eos_token_id"])
    w.add_unk_token_id(spm["unknown_token_id"])
    if "padding_token_id" in spm:
        w.add_pad_token_id(spm["padding_token_id"])
    w.add_add_bos_token(spm["add_bos_token"])
    w.add_add_eos_token(spm["add_eos_token"])
    if "add_space_prefix" in spm:
        w.add_add_space_prefix(spm["add_space_prefix"])
    if "chat_template" in spm:
        w.add_chat_template(spm["chat_template"])


# A SentencePiece vocabulary in a file of each architecture: Llama 2 style in a random llama
# model; Gemma 3 and Phi-3 in the golden checkpoints of those families (golden_gguf), so the
# same file also runs end to end. Gemma and Gemma 2 files have no model here (the tokenizer
# reads the header only): a random llama model under their architecture name.
SPM_GOLDEN_CHECKPOINT = {"gemma3": "gemma3-tiny", "phi3": "phi3-tiny"}


def spm_tokenizer_gguf(path, spm: dict, arch: str = "llama") -> Path:
    """A file with a SentencePiece vocabulary (TinyLlama / Llama 2 style for arch "llama")."""
    if arch in SPM_GOLDEN_CHECKPOINT:
        cfg, tensors = read_checkpoint(GOLDEN_CHECKPOINTS / SPM_GOLDEN_CHECKPOINT[arch])
        return golden_gguf(Path(path), cfg, tensors, spm=spm)
    model = random_model(model_type="llama", vocab_size=len(spm["tokens"]))
    return write_gguf(Path(path), model, arch=arch, spm=spm, permute=True)


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


# --- the golden checkpoints of the newer families, as llama.cpp's converter writes them ------

GOLDEN_CHECKPOINTS = Path(__file__).resolve().parent.parent / "golden" / "checkpoints"
GGUF_ARCH = {"qwen2": ggufpy.MODEL_ARCH.QWEN2, "gemma3_text": ggufpy.MODEL_ARCH.GEMMA3,
             "phi3": ggufpy.MODEL_ARCH.PHI3, "qwen3_moe": ggufpy.MODEL_ARCH.QWEN3MOE}


def read_checkpoint(folder: Path) -> tuple[dict, dict]:
    """(config.json, {name: float32 numpy}) of a Hugging Face checkpoint folder."""
    import mlx.core as mx

    tensors = {}
    for f in sorted(folder.glob("*.safetensors")):
        tensors.update({k: np.array(v.astype(mx.float32)) for k, v in mx.load(str(f)).items()})
    return json.loads((folder / "config.json").read_text()), tensors


def golden_gguf(path, cfg: dict, tensors: dict, qtype=None, spm: dict | None = None) -> Path:
    """A golden checkpoint (golden/checkpoints/<name>) as llama.cpp's convert_hf_to_gguf.py
    writes it: names from gguf-py's own TensorNameMap (llama.cpp's table), Qwen3-MoE's
    experts stacked [E, out, in], Gemma's norms stored as 1 + w, Phi-3's LongRoPE factors
    as the rope_factors_long/short tensors, config.json's fields as metadata. `qwen2`/`qwen3moe`
    /`gemma3`/`phi3` files rotate with NeoX RoPE: no Q/K permutation. The tokenizer is the
    tests' byte-level one (ids only are compared), or the SentencePiece vocabulary `spm` (padded
    to the model's vocabulary as llama.cpp pads it). qtype: quantize every matrix to it."""
    tensors = dict(tensors)
    arch = GGUF_ARCH[cfg["model_type"]]
    arch_name = ggufpy.MODEL_ARCH_NAMES[arch]
    n_layers = cfg["num_hidden_layers"]
    tmap = ggufpy.get_tensor_name_map(arch, n_layers)
    if cfg["model_type"] == "qwen3_moe":  # Qwen2MoeModel.modify_tensors: stack the experts
        E = cfg.get("num_experts") or cfg["num_local_experts"]
        for i in range(n_layers):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                parts = [tensors.pop(f"model.layers.{i}.mlp.experts.{e}.{proj}.weight", None) for e in range(E)]
                if parts[0] is not None:
                    tensors[f"model.layers.{i}.mlp.experts.{proj}.weight"] = np.stack(parts)

    w = ggufpy.GGUFWriter(str(path), arch_name)
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    w.add_block_count(n_layers)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    rope = cfg.get("rope_parameters") or {}
    w.add_rope_freq_base(cfg.get("rope_theta") or rope["rope_theta"])
    scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
    if cfg.get("sliding_window"):
        w.add_sliding_window(cfg["sliding_window"])
    if cfg.get("sliding_window_pattern") not in (None, 6):
        # llama.cpp's Gemma 3 converter leaves the pattern out and assumes 6 (every real
        # Gemma 3); the golden checkpoint's 2 needs gguf-py's key for it
        w.add_sliding_window_pattern(cfg["sliding_window_pattern"])
    if cfg.get("query_pre_attn_scalar") not in (None, head_dim):  # the same: llama.cpp assumes head_dim
        w.add_attention_scale(cfg["query_pre_attn_scalar"] ** -0.5)
    if cfg["model_type"] == "gemma3_text" and scaling:  # global layers' linear stretch
        w.add_rope_scaling_type(ggufpy.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(scaling["factor"])
    if cfg["model_type"] == "qwen2" and scaling:  # Qwen2Model: YaRN as type, factor and original context
        w.add_rope_scaling_type(ggufpy.RopeScalingType.YARN)
        w.add_rope_scaling_factor(scaling["factor"])
        w.add_rope_scaling_orig_ctx_len(scaling["original_max_position_embeddings"])
    if cfg["model_type"] == "phi3":  # Phi3MiniModel: partial rotary, LongRoPE factors as tensors
        rope_dims = int(head_dim * rope.get("partial_rotary_factor", 1.0))
        w.add_rope_dimension_count(rope_dims)
        orig = cfg["original_max_position_embeddings"]
        w.add_rope_scaling_orig_ctx_len(orig)
        factor = cfg["max_position_embeddings"] / orig
        w.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(factor) / math.log(orig)) if factor > 1 else 1.0)
        w.add_tensor("rope_factors_long.weight", np.array(rope["long_factor"], dtype=np.float32))
        w.add_tensor("rope_factors_short.weight", np.array(rope["short_factor"], dtype=np.float32))
    if cfg["model_type"] == "qwen3_moe":
        w.add_expert_count(cfg.get("num_experts") or cfg["num_local_experts"])
        w.add_expert_used_count(cfg["num_experts_per_tok"])
        w.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
    if spm is not None:
        _add_spm_tokenizer(w, spm, n_vocab=cfg["vocab_size"])
    else:
        _add_byte_level_tokenizer(w, dataclasses.make_dataclass("C", ["vocab_size"])(cfg["vocab_size"]),
                                  "gpt2", "qwen2")
    for hf, a in tensors.items():
        name = tmap.get_name(hf, try_suffixes=(".weight", ".bias"))
        assert name is not None, hf
        if cfg["model_type"] == "gemma3_text" and hf.endswith("norm.weight"):
            a = a + 1  # Gemma3Model.modify_tensors: llama.cpp's RMSNorm multiplies by the stored weight
        if qtype is not None and a.ndim >= 2 and a.shape[-1] % 32 == 0:
            w.add_tensor(name, ggufpy.quants.quantize(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)
