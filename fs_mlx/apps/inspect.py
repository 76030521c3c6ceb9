"""`fsx inspect`: what a checkpoint is, from its headers alone.

Reads config.json and the safetensors headers (never the weights), so it
answers instantly even for models larger than memory.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

from ..formats.hub import resolve
from ..formats.safetensors import tensor_index
from ..model.config import load_config

COMPUTE_BYTES_CPU = 4  # float32 activations and float weights on MLX's CPU backend


def describe(model: str) -> dict:
    where = resolve(model)
    if where.kind == "gguf":
        return _describe_gguf(where.path)
    model_dir = where.path
    config = load_config(model_dir)
    index = tensor_index(model_dir)
    bits = (config.quantization or {}).get("bits")

    params = 0
    compute_bytes = 0  # weights once loaded on the CPU backend (floats become fp32)
    tensors = []
    for name, t in sorted(index.items(), key=lambda kv: _natural_key(kv[0])):
        layer = (config.quantization or {}).get(name.rsplit(".", 1)[0])  # per-layer override
        quantized = t.dtype == "U32" and name.endswith(".weight") and bits
        if quantized and isinstance(layer, dict):
            quantized = layer.get("bits", bits)
        is_qparam = name.endswith((".scales", ".biases")) and f"{name.rsplit('.', 1)[0]}.weight" in index
        if quantized:
            params += math.prod(t.shape) * 32 // quantized  # packed uint32 -> logical weights
        elif not is_qparam:
            params += math.prod(t.shape)
        float_tensor = t.dtype in ("F16", "BF16", "F32", "F64")
        compute_bytes += math.prod(t.shape) * COMPUTE_BYTES_CPU if float_tensor else t.nbytes
        tensors.append({"name": name, "shape": list(t.shape), "dtype": t.dtype,
                        "bytes": t.nbytes, "file": t.file.name})

    disk_bytes = sum(t.nbytes for t in index.values())
    files = sorted({t.file.name for t in index.values()})
    return _report(model_dir, config, params, files, disk_bytes, compute_bytes, tensors)


def _describe_gguf(path) -> dict:
    from ..formats.gguf import config_from_header, inspect_tensors, read_header

    header = read_header(path)
    config = config_from_header(header)
    params, compute_bytes, tensors, summary = inspect_tensors(header)
    disk_bytes = header.file_size
    r = _report(path, config, params, [path.name], disk_bytes, compute_bytes, tensors)
    r["gguf"] = summary
    return r


def _report(path, config, params, files, disk_bytes, compute_bytes, tensors) -> dict:
    kv_per_layer_token = 2 * config.num_key_value_heads * config.head_dim
    kv_per_token = config.num_hidden_layers * kv_per_layer_token
    # A sliding-window layer's cache holds at most the window (generation/window_cache.py)
    ctx = config.max_position_embeddings
    kv_full = sum(min(ctx, config.sliding_window) if config.is_sliding(i) else ctx
                  for i in range(config.num_hidden_layers)) * kv_per_layer_token
    return {
        "path": str(path),
        "model_type": config.model_type,
        "config": {
            k: getattr(config, k)
            for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                      "num_key_value_heads", "head_dim", "intermediate_size", "vocab_size",
                      "rope_theta", "rms_norm_eps", "tie_word_embeddings",
                      "max_position_embeddings", "torch_dtype", "quantization")
        },
        "qk_norm": config.qk_norm,
        "parameters": params,
        "sliding_window": ({"window": config.sliding_window,
                            "layers": sum(map(config.is_sliding, range(config.num_hidden_layers)))}
                           if "sliding_attention" in config.layer_types else None),
        "experts": _experts(config, params),
        "files": files,
        "memory": {
            "weights_on_disk_bytes": disk_bytes,
            "weights_cpu_fp32_bytes": compute_bytes,
            "kv_cache_bytes_per_token_fp32": kv_per_token * 4,
            "kv_cache_bytes_per_token_bf16": kv_per_token * 2,
            "kv_cache_bytes_full_context_fp32": kv_full * 4,
        },
        "tensors": tensors,
    }


def _experts(config, params: int) -> dict | None:
    """Mixture of experts: how many, how many per token, and the parameters a token uses."""
    if not config.moe:
        return None
    moe_layers = sum(map(config.is_moe_layer, range(config.num_hidden_layers)))
    per_expert = 3 * config.hidden_size * config.moe_intermediate_size  # gate, up, down
    idle = moe_layers * (config.num_experts - config.num_experts_per_tok) * per_expert
    return {"experts": config.num_experts, "per_token": config.num_experts_per_tok,
            "moe_layers": moe_layers, "expert_intermediate_size": config.moe_intermediate_size,
            "parameters_per_expert_layer": per_expert, "active_parameters": params - idle}


def format_report(r: dict) -> str:
    c, m = r["config"], r["memory"]
    group = c["num_attention_heads"] // c["num_key_value_heads"]
    attn = "multi-head" if group == 1 else f"grouped-query ({group} query heads per KV head)"
    lines = [
        f"{r['path']}",
        f"  architecture   {r['model_type']}{' (per-head QK-norm)' if r['qk_norm'] else ''}",
        f"  parameters     {_count(r['parameters'])}",
        f"  layers         {c['num_hidden_layers']} x hidden {c['hidden_size']}, "
        f"MLP {c['intermediate_size']}",
        f"  attention      {c['num_attention_heads']} heads, {c['num_key_value_heads']} KV heads, "
        f"head_dim {c['head_dim']}: {attn}",
        f"  vocabulary     {c['vocab_size']}, embeddings "
        f"{'tied' if c['tie_word_embeddings'] else 'untied'}",
        f"  RoPE           theta {c['rope_theta']:g}, context {c['max_position_embeddings']}",
        f"  stored as      {c['torch_dtype'] or '?'}"
        + (f", quantized {c['quantization']}" if c["quantization"] else ""),
    ]
    if r.get("sliding_window"):
        w = r["sliding_window"]
        lines.append(f"  sliding window {w['window']} tokens on {w['layers']} of {c['num_hidden_layers']} layers")
    if r.get("experts"):
        e = r["experts"]
        lines += [f"  experts        {e['experts']} per MoE layer ({e['moe_layers']} layers), "
                  f"{e['per_token']} per token, MLP {e['expert_intermediate_size']} each",
                  f"  active params  {_count(e['active_parameters'])} per token"]
    if "gguf" in r:  # which GGUF types stay quantized, which become floats
        g = r["gguf"]
        lines += [
            f"  GGUF           v{g['version']}, tokenizer {g['tokenizer']}, tensor types "
            + ", ".join(f"{k} x{v}" for k, v in g["types"].items()),
            "  loaded as      " + "; ".join(f"{k} x{v}" for k, v in g["loaded_as"].items()),
        ]
    lines += [
        "memory",
        f"  weights on disk         {_bytes(m['weights_on_disk_bytes'])}",
        f"  weights loaded (CPU)    {_bytes(m['weights_cpu_fp32_bytes'])}  (float weights as fp32)",
        f"  KV cache per token      {_bytes(m['kv_cache_bytes_per_token_fp32'])} fp32, "
        f"{_bytes(m['kv_cache_bytes_per_token_bf16'])} bf16",
        f"  KV cache, full context  {_bytes(m['kv_cache_bytes_full_context_fp32'])} fp32",
        f"tensors ({len(r['tensors'])}; layers folded where all layers agree)",
    ]
    for name, shape, dtype, n in _fold_layers(r["tensors"], c["num_hidden_layers"]):
        times = f" x{n}" if n > 1 else ""
        lines.append(f"  {name:<52} {str(shape):<18} {dtype:<5}{times}")
    return "\n".join(lines)


def _fold_layers(tensors: list[dict], n_layers: int):
    """Print model.layers.N.x once when every layer has the same shape and dtype."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for t in tensors:
        groups[re.sub(r"\.layers\.\d+\.", ".layers.N.", t["name"])].append(t)
    seen = set()
    for t in tensors:
        key = re.sub(r"\.layers\.\d+\.", ".layers.N.", t["name"])
        members = groups[key]
        uniform = len(members) == n_layers and len({(str(x["shape"]), x["dtype"]) for x in members}) == 1
        if key != t["name"] and uniform:
            if key not in seen:
                seen.add(key)
                yield key, t["shape"], t["dtype"], len(members)
        else:
            yield t["name"], t["shape"], t["dtype"], 1


def _natural_key(name: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit} ({n:,})"
    return str(n)


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
