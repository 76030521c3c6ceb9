"""bench/gguf_checkpoint.py (a Hugging Face checkpoint -> the GGUF llama.cpp's tools would make)
and bench/qwen3_shape.py's table, on the golden tiny checkpoints (~2 s)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import gguf as ggufpy
import mlx.core as mx
import numpy as np
import pytest

from fs_mlx.formats import gguf
from fs_mlx.generation.forward import logits_for
from fs_mlx.loader import load
from fs_mlx.model.quantized import quantization_of

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden" / "checkpoints"
IDS = [5, 17, 33, 2, 90, 41, 7, 250, 999, 996]


def bench_module(name: str):
    sys.path.insert(0, str(ROOT / "bench"))  # qwen3_shape imports its siblings
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gc = bench_module("gguf_checkpoint")


def dequantized_twin(path: Path, src: Path, out: Path) -> Path:
    """The source checkpoint's folder holding gguf-py's dequantization of every tensor in the GGUF."""
    shutil.copytree(src, out)
    reader = ggufpy.GGUFReader(str(path))
    arch = reader.fields["general.architecture"].contents()
    heads = {"attn_q": reader.fields[f"{arch}.attention.head_count"].contents(),
             "attn_k": reader.fields[f"{arch}.attention.head_count_kv"].contents()}
    weights = {}
    for t in reader.tensors:
        a = ggufpy.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        part = t.name.split(".")[-2]
        if arch == "llama" and part in heads:
            a = np.array(gguf.unpermute(mx.array(a), heads[part]))
        weights[gguf.hf_name(t.name, arch)] = mx.array(a)
    for f in [*out.glob("*.safetensors"), *out.glob("*.safetensors.index.json")]:
        f.unlink()
    mx.save_safetensors(str(out / "model.safetensors"), weights)
    config = json.loads((out / "config.json").read_text())  # float32, or the load would round the twin
    (out / "config.json").write_text(json.dumps({**config, "dtype": "float32", "torch_dtype": "float32"}))
    return out


def with_byte_level_tokenizer(name: str, tmp_path: Path) -> Path:
    """A golden checkpoint with qwen3-tiny's byte-level tokenizer (same 1024 ids), as
    bench/random_checkpoint.py's checkpoints have; the writer writes 'gpt2' vocabularies only."""
    out = tmp_path / name
    shutil.copytree(GOLDEN / name, out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(GOLDEN / "qwen3-tiny" / f, out / f)
    return out


@pytest.mark.parametrize("name", ["qwen3-tiny", "llama-mha"])
def test_gguf_checkpoint_loads_as_the_checkpoint_it_came_from(tmp_path, name):
    src = GOLDEN / name if name == "qwen3-tiny" else with_byte_level_tokenizer(name, tmp_path)
    want = logits_for(load(src), IDS)
    f32 = load(gc.write(src, tmp_path / "f32.gguf", "f32", quiet=True))
    # Same float32 weights, same code: only the file in between (llama's Q/K rows permuted
    # there and back). 1e-5 allows for nothing but rounding noise on O(10) logits.
    np.testing.assert_allclose(logits_for(f32, IDS), want, atol=1e-5, rtol=0)
    with pytest.raises(SystemExit, match="byte-level"):  # SentencePiece: refused, not mis-written
        gc.write(GOLDEN / "llama-mha", tmp_path / "spm.gguf", "f32", quiet=True)
    assert f32.config.tie_word_embeddings == load(src).config.tie_word_embeddings
    assert f32.tokenizer.encode("hello world, 12 <|im_start|>") == load(src).tokenizer.encode("hello world, 12 <|im_start|>")
    for kind, bits in (("q8_0", 8), ("q4_0", 4)):
        path = gc.write(src, tmp_path / f"{kind}.gguf", kind, quiet=True)
        lm = load(path)
        # Every matrix stays quantized, the embedding included (llama-quantize --pure), as MLX affine g32.
        q = quantization_of(lm.model)
        assert q and set(q.values()) == {(bits, 32)} and "model.embed_tokens" in q
        # fsx runs exactly the function the file describes by gguf-py's (llama.cpp's) dequantization:
        # the same float32 products in another order at most, 1e-4 on O(10) logits.
        twin = load(dequantized_twin(path, src, tmp_path / f"twin-{kind}"))
        np.testing.assert_allclose(logits_for(lm, IDS), logits_for(twin, IDS), atol=1e-4, rtol=0)


def test_gguf_checkpoint_metadata_and_vocabulary(tmp_path):
    path = gc.write(GOLDEN / "qwen3-tiny", tmp_path / "m.gguf", "q4_0", quiet=True)
    r = ggufpy.GGUFReader(str(path))
    meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    assert meta["general.architecture"] == "qwen3" and meta["general.file_type"] == 2  # MOSTLY_Q4_0
    assert meta["qwen3.attention.key_length"] == 32 and meta["qwen3.context_length"] == 4096
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "qwen2"
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    # the tokenizer's 1000 tokens, then [PAD<i>] (UNUSED) up to the embedding's 1024 rows
    assert len(tokens) == 1024 and tokens[1000] == "[PAD1000]" and types[1000] == ggufpy.TokenType.UNUSED
    assert tokens[996] == "<|im_start|>" and types[996] == ggufpy.TokenType.CONTROL
    assert types[998] == ggufpy.TokenType.USER_DEFINED and types[0] == ggufpy.TokenType.NORMAL
    kinds = {t.name: t.tensor_type for t in r.tensors}
    assert "output.weight" not in kinds  # tied
    assert kinds["token_embd.weight"] == ggufpy.GGMLQuantizationType.Q4_0
    assert kinds["blk.0.attn_norm.weight"] == ggufpy.GGMLQuantizationType.F32


def test_qwen3_shape_table():
    qs = bench_module("qwen3_shape")

    def row(engine, dtype, decode, prompt, ratio=None):
        spread = {m: {"min": v, "median": v, "max": v} for m, v in
                  (("prompt_tps", prompt), ("generation_tps", decode))}
        return {"engine": engine, "dtype": dtype, "spread": spread, "bytes_per_token": 4.5e8,
                "ratio": ratio, "ratio_paired": ratio}

    reports = {
        "q4_0": {"machine": {"load_average": [1.0, 1.5, 2.0]}, "results": [
            row("fsx", "float32", 10.0, 50.0),
            row("llama.cpp", "Q4_0", 20.0, 200.0, {"generation_tps": 0.5, "prompt_tps": 0.25})]},
        "f32": {"machine": {"load_average": None}, "results": [
            row("fsx", "float32", 3.0, 20.0),
            row("mlx-lm", "float32", 2.0, 10.0, {"generation_tps": 1.5, "prompt_tps": 2.0})]},
    }
    lines = qs.summarize(reports)
    assert [(l["entry"], l["met"]) for l in lines] == [("q4_0", True), ("f32", False)]  # 0.5 >= 0.4, 1.5 < 2
    table = qs.format_table(lines)
    assert "0.50x (0.50x), 0.25x" in table and "decode >= 2.00x  NO" in table
    assert "q4_0 1.0 1.5 2.0" in table
    with pytest.raises(SystemExit):
        qs.main(["--only", "q5_k", "--table"])


def test_q4_0_is_what_llama_quantize_pure_writes(tmp_path):
    """Where llama.cpp's llama-quantize is built (bench/build_llama_cpp.sh, next to llama-bench):
    our Q4_0 file and `llama-quantize --pure F32-file Q4_0` agree on every tensor, byte for byte,
    and on every metadata value."""
    from fs_mlx.files import cache_dir

    binary = cache_dir() / "llama.cpp" / "build" / "bin" / "llama-quantize"
    if not binary.is_file():
        pytest.skip("llama-quantize not built (bench/build_llama_cpp.sh)")
    import subprocess

    src = GOLDEN / "qwen3-tiny"
    f32 = gc.write(src, tmp_path / "f32.gguf", "f32", quiet=True)
    done = subprocess.run([str(binary), "--pure", str(f32), str(tmp_path / "lq.gguf"), "Q4_0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs, ours = (ggufpy.GGUFReader(str(p)) for p in (tmp_path / "lq.gguf", gc.write(src, tmp_path / "q4.gguf", "q4_0", quiet=True)))
    a, b = ({t.name: t for t in r.tensors} for r in (theirs, ours))
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].tensor_type == b[name].tensor_type, name
        np.testing.assert_array_equal(a[name].data, b[name].data, err_msg=name)
    meta = [{k: f.contents() for k, f in r.fields.items()} for r in (theirs, ours)]
    assert meta[0] == meta[1]
