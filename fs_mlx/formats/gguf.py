"""GGUF files (llama.cpp's format): header, config, tensors and tokenizer.

A GGUF file is one self-contained model:

    "GGUF" | version u32 | tensor_count u64 | kv_count u64
    kv_count x (key, type, value)        metadata: architecture, shapes, tokenizer, chat template
    tensor_count x (name, dims, type, offset)
    padding to `general.alignment` (32), then the tensor data

This module turns it into what the rest of the engine already speaks:

- metadata -> `ModelConfig` with Hugging Face field names (architectures llama, qwen3,
  qwen2, qwen3moe, gemma3, phi3; what llama.cpp keeps elsewhere is recovered: Phi-3's
  LongRoPE factors from the `rope_factors_*` tensors, Gemma 3's layer pattern and local
  RoPE base from llama.cpp's fixed values);
- tensors  -> Hugging Face names (`blk.0.attn_q` -> `model.layers.0.self_attn.q_proj`).
  `mx.load` does the decoding: Q4_0, Q4_1 and Q8_0 blocks come back already in MLX's
  affine format (weight/scales/biases, group 32: a Q4_1 block *is* an affine group),
  every other quantized type (the K-quants, IQ*) comes back dense float16 — loaded, but
  no longer quantized; `fsx inspect` says which;
- llama.cpp's Q/K row permutation is undone (see `unpermute`), so the model runs the
  same rotate-half RoPE as every Hugging Face checkpoint;
- the tokenizer is rebuilt from `tokenizer.ggml.*` as a `tokenizers.Tokenizer`
  (gguf_tokenizer.py).

We read the header ourselves (like weights.py does for safetensors) so that
`fsx inspect` and `fsx tokenize` never touch the tensor data, and a malformed
or truncated file fails with one message.
"""

from __future__ import annotations

import os
import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import mlx.core as mx

from ..errors import FsxError
from ..files import open_regular
from ..model.config import ModelConfig, check_against_tensors
from .gguf_tokenizer import build_tokenizer

# --- the header ------------------------------------------------------------------

GGUF_MAGIC = b"GGUF"
# value type id -> struct format (scalars); 8 = string, 9 = array
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
           10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# ggml tensor type id -> (name, elements per block, bytes per block)
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
}
# Types mx.load keeps quantized, in MLX's affine format (group 32): name -> bits.
AFFINE_TYPES = {"Q4_0": 4, "Q4_1": 4, "Q8_0": 8}
FLOAT_TYPES = {"F32", "F16", "BF16", "F64"}
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ITEMS = 1 << 24  # sanity bound on counts read from the file (a 16M-entry vocab is absurd)


@dataclass(frozen=True)
class GGUFTensor:
    name: str  # GGUF name, e.g. "blk.0.attn_q.weight"
    shape: tuple[int, ...]  # row-major, outermost first (GGUF stores dims innermost first)
    type: str  # "Q4_1", "Q6_K", "F32", ...
    offset: int  # from the start of the data section
    nbytes: int


@dataclass
class GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensor]
    data_start: int
    file_size: int


class _Reader:
    """Little-endian reads that turn running off the end into one clear error."""

    def __init__(self, f: BinaryIO, path: Path, size: int):
        self.f, self.path, self.size = f, path, size

    def read(self, n: int) -> bytes:
        b = self.f.read(n)
        if len(b) < n:
            raise FsxError(f"{self.path}: truncated GGUF file (header ends past byte {self.size})")
        return b

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def count(self, what: str) -> int:
        n = self.unpack("<Q")
        if n > MAX_ITEMS:
            raise FsxError(f"{self.path}: malformed GGUF file ({what} count {n})")
        return n

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > self.size:
            raise FsxError(f"{self.path}: malformed GGUF file (string of {n} bytes)")
        return self.read(n).decode("utf-8", errors="replace")

    def value(self, vtype: int):
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, n = self.unpack("<I"), self.count("array")
            if etype == _ARRAY:  # llama.cpp has none and reads none: refused, not recursed into
                raise FsxError(f"{self.path}: malformed GGUF file (an array of arrays)")
            if etype in _SCALAR:
                fmt = _SCALAR[etype]
                size = struct.calcsize(fmt)
                return list(struct.unpack(f"<{n}{fmt[1]}", self.read(n * size)))
            return [self.value(etype) for _ in range(n)]
        raise FsxError(f"{self.path}: malformed GGUF file (unknown value type {vtype})")


def read_header(path: Path) -> GGUFHeader:
    """Metadata and tensor table, checked against the file size (no tensor data read)."""
    path = Path(path)
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            r = _Reader(f, path, size)
            if f.read(4) != GGUF_MAGIC:
                raise FsxError(f"{path}: not a GGUF file (no GGUF magic)")
            version = r.unpack("<I")
            if version not in (2, 3):
                raise FsxError(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
            n_tensors, n_kv = r.count("tensor"), r.count("metadata")
            metadata = {}
            for _ in range(n_kv):
                key = r.string()
                if key in metadata:
                    raise FsxError(f"{path}: malformed GGUF file (metadata key {key[:100]!r} appears twice)")
                metadata[key] = r.value(r.unpack("<I"))
            infos = []
            for _ in range(n_tensors):
                name = r.string()
                n_dims = r.unpack("<I")
                if n_dims > MAX_DIMS:
                    raise FsxError(f"{path}: malformed GGUF file (tensor {name[:100]!r} has {n_dims} dims, "
                                   f"ggml allows {MAX_DIMS})")
                dims = [r.unpack("<Q") for _ in range(n_dims)]
                infos.append((name, dims, r.unpack("<I"), r.unpack("<Q")))
            header_end = f.tell()
    except OSError as e:
        raise FsxError(f"{path}: cannot read: {e.strerror}") from None

    align = metadata.get("general.alignment", 32)
    if not isinstance(align, int) or not 0 < align <= 1 << 16 or align & (align - 1):
        raise FsxError(f"{path}: malformed GGUF file (general.alignment = {align!r}, "
                       "must be a power of two)")
    data_start = (header_end + align - 1) // align * align
    # llama.cpp's rules (gguf.cpp): names unique, the innermost dim whole blocks, and
    # tensors laid out in table order, each at the padded end of the one before: no
    # overlap, no misalignment, no gap.
    tensors, expected = {}, 0
    for name, dims, type_id, offset in infos:
        where = f"{path}: tensor {name[:100]!r}"
        if name in tensors:
            raise FsxError(f"{where} appears twice in the tensor table")
        if type_id not in GGML_TYPES:
            raise FsxError(f"{where} has unknown ggml type {type_id}")
        tname, block, block_bytes = GGML_TYPES[type_id]
        n = 1
        for d in dims:
            n *= d
        if dims and dims[0] % block:
            raise FsxError(f"{where} (rows of {dims[0]} values) is not whole {tname} blocks of {block}")
        t = GGUFTensor(name, tuple(reversed(dims)), tname, offset, n // block * block_bytes)
        if offset != expected:
            what = "overlaps the tensor before it" if offset < expected else "is misaligned or leaves a gap"
            raise FsxError(f"{where} starts at data offset {offset}, expected {expected}: it {what}")
        if data_start + offset + t.nbytes > size:
            raise FsxError(
                f"{path}: truncated: tensor {name[:100]!r} ends at byte "
                f"{data_start + offset + t.nbytes}, file has {size} (incomplete download?)"
            )
        expected = offset + (t.nbytes + align - 1) // align * align
        tensors[name] = t
    return GGUFHeader(path, version, metadata, tensors, data_start, size)


# --- metadata -> ModelConfig -----------------------------------------------------------

SUPPORTED_GGUF_ARCHITECTURES = ("llama", "qwen3", "qwen2", "qwen3moe", "gemma3", "phi3")
# llama.cpp's architecture name -> Hugging Face's model_type, where they differ
MODEL_TYPES = {"qwen3moe": "qwen3_moe", "gemma3": "gemma3_text"}


def architecture(header: GGUFHeader) -> str:
    arch = header.metadata.get("general.architecture")
    if arch not in SUPPORTED_GGUF_ARCHITECTURES:
        raise FsxError(
            f"{header.path}: unsupported GGUF architecture {arch!r}; fs-mlx reads "
            f"{', '.join(SUPPORTED_GGUF_ARCHITECTURES)}"
        )
    return arch


def config_from_header(header: GGUFHeader) -> ModelConfig:
    try:
        return _config_from_header(header)
    except (TypeError, ValueError, ZeroDivisionError) as e:  # e.g. a count stored as a string
        raise FsxError(f"{header.path}: malformed GGUF metadata ({e})") from None


def _config_from_header(header: GGUFHeader) -> ModelConfig:
    m, arch = header.metadata, architecture(header)

    def get(key: str, default=None):
        return m.get(f"{arch}.{key}", default)

    missing = [k for k in ("embedding_length", "block_count", "feed_forward_length",
                           "attention.head_count") if get(k) is None]
    if missing:
        raise FsxError(f"{header.path}: GGUF metadata lacks {', '.join(f'{arch}.{k}' for k in missing)}")
    heads = get("attention.head_count")
    hidden = get("embedding_length")
    head_dim = get("attention.key_length", hidden // heads)
    rope_dims = get("rope.dimension_count", head_dim)
    if rope_dims != head_dim and arch != "phi3":
        raise FsxError(f"{header.path}: partial RoPE (rope.dimension_count != head_dim) is not supported "
                       f"for {arch}")

    rope_scaling = None
    kind = get("rope.scaling.type", "none")
    if kind == "linear":
        rope_scaling = {"rope_type": "linear", "factor": float(get("rope.scaling.factor"))}
    elif kind == "yarn":
        rope_scaling = {"rope_type": "yarn", "factor": float(get("rope.scaling.factor")),
                        "original_max_position_embeddings": get("rope.scaling.original_context_length")}
    elif kind != "none":
        raise FsxError(f"{header.path}: GGUF RoPE scaling {kind!r} is not supported")
    if "rope_freqs.weight" in header.tensors:
        rope_scaling = _llama3_scaling(header, float(get("rope.freq_base", 10000.0)), head_dim)
    if "rope_factors_long.weight" in header.tensors:  # Phi-3's LongRoPE: the factors are tensors
        rope_scaling = {"rope_type": "longrope",
                        "long_factor": _f32_tensor(header, "rope_factors_long.weight", rope_dims // 2),
                        "short_factor": _f32_tensor(header, "rope_factors_short.weight", rope_dims // 2),
                        "original_max_position_embeddings": get("rope.scaling.original_context_length"),
                        "attention_factor": get("rope.scaling.attn_factor")}
    family = _family_fields(header, arch, hidden, heads, head_dim, rope_dims)

    tokens = m.get("tokenizer.ggml.tokens") or []
    quantized = Counter(AFFINE_TYPES[t.type] for t in header.tensors.values() if t.type in AFFINE_TYPES)
    return ModelConfig.from_dict(
        {
            **family,
            "model_type": MODEL_TYPES.get(arch, arch),
            "hidden_size": hidden,
            "num_hidden_layers": get("block_count"),
            "intermediate_size": get("feed_forward_length"),
            "num_attention_heads": heads,
            "num_key_value_heads": get("attention.head_count_kv", heads),
            "head_dim": head_dim,
            "vocab_size": get("vocab_size", len(tokens)),
            "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon", 1e-6)),
            "rope_theta": float(get("rope.freq_base", 10000.0)),
            "rope_scaling": rope_scaling,
            "max_position_embeddings": get("context_length", 4096),
            "tie_word_embeddings": "output.weight" not in header.tensors,
            "torch_dtype": "float16",  # GGUF scales and most float tensors are fp16
            "bos_token_id": m.get("tokenizer.ggml.bos_token_id"),
            "eos_token_id": m.get("tokenizer.ggml.eos_token_id"),
            # Each quantized layer's bits/group are read off its shapes (quantize.py);
            # this block only says "quantized" and names the most common width.
            "quantization": (
                {"group_size": 32, "bits": quantized.most_common(1)[0][0], "mode": "affine"}
                if quantized else None
            ),
        },
        source=str(header.path),
    )


def _family_fields(header: GGUFHeader, arch: str, hidden: int, heads: int, head_dim: int,
                   rope_dims: int) -> dict[str, Any]:
    """The config.json fields of the newer families, from their GGUF metadata (or llama.cpp's
    fixed values where the file has none: llama-model.cpp)."""
    m = header.metadata

    def get(key: str, default=None):
        return m.get(f"{arch}.{key}", default)

    out: dict[str, Any] = {}
    if get("attention.sliding_window") is not None:
        out["sliding_window"] = get("attention.sliding_window")
    if arch == "phi3":
        out["partial_rotary_factor"] = rope_dims / head_dim
        out["original_max_position_embeddings"] = get("rope.scaling.original_context_length")
    if arch == "gemma3":
        layers = get("block_count")
        # llama.cpp: every 6th layer global unless the file says otherwise (gguf-py's
        # sliding_window_pattern: a period, or one bool per layer, true = local), local
        # layers with base 10000, and the attention scale 1/sqrt(head_dim) except for
        # Gemma 3 27B (62 layers): 1/sqrt(hidden / heads)
        pattern = get("attention.sliding_window_pattern", 6)
        if isinstance(pattern, list):
            out["layer_types"] = ["sliding_attention" if p else "full_attention" for p in pattern]
        else:
            out["sliding_window_pattern"] = pattern
        scale = get("attention.scale")  # gguf-py's key for it; llama.cpp's Gemma 3 files have none
        out.update(rope_local_base_freq=10000.0,
                   query_pre_attn_scalar=(1 / scale**2 if scale else
                                          hidden // heads if layers == 62 else head_dim),
                   hidden_activation="gelu_pytorch_tanh")
    if arch == "qwen3moe":
        out.update(num_experts=get("expert_count"), num_experts_per_tok=get("expert_used_count"),
                   moe_intermediate_size=get("expert_feed_forward_length"),
                   norm_topk_prob=True)  # llama.cpp normalises Qwen3-MoE's top-k weights
    return out


def _f32_tensor(header: GGUFHeader, name: str, n: int) -> list[float]:
    """A small F32 tensor's values, read from the file (for metadata kept as tensors)."""
    import numpy as np

    t = header.tensors.get(name)
    if t is None or t.type != "F32" or t.shape != (n,):
        raise FsxError(f"{header.path}: {name} is {t and t.type} {t and list(t.shape)}, expected F32 [{n}]")
    with open(header.path, "rb") as f:
        f.seek(header.data_start + t.offset)
        return [float(x) for x in np.frombuffer(f.read(t.nbytes), dtype="<f4")]


# Llama 3's RoPE stretch, as every Llama 3.1+ config.json states it (the factor varies).
LLAMA3_ROPE = {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}


def _llama3_scaling(header: GGUFHeader, base: float, head_dim: int) -> dict[str, Any]:
    """Llama 3.1+ RoPE scaling, recovered from the `rope_freqs` tensor.

    llama.cpp stores the result (one divisor per frequency: theta_i = p * base^(-2i/D)
    / rope_freqs[i]), not config.json's parameters. Its largest divisor is `factor`;
    with Llama 3's standard low/high factors and original context (LLAMA3_ROPE) the
    whole vector must come out the same, or the file is refused.
    """
    import numpy as np

    from ..model.rope import llama3_periods

    t = header.tensors["rope_freqs.weight"]
    if t.type != "F32" or t.shape != (head_dim // 2,):
        raise FsxError(f"{header.path}: rope_freqs is {t.type} {list(t.shape)}, expected F32 [{head_dim // 2}]")
    with open(header.path, "rb") as f:
        f.seek(header.data_start + t.offset)
        divisors = np.frombuffer(f.read(t.nbytes), dtype="<f4")
    scaling = {**LLAMA3_ROPE, "factor": float(divisors.max())}
    periods = np.array(llama3_periods(head_dim, base, scaling))  # mx.fast.rope's `freqs`
    plain = base ** (np.arange(0, head_dim, 2) / head_dim)
    if not np.allclose(periods / plain, divisors, rtol=1e-4):
        raise FsxError(f"{header.path}: rope_freqs do not follow Llama 3's RoPE scaling; not supported")
    return scaling


# --- tensors: GGUF names -> Hugging Face names --------------------------------------

_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# Where an architecture's names differ (gguf-py's TensorNameMap, llama.cpp's converter):
_ARCH_LAYER_NAMES = {
    # Gemma 3's four norms: ffn_norm is the norm *before* the MLP, post_* the ones after
    "gemma3": {"post_attention_norm": "post_attention_layernorm", "ffn_norm": "pre_feedforward_layernorm",
               "post_ffw_norm": "post_feedforward_layernorm"},
    # Phi-3 keeps q/k/v and gate/up joined, as its checkpoints do (the model's sanitize splits them)
    "phi3": {"attn_qkv": "self_attn.qkv_proj", "ffn_up": "mlp.gate_up_proj"},
    # Qwen3-MoE: the router and the stacked experts [E, out, in]
    "qwen3moe": {"ffn_gate_inp": "mlp.gate", "ffn_gate_exps": "mlp.switch_mlp.gate_proj",
                 "ffn_up_exps": "mlp.switch_mlp.up_proj", "ffn_down_exps": "mlp.switch_mlp.down_proj"},
}
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.(\w+)$")
# Tensors that hold configuration (read into ModelConfig), not weights
CONFIG_TENSORS = ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")


def hf_name(name: str, arch: str = "llama") -> str | None:
    """'blk.3.ffn_up.scales' -> 'model.layers.3.mlp.up_proj.scales' (None if unknown)."""
    if match := _BLOCK.match(name):
        layer, part, suffix = match.groups()
        names = {**_LAYER_NAMES, **_ARCH_LAYER_NAMES.get(arch, {})}
        if part in names:
            return f"model.layers.{layer}.{names[part]}.{suffix}"
        return None
    base, _, suffix = name.rpartition(".")
    return f"{_GLOBAL_NAMES[base]}.{suffix}" if base in _GLOBAL_NAMES else None


def unpermute(w: mx.array, n_heads: int) -> mx.array:
    """Undo llama.cpp's Q/K row order, back to Hugging Face's.

    Hugging Face Llama rotates the two *halves* of each head (rotate-half RoPE);
    llama.cpp rotates *adjacent pairs*. Its converter therefore reorders the rows
    of q_proj/k_proj within each head, half-major -> pair-major:

        HF row  h*D + s*D/2 + i   ->   GGUF row  h*D + 2*i + s     (s = 0/1: which half)

    We apply the inverse. Rows are independent in every format here (quantized
    groups run along the input dimension), so it is exact for weight, scales and
    biases alike. Qwen3 files are not permuted (llama.cpp runs them with NeoX RoPE).
    """
    rows = w.shape[0]
    head = rows // n_heads
    return w.reshape(n_heads, head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(rows, *w.shape[1:])


def load_tensors(header: GGUFHeader, config: ModelConfig) -> dict[str, mx.array]:
    """All tensors under Hugging Face names, Q/K rows in Hugging Face order."""
    try:
        raw = mx.load(str(header.path))
    except (RuntimeError, ValueError) as e:
        raise FsxError(f"{header.path}: cannot load GGUF tensors: {e}") from None
    arch = header.metadata.get("general.architecture")
    tensors, unknown = {}, []
    for name, t in raw.items():
        if name in CONFIG_TENSORS:
            continue  # became config.rope_scaling (_llama3_scaling, Phi-3's LongRoPE)
        hf = hf_name(name, arch)
        if hf is None:
            unknown.append(name)
            continue
        if config.model_type == "llama" and ".self_attn.q_proj." in hf:
            t = unpermute(t, config.num_attention_heads)
        elif config.model_type == "llama" and ".self_attn.k_proj." in hf:
            t = unpermute(t, config.num_key_value_heads)
        if arch == "gemma3" and hf.endswith("norm.weight"):
            t = t - 1  # llama.cpp's converter stores Gemma's 1 + w; the model adds the 1 itself
        tensors[hf] = t
    if unknown:
        more = f" (and {len(unknown) - 3} more)" if len(unknown) > 3 else ""
        raise FsxError(f"{header.path}: unexpected GGUF tensor(s) {', '.join(unknown[:3])}{more}")
    return tensors


def inspect_tensors(header: GGUFHeader) -> tuple[int, int, list[dict], dict]:
    """For `fsx inspect`: (parameters, bytes once loaded on the CPU, tensor rows, summary).

    Each row names the GGUF type and what fs-mlx holds it as: MLX affine (Q4_0,
    Q4_1, Q8_0), float, or dequantized to float16 by mx.load (every other type).
    """
    params = cpu_bytes = 0
    rows, loaded = [], Counter()
    arch = header.metadata.get("general.architecture")
    for t in sorted(header.tensors.values(), key=lambda t: _natural_key(hf_name(t.name, arch) or t.name)):
        n = 1
        for d in t.shape:
            n *= d
        params += n
        if t.type in AFFINE_TYPES:
            bits = AFFINE_TYPES[t.type]
            how = f"MLX affine {bits}-bit, group 32"
            cpu_bytes += n * bits // 8 + 2 * (n // 32) * 4  # packed q + fp32 scales and biases
        else:
            how = "float" if t.type in FLOAT_TYPES else "dequantized to float16 (no MLX equivalent)"
            cpu_bytes += n * 4  # floats are fp32 on the CPU backend
        loaded[how] += 1
        rows.append({"name": hf_name(t.name, arch) or t.name, "shape": list(t.shape), "dtype": t.type,
                     "bytes": t.nbytes, "file": header.path.name, "gguf_name": t.name,
                     "loaded_as": how})
    summary = {"version": header.version,
               "types": dict(Counter(t.type for t in header.tensors.values()).most_common()),
               "loaded_as": dict(loaded.most_common()),
               "tokenizer": f"{header.metadata.get('tokenizer.ggml.model')} "
                            f"(pre {header.metadata.get('tokenizer.ggml.pre', 'default')})"}
    return params, cpu_bytes, rows, summary


def _natural_key(name: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


# --- everything at once ------------------------------------------------------------

def load_gguf(path: Path):
    """(config, tensors [HF names], tokenizer) from one .gguf file."""
    header = read_header(path)
    config = config_from_header(header)
    # The config must agree with the tensor table before anything is built or read.
    arch = header.metadata.get("general.architecture")
    check_against_tensors(config, {hf: t.shape for name, t in header.tensors.items()
                                   if (hf := hf_name(name, arch))}, str(path))
    tokenizer = build_tokenizer(header)
    return config, load_tensors(header, config), tokenizer
