"""Write a Hugging Face checkpoint (e.g. a random one) as a GGUF that llama.cpp and fsx both load.

    python bench/random_checkpoint.py qwen3-0.6b /tmp/fsx-bench/qwen3-0.6b-f32 --dtype float32
    python bench/gguf_checkpoint.py /tmp/fsx-bench/qwen3-0.6b-f32 /tmp/fsx-bench/qwen3-0.6b-q4_0.gguf --type q4_0

For `fsx bench MODEL.gguf --compare llama.cpp` on a shape we have no GGUF of (no
Hugging Face hub here): the same weights, in the file llama.cpp's own tools would make.

- **Metadata** as llama.cpp's `convert_hf_to_gguf.py` writes it for these architectures
  (`TextModel.set_gguf_parameters`, `ModelBase.prepare_metadata`): general.* (type, name,
  size label, file type, quantization version), `<arch>.block_count`, context, embedding
  and feed-forward lengths, head counts, key/value lengths, RoPE base, RMS-norm epsilon.
- **Tensors** under gguf-py's names (llama.cpp's table); Llama's Q/K rows permuted as
  `LlamaModel.permute` does (Qwen3 is not: llama.cpp runs it with NeoX RoPE); norms and
  other 1-D tensors float32; a tied embedding stays one `token_embd` tensor (no `output`).
- **Types**: f32 and f16 as the converter's `--outtype`; q8_0 as the converter's
  `--outtype q8_0` (gguf-py's quantizer, which the converter itself calls); q4_0/q4_1 as
  `llama-quantize --pure` makes them from a float file — every matrix, the embedding too,
  in that type (without --pure llama-quantize would store the tied embedding as Q6_K,
  which fsx can only load dequantized to float16: not a like-for-like comparison).
  gguf-py's Q4_0/Q4_1/Q8_0 quantizers are ports of ggml's reference ones.
- **Tokenizer**: the checkpoint's own tokenizer.json, written as the converter's
  `_set_vocab_gpt2` writes it (tokens by id, added tokens CONTROL when special, merges,
  special ids and chat template through gguf-py's SpecialVocab) and padded to the
  model's `vocab_size` with `[PAD<i>]` tokens of type UNUSED, as `get_vocab_base` pads
  a vocabulary smaller than the embedding (llama.cpp checks the token count against the
  embedding's rows). Pre-tokenizer "qwen2": the split regex of bench/random_checkpoint.py's
  tokenizer (the golden qwen3-tiny one); the converter would find it by hashing.

Checked against the converter itself (llama.cpp 0.3.36's vendored convert_hf_to_gguf.py
--outtype q8_0 on golden/checkpoints/qwen3-tiny, its pre-tokenizer hash lookup answered
"qwen2"): the same tensors byte for byte and the same metadata, but for the converter's
general.sampling.* (copied from a generation_config.json; random checkpoints have none),
its prettified general.name and its tensor order (that of the safetensors file). And Q4_0
against llama-quantize itself (`llama-quantize --pure F32-file Q4_0`, built by
bench/build_llama_cpp.sh): every tensor and metadata value the same
(tests/test_bench_gguf.py, where llama-quantize is built).

Tensors are read (memory-mapped), converted and written one at a time: ~30 s for the
Qwen3-0.6B shape on 2 cores, and the same bytes every time for the same checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import gguf
import numpy as np

Q = gguf.GGMLQuantizationType
# --type -> (tensor type of the matrices, general.file_type)
TYPES = {
    "f32": (Q.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "q4_0": (Q.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
    "q4_1": (Q.Q4_1, gguf.LlamaFileType.MOSTLY_Q4_1),
}
ARCHS = {"qwen3": gguf.MODEL_ARCH.QWEN3, "llama": gguf.MODEL_ARCH.LLAMA}
PRE_TOKENIZER = "qwen2"


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: rotate-half rows -> llama.cpp's pair order."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tensor_type(gguf_name: str, shape: tuple[int, ...], matrix_type: Q) -> Q:
    """What the converter (and llama-quantize --pure) store a tensor as."""
    if len(shape) <= 1 or gguf_name.endswith("_norm.weight"):
        return Q.F32
    return matrix_type


def read_vocab(src: Path, vocab_size: int) -> tuple[list[str], list[int]]:
    """convert_hf_to_gguf.py's get_vocab_base, on tokenizer.json: tokens by id, [PAD<i>] for missing ids."""
    from tokenizers import Tokenizer

    spec = json.loads((src / "tokenizer.json").read_text())
    if (spec.get("decoder") or {}).get("type") != "ByteLevel":
        sys.exit(f"{src}: not a byte-level BPE tokenizer.json; this writer writes 'gpt2' vocabularies only")
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    reverse = {i: t for t, i in tok.get_vocab(with_added_tokens=True).items()}
    added = {a["id"]: a for a in spec["added_tokens"]}
    if max(reverse) >= vocab_size:
        sys.exit(f"{src}: token id {max(reverse)} does not fit vocab_size {vocab_size}")
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            t = reverse[i]
            special = added[i].get("special") or (t.startswith("<|") and t.endswith("|>"))
            tokens.append(t)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def plan(config: dict, names: list[str]) -> list[tuple[str, str]]:
    """(Hugging Face name, GGUF name) for every tensor, in the order they are written."""
    arch = ARCHS[config["model_type"]]
    tmap = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    out = []
    for hf in names:
        if config.get("tie_word_embeddings") and hf == "lm_head.weight":
            continue  # the converter drops a tied copy
        name = tmap.get_name(hf, try_suffixes=(".weight", ".bias"))
        if name is None:
            sys.exit(f"no GGUF name for tensor {hf!r} ({config['model_type']})")
        out.append((hf, name))

    def key(pair):  # token_embd, the blocks in order, then output_norm/output (the converter's order)
        n = pair[1]
        if n.startswith("blk."):
            return (1, int(n.split(".")[1]), n)
        return (0 if n.startswith("token_embd") else 2, 0, n)

    return sorted(out, key=key)


def write(src: Path, out: Path, kind: str, name: str | None = None, quiet: bool = False) -> Path:
    import mlx.core as mx

    config = json.loads((src / "config.json").read_text())
    if config.get("model_type") not in ARCHS:
        sys.exit(f"{src}: model_type {config.get('model_type')!r}; this writer does {', '.join(ARCHS)}")
    matrix_type, file_type = TYPES[kind]
    arch = ARCHS[config["model_type"]]
    from safetensors import safe_open

    files, shapes = {}, {}  # name -> open file, name -> shape: nothing read yet
    for f in sorted(src.glob("*.safetensors")):
        handle = safe_open(str(f), framework="mlx")
        for k in handle.keys():
            files[k], shapes[k] = handle, tuple(handle.get_slice(k).get_shape())
    order = plan(config, list(shapes))
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads

    def array(hf: str, gname: str) -> np.ndarray:
        a = np.array(files[hf].get_tensor(hf).astype(mx.float32))
        if config["model_type"] == "llama" and gname.endswith("attn_q.weight"):
            a = permute(a, heads)
        elif config["model_type"] == "llama" and gname.endswith("attn_k.weight"):
            a = permute(a, kv_heads)
        qtype = tensor_type(gname, a.shape, matrix_type)
        if qtype == Q.F32:
            return a
        if qtype == Q.F16:
            return a.astype(np.float16)
        return gguf.quants.quantize(a, qtype)

    w = gguf.GGUFWriter(str(out) + ".partial", gguf.MODEL_ARCH_NAMES[arch])
    # ModelBase.prepare_metadata
    n_params = sum(int(np.prod(shapes[hf])) for hf, _ in order)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(name or src.name)
    w.add_size_label(gguf.size_label(n_params, 0, 0, 0))
    # TextModel.set_gguf_parameters
    w.add_block_count(config["num_hidden_layers"])
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    rope = config.get("rope_parameters") or {}
    w.add_rope_freq_base(config.get("rope_theta") or rope.get("rope_theta", 10000.0))
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    if config.get("head_dim"):
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_file_type(file_type)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    # _set_vocab_gpt2
    tokens, types = read_vocab(src, config["vocab_size"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(PRE_TOKENIZER)
    w.add_token_list(tokens)
    w.add_token_types(types)
    special = gguf.SpecialVocab(src, load_merges=True, n_vocab=len(tokens))
    post = json.loads((src / "tokenizer.json").read_text()).get("post_processor") or {}
    if any(p.get("type") == "ByteLevel" for p in post.get("processors", [post])):
        # llama.cpp's newer gguf-py (the one its converter vendors) says so for a ByteLevel
        # post-processor (no BOS/EOS added); PyPI's gguf 0.19 leaves the keys out
        special.add_special_token.setdefault("bos", False)
        special.add_special_token.setdefault("eos", False)
    special.add_to_gguf(w, quiet=True)

    # The tensor table first (shapes and types known without converting), then the data streamed.
    for hf, gname in order:
        shape = shapes[hf]
        qtype = tensor_type(gname, shape, matrix_type)
        if qtype in (Q.F32, Q.F16):
            dtype, nbytes = (np.float32, 4) if qtype == Q.F32 else (np.float16, 2)
            w.add_tensor_info(gname, shape, np.dtype(dtype), int(np.prod(shape)) * nbytes)
        else:
            block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
            byte_shape = (*shape[:-1], shape[-1] // block * block_bytes)
            if shape[-1] % block:
                sys.exit(f"{hf}: rows of {shape[-1]} are not whole {qtype.name} blocks of {block}")
            w.add_tensor_info(gname, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=qtype)
    t0 = time.perf_counter()
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for i, (hf, gname) in enumerate(order):
            w.write_tensor_data(array(hf, gname))
            if not quiet and (i % 50 == 0 or i == len(order) - 1):
                print(f"  [{i + 1}/{len(order)}] {gname} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        w.close()
        os.replace(str(out) + ".partial", out)
    except BaseException:
        w.close()
        Path(str(out) + ".partial").unlink(missing_ok=True)
        raise
    if not quiet:
        print(f"wrote {out}: {config['model_type']}, {n_params / 1e6:.0f}M parameters, "
              f"{kind}, {out.stat().st_size / 1e6:.0f} MB")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="a Hugging Face checkpoint directory (qwen3 or llama)")
    ap.add_argument("out", type=Path, help="the .gguf to write")
    ap.add_argument("--type", choices=list(TYPES), default="f32", dest="kind")
    ap.add_argument("--name", help="general.name (default: the source directory's name)")
    a = ap.parse_args()
    if a.out.exists():
        sys.exit(f"{a.out} already exists")
    write(a.src, a.out, a.kind, a.name)


if __name__ == "__main__":
    main()
