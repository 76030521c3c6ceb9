"""MLX affine quantization: same numbers as mlx-lm, loads both ways, clear errors.

The oracle is mlx-lm itself (`mlx_lm.convert -q`, `mlx_lm.load`): quantizing a
golden checkpoint with `fsx quantize` must give bit-identical tensors, and each
side must load what the other wrote.
"""

import json
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from click.testing import CliRunner

from fs_mlx.formats import quantize as q
from fs_mlx.apps.cli import main
from fs_mlx.errors import FsxError
from fs_mlx.generation.forward import logits_for
from fs_mlx.loader import load
from fs_mlx.model import quantized as qz
from fs_mlx.model.backends import MLXBackend
from fs_mlx.model.transformer import Embedding, Linear, Transformer

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "checkpoints"
IDS = [5, 60, 7, 300, 12, 999, 41, 3, 77, 250]


def fsx(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def safetensors(folder: Path) -> dict[str, mx.array]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(mx.load(str(f)))
    return out


def mlx_lm_logits(folder: Path, ids=IDS) -> np.ndarray:
    import mlx_lm

    model, _ = mlx_lm.load(str(folder))
    model.set_dtype(mx.float32)  # compare in fp32, as fsx runs on the CPU
    return np.array(model(mx.array([ids]))[0])


def hub_spelling(name: str, tmp_path: Path) -> Path:
    """The golden checkpoint as mlx-lm can read it. qwen3-moe-tiny's config.json has transformers
    5's spelling (num_local_experts, rope_parameters); mlx-lm reads the hub's (num_experts, rope_theta)."""
    if name != "qwen3-moe-tiny":
        return GOLDEN / name
    src = tmp_path / "src"
    shutil.copytree(GOLDEN / name, src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["num_experts"] = cfg.pop("num_local_experts")
    cfg["rope_theta"] = cfg.pop("rope_parameters")["rope_theta"]
    (src / "config.json").write_text(json.dumps(cfg))
    return src


# --- the oracle: mlx-lm quantizing the same checkpoint ---------------------------------

# qwen3-tiny is stored fp32, llama-tiny bf16 (untied head), llama-mha fp16 in two shards.
@pytest.mark.parametrize("name, bits, group", [
    ("qwen3-tiny", 4, 64), ("qwen3-tiny", 8, 32), ("llama-tiny", 4, 32), ("llama-tiny", 8, 64),
    ("llama-mha", 4, 64),
    # issue 14's families: mlx-lm's own model files for each (phi3 keeps qkv/gate_up joined,
    # qwen3_moe stacks the experts into switch_mlp and keeps the router at 8 bits)
    ("qwen2-tiny", 4, 32), ("mistral-tiny", 4, 32), ("gemma3-tiny", 4, 32), ("phi3-tiny", 4, 32),
    ("qwen3-moe-tiny", 4, 32),
])
def test_fsx_quantize_equals_mlx_lm_convert(tmp_path, name, bits, group):
    from mlx_lm import convert

    src = hub_spelling(name, tmp_path)
    convert(str(src), str(tmp_path / "mlx-lm"), quantize=True, q_bits=bits, q_group_size=group)
    code, out = fsx("quantize", src, "--bits", bits, "--group-size", group, "-o", tmp_path / "fsx")
    assert code == 0, out
    theirs, ours = safetensors(tmp_path / "mlx-lm"), safetensors(tmp_path / "fsx")
    assert sorted(theirs) == sorted(ours)
    for k in theirs:  # same format, same numbers: bit for bit
        assert theirs[k].dtype == ours[k].dtype and theirs[k].shape == ours[k].shape, k
        assert mx.array_equal(theirs[k], ours[k]).item(), k
    assert any(k.endswith(".scales") for k in ours)
    config = json.loads((tmp_path / "fsx" / "config.json").read_text())
    assert config["quantization"] == json.loads((tmp_path / "mlx-lm" / "config.json").read_text())["quantization"]
    assert {"group_size": group, "bits": bits, "mode": "affine"}.items() <= config["quantization"].items()


# Not phi3-tiny: mlx-lm's SuScaledRoPE always uses LongRoPE's long_factor, transformers
# (and fsx, tests/test_golden.py) the short one within the original context.
@pytest.mark.parametrize("name", ["qwen3-tiny", "llama-tiny", "gemma3-tiny", "qwen3-moe-tiny"])
def test_round_trip_loads_in_fsx_and_mlx_lm(tmp_path, name):
    """mlx-lm's model files are an independent implementation of each family: its Gemma 3,
    its Qwen3-MoE (SwitchGLU through gather_qmm)."""
    out = tmp_path / "q4"
    src = hub_spelling(name, tmp_path)
    assert fsx("quantize", src, "--bits", 4, "--group-size", 32, "-o", out)[0] == 0
    on_disk = logits_for(load(out), IDS)
    # Quantizing while loading is the same code on the same numbers: identical logits.
    on_load = logits_for(load(src, quantize=(4, 32)), IDS)
    np.testing.assert_array_equal(on_disk, on_load)
    # mlx-lm runs the same quantized weights through its own model code; both fp32,
    # so only summation order differs: 1e-4 on logits of O(10).
    np.testing.assert_allclose(mlx_lm_logits(out), on_disk, atol=1e-4, rtol=0)
    # The tokenizer files came along.
    assert load(out).tokenizer.encode("hello world") == load(src).tokenizer.encode("hello world")


def test_mixed_precision_checkpoint_with_per_layer_overrides(tmp_path):
    """An mlx-community style file: 4-bit default, one layer 8-bit, one left float, one
    8-bit layer named nowhere in the config (bits read off its shapes, as mlx-lm does)."""
    src = GOLDEN / "qwen3-tiny"
    model = Transformer(load(src).config, ops=None)
    tensors = dict(mx.load(str(src / "model.safetensors")))
    qt, block = q.quantize_tensors(model, tensors, 4, 64)
    for path, (bits, group) in {"model.layers.0.mlp.down_proj": (8, 32),
                                "model.layers.2.self_attn.q_proj": (8, 64)}.items():
        w = tensors[f"{path}.weight"]
        qt[f"{path}.weight"], qt[f"{path}.scales"], qt[f"{path}.biases"] = mx.quantize(w, group, bits)
    block["model.layers.0.mlp.down_proj"] = {"bits": 8, "group_size": 32}
    dense = "model.layers.1.self_attn.o_proj"
    for suffix in ("weight", "scales", "biases"):
        qt.pop(f"{dense}.{suffix}")
    qt[f"{dense}.weight"] = tensors[f"{dense}.weight"]
    block[dense] = False
    out = tmp_path / "mixed"
    shutil.copytree(src, out)
    (out / "model.safetensors").unlink()
    mx.save_safetensors(str(out / "model.safetensors"), qt)
    config = json.loads((src / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "quantization": block}))

    lm = load(out)
    got = qz.quantization_of(lm.model)
    assert got["model.layers.0.mlp.down_proj"] == (8, 32)
    # layer 2: q 8-bit, k and v 4-bit -> joined as a Concat of the three (model/fuse.py)
    assert got["model.layers.2.self_attn.qkv_proj.parts.0"] == (8, 64)
    assert got["model.layers.2.self_attn.qkv_proj.parts.1"] == (4, 64)
    assert got["model.layers.0.self_attn.qkv_proj"] == (4, 64)  # one format: stacked
    assert got["model.embed_tokens"] == (4, 64)  # quantized embedding, used as the tied head
    assert dense not in got and type(lm.model.layers[1].self_attn.o_proj) is Linear
    logits = logits_for(lm, IDS)
    # The same float model, holding dequant(W) in plain layers: 1e-4 (summation order).
    qz.dequantize_model(lm.model)
    assert qz.quantization_of(lm.model) == {}
    np.testing.assert_allclose(logits_for(lm, IDS), logits, atol=1e-4, rtol=0)
    # and mlx-lm reads the file the same way.
    np.testing.assert_allclose(mlx_lm_logits(out), logits, atol=1e-4, rtol=0)


def test_quantized_layers_compute_dequantized_matmuls():
    lin, emb = Linear(128, 48, True, MLXBackend()), Embedding(50, 64, MLXBackend())
    mx.random.seed(0)
    lin.weight, lin.bias, emb.weight = (mx.random.normal(s) for s in ((48, 128), (48,), (50, 64)))
    x = mx.random.normal((2, 128))
    for bits in (4, 8):
        ql = qz.to_quantized(lin, bits, 32)
        ql.weight, ql.scales, ql.biases = mx.quantize(lin.weight, 32, bits)
        ql.bias = lin.bias
        w = mx.dequantize(ql.weight, ql.scales, ql.biases, group_size=32, bits=bits)
        # 1e-4: the fp32 quantized matmul and x @ W.T sum the same products in another order.
        np.testing.assert_allclose(np.array(ql(x)), np.array(x @ w.T + lin.bias), atol=1e-4)
        # Many rows (a prefill) take the dequantize-then-BLAS path on the CPU: same result.
        xs = mx.random.normal((3, 20, 128))
        np.testing.assert_allclose(np.array(ql(xs)), np.array(xs @ w.T + lin.bias), atol=1e-4)
        qe = qz.to_quantized(emb, bits, 64)
        qe.weight, qe.scales, qe.biases = mx.quantize(emb.weight, 64, bits)
        e = mx.dequantize(qe.weight, qe.scales, qe.biases, group_size=64, bits=bits)
        tokens = mx.array([[3, 49, 0, 3]])
        np.testing.assert_array_equal(np.array(qe(tokens)), np.array(e[tokens]))  # a row lookup: exact
        h = mx.random.normal((1, 4, 64))
        np.testing.assert_allclose(np.array(qe.as_linear(h)), np.array(h @ e.T), atol=1e-4)


def test_cpu_runs_fp32_activations_and_scales():
    # llama-tiny is stored bf16: quantize in bf16 (as mlx-lm does), compute in fp32.
    lm = load(GOLDEN / "llama-tiny", quantize=(4, 32))  # hidden 96: groups of 32
    layer = lm.model.layers[0].mlp.gate_up_proj.proj
    assert isinstance(layer, qz.QuantizedLinear) and layer.scales.dtype == mx.float32
    assert logits_for(lm, IDS).dtype == np.float32


def test_fsx_logits_quantize_option(tmp_path):
    npy = tmp_path / "l.npy"
    code, out = fsx("logits", GOLDEN / "qwen3-tiny", "--ids", "5,60,7", "--quantize", 8,
                    "--group-size", 32, "--out", npy)
    assert code == 0, out
    want = logits_for(load(GOLDEN / "qwen3-tiny", quantize=(8, 32)), [5, 60, 7])
    np.testing.assert_array_equal(np.load(npy), want)


def test_sharded_output_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(q, "SHARD_BYTES", 40_000)  # force several shards + an index
    out = tmp_path / "sharded"
    assert fsx("quantize", GOLDEN / "qwen3-tiny", "-o", out)[0] == 0
    assert len(list(out.glob("model-*.safetensors"))) > 1 and (out / "model.safetensors.index.json").exists()
    np.testing.assert_array_equal(logits_for(load(out), IDS),
                                  logits_for(load(GOLDEN / "qwen3-tiny", quantize=(4, 64)), IDS))
    np.testing.assert_allclose(mlx_lm_logits(out), logits_for(load(out), IDS), atol=1e-4, rtol=0)


# --- errors -------------------------------------------------------------------------

@pytest.mark.parametrize("spec, message", [
    ((3, 64), "unsupported quantization bits=3"),
    ((4, 16), "unsupported quantization group size 16"),
    ((2, 32), "fs-mlx supports 4 and 8"),
])
def test_bad_bits_or_group_size(spec, message):
    with pytest.raises(FsxError, match=message):
        load(GOLDEN / "qwen3-tiny", quantize=spec)


@pytest.mark.parametrize("args, message", [
    (["--bits", "3"], "'3' is not one of '4', '8'"),
    (["--group-size", "16"], "'16' is not one of '32', '64', '128'"),
])
def test_cli_rejects_bad_options(tmp_path, args, message):
    code, out = fsx("quantize", GOLDEN / "qwen3-tiny", *args, "-o", tmp_path / "x")
    assert code == 2 and message in out and not (tmp_path / "x").exists()


@pytest.mark.parametrize("block, message", [
    ({"group_size": 64, "bits": 4, "mode": "mxfp4"}, "quantization mode 'mxfp4' is not supported"),
    ({"group_size": 64, "bits": 4, "model.layers.0.mlp.up_proj": {"bits": 3, "group_size": 64}},
     "model.layers.0.mlp.up_proj: unsupported quantization bits=3"),
])
def test_unsupported_quantization_configs(tmp_path, block, message):
    out = tmp_path / "q"
    assert fsx("quantize", GOLDEN / "qwen3-tiny", "-o", out)[0] == 0
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "quantization": block}))
    code, text = fsx("logits", out, "--ids", "1,2")
    assert code == 1 and message in text and "Traceback" not in text


def test_other_quantization_methods_are_refused(tmp_path):
    out = tmp_path / "gptq"
    shutil.copytree(GOLDEN / "qwen3-tiny", out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "gptq"}}))
    with pytest.raises(FsxError, match="gptq-quantized checkpoints are not supported"):
        load(out)


def test_already_quantized_and_existing_output(tmp_path):
    out = tmp_path / "q"
    assert fsx("quantize", GOLDEN / "qwen3-tiny", "-o", out)[0] == 0
    code, text = fsx("quantize", GOLDEN / "qwen3-tiny", "-o", out)
    assert code == 1 and "already exists" in text
    code, text = fsx("quantize", out, "-o", tmp_path / "again")
    assert code == 1 and "already quantized" in text
    with pytest.raises(FsxError, match="already quantized"):
        load(out, quantize=(8, 64))
    code, text = fsx("logits", GOLDEN / "qwen3-tiny", "--ids", "1", "--group-size", "32")
    assert code == 1 and "--group-size only applies with --quantize" in text


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    def half_then_interrupt(folder, tensors, progress=None):
        (folder / "model.safetensors").write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(q, "_save_shards", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        q.write_quantized(GOLDEN / "qwen3-tiny", tmp_path / "out", 4, 64)
    assert list(tmp_path.iterdir()) == []  # no out, no temporary sibling
