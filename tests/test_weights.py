"""Loading safetensors: sharded, dtypes, and every way a checkpoint can be broken."""

import json
import shutil

import mlx.core as mx
import numpy as np
import pytest

from checkpoints import write_checkpoint
from fs_mlx.errors import FsxError
from fs_mlx.generation.forward import logits_for
from fs_mlx.loader import load


def copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_truncated_file_names_tensor_and_file(tiny_dir, tmp_path):
    d = copy(tiny_dir, tmp_path / "m")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(FsxError, match=r"model.safetensors: truncated: tensor '.+' ends at byte"):
        load(d)


def test_garbage_file(tiny_dir, tmp_path):
    d = copy(tiny_dir, tmp_path / "m")
    (d / "model.safetensors").write_bytes(b"\xff" * 100)
    with pytest.raises(FsxError, match="not a safetensors file or truncated"):
        load(d)


def test_missing_and_extra_tensors(tiny_dir, tmp_path):
    d = copy(tiny_dir, tmp_path / "m")
    w = mx.load(str(d / "model.safetensors"))
    w.pop("model.layers.1.mlp.up_proj.weight")
    w["model.layers.1.mlp.extra.weight"] = mx.zeros((2,))
    mx.save_safetensors(str(d / "model.safetensors"), w)
    with pytest.raises(FsxError) as e:
        load(d)
    assert "missing tensor model.layers.1.mlp.up_proj.weight" in str(e.value)
    assert "unexpected tensor model.layers.1.mlp.extra.weight in model.safetensors" in str(e.value)


def test_shape_mismatch_names_tensor(tiny_dir, tmp_path):
    d = copy(tiny_dir, tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 100
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FsxError, match=r"mlp.down_proj.weight in model.safetensors has shape \[64, 96\]"):
        load(d)


def test_sharded_equals_single_file(tiny_dir, tmp_path):
    d = copy(tiny_dir, tmp_path / "m")
    w = mx.load(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    names = sorted(w)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for fname, keys in shards.items():
        mx.save_safetensors(str(d / fname), {k: w[k] for k in keys})
        weight_map.update({k: fname for k in keys})
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    ids = [5, 17, 42, 99]
    np.testing.assert_array_equal(logits_for(load(d), ids), logits_for(load(tiny_dir), ids))


def test_missing_shard(tiny_dir, tmp_path):
    d = copy(tiny_dir, tmp_path / "m")
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "gone.safetensors"}}))
    with pytest.raises(FsxError, match="names shard gone.safetensors, which is missing"):
        load(d)


@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float16])
def test_half_checkpoints_load_as_fp32_on_cpu(tmp_path, dtype):
    d = write_checkpoint(tmp_path / "h", dtype=dtype)
    lm = load(d)
    assert lm.dtype == mx.float32 and lm.model.model.norm.weight.dtype == mx.float32
    # The half-precision weights, upcast exactly, compute the same logits as an fp32
    # model holding those rounded values.
    ref = write_checkpoint(tmp_path / "f", dtype=mx.float32)
    w = {k: v.astype(dtype).astype(mx.float32) for k, v in mx.load(str(ref / "model.safetensors")).items()}
    mx.save_safetensors(str(ref / "model.safetensors"), w)
    ids = [1, 2, 3, 4]
    np.testing.assert_array_equal(logits_for(lm, ids), logits_for(load(ref), ids))
