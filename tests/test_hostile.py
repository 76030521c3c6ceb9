"""The hostile-input classes of issue 16, one row each: every one must end in one clear
line naming the file, field or limit, within seconds, never "internal error".

Each row breaks a copy of the tiny checkpoint (tests/hostile.py) and runs `fsx` on
it in-process under a 20 s alarm (a hang fails the test instead of stalling CI).
"""

from __future__ import annotations

import json
import os

import mlx.core as mx
import pytest
from click.testing import CliRunner

from checkpoints import write_checkpoint
from hostile import (
    alias, copy_checkpoint, deep_json, edit_config, edit_header, make_fifo, overlap,
    read_safetensors, relabel_one, time_limit, write_safetensors,
)
from fs_mlx.apps.cli import main

LOGITS = ("logits", "{m}", "--ids", "1")


def config(**changes):
    return lambda m: edit_config(m, **changes)


def raw_config(text: bytes):
    return lambda m: (m / "config.json").write_bytes(text)


def header(edit):
    return lambda m: edit_header(m / "model.safetensors", edit)


def trailing_bytes(m):
    h, data = read_safetensors(m / "model.safetensors")
    write_safetensors(m / "model.safetensors", h, data + b"\0" * 16)


def truncate(m):
    blob = (m / "model.safetensors").read_bytes()
    (m / "model.safetensors").write_bytes(blob[: len(blob) - 100])


def bool_shape(h):
    name = next(k for k in h if k != "__metadata__")
    h[name]["shape"] = [True, 64]


def shard_index(target: str):
    def setup(m):
        (m / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": target}}))
    return setup


def link_out(m):
    outside = m.parent / f"{m.name}-outside.safetensors"
    (m / "model.safetensors").rename(outside)
    (m / "model.safetensors").symlink_to(outside)


def indexed_link_out(m):
    outside = m.parent / f"{m.name}-outside.safetensors"
    os.replace(m / "model.safetensors", outside)
    (m / "shard.safetensors").symlink_to(outside)
    h, _ = read_safetensors(outside)
    weight_map = {k: "shard.safetensors" for k in h if k != "__metadata__"}
    (m / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


# (id, setup on a copy of the checkpoint (None: the good one), fsx arguments, stdin, message)
CASES = [
    # config.json: wrong types, out of range, lies the weights contradict
    ("layers-1e9", config(num_hidden_layers=1e9), LOGITS, None, "num_hidden_layers must be an integer, got 1000000000.0"),
    ("layers-1e6", config(num_hidden_layers=10**6), LOGITS, None, "num_hidden_layers must be less than or equal to 4096"),
    ("layers-lie", config(num_hidden_layers=4096), LOGITS, None, "num_hidden_layers=4096, the weights hold layers 0..1"),
    ("hidden-str", config(hidden_size="64"), LOGITS, None, "hidden_size must be an integer, got '64'"),
    ("hidden-lie", config(hidden_size=4096), LOGITS, None, "hidden_size=4096, the final norm"),
    ("vocab-1e12", config(vocab_size=1e12), LOGITS, None, "vocab_size must be an integer"),
    ("vocab-int-1e12", config(vocab_size=10**12), LOGITS, None, "vocab_size must be less than or equal to 16777216"),
    ("vocab-lie", config(vocab_size=10**6), LOGITS, None, "vocab_size=1000000, the embedding"),
    ("intermediate-lie", config(intermediate_size=1 << 20), LOGITS, None, "the config implies [1048576, 64]"),
    ("head-dim-0", config(head_dim=0), LOGITS, None, "head_dim must be greater than or equal to 1"),
    ("head-dim-odd", config(head_dim=25), LOGITS, None, "head_dim must be even"),
    ("heads-0", config(num_attention_heads=0), LOGITS, None, "num_attention_heads must be greater than or equal to 1"),
    ("rope-scaling-str", config(rope_scaling="linear"), LOGITS, None, "rope_scaling must be a dictionary"),
    ("linear-no-factor", config(rope_scaling={"rope_type": "linear"}), LOGITS, None, "'linear' needs factor > 0"),
    ("eos-str", config(eos_token_id="end"), LOGITS, None, "eos_token_id must be int or list[int], got 'end'"),
    ("model-type-list", config(model_type=["llama"]), LOGITS, None, "model_type must be a string"),
    ("rope-theta-0", config(rope_theta=0), LOGITS, None, "rope_theta must be greater than 0"),
    ("rope-theta-neg", config(rope_theta=-10000.0), LOGITS, None, "rope_theta must be greater than 0"),
    ("eps-neg", config(rms_norm_eps=-1e-6), LOGITS, None, "rms_norm_eps must be greater than 0"),
    ("tie-yes", config(tie_word_embeddings="yes"), LOGITS, None, "tie_word_embeddings must be a boolean"),
    ("config-deep", raw_config(deep_json(5000)), LOGITS, None, "nested deeper than 64 levels"),
    ("config-fifo", lambda m: make_fifo(m / "config.json"), LOGITS, None, "config.json: not a regular file (a FIFO)"),
    # safetensors files
    ("weights-fifo-inspect", lambda m: make_fifo(m / "model.safetensors"), ("inspect", "{m}"), None, "not a regular file (a FIFO)"),
    ("weights-fifo-logits", lambda m: make_fifo(m / "model.safetensors"), LOGITS, None, "not a regular file (a FIFO)"),
    ("header-deep", lambda m: write_safetensors(m / "model.safetensors", deep_json(5000), b""), LOGITS, None, "nested deeper than 64 levels"),
    ("offsets-overlap", header(overlap), LOGITS, None, "overlaps the previous tensor"),
    ("offsets-alias", header(alias), LOGITS, None, "overlaps the previous tensor"),
    ("trailing-bytes", trailing_bytes, LOGITS, None, "16 bytes after the last tensor"),
    ("truncated", truncate, LOGITS, None, "truncated: tensor"),
    ("shape-bool", header(bool_shape), LOGITS, None, "malformed shape"),
    ("bf16-as-f16", header(relabel_one("F16")), LOGITS, None, "F16 but"),
    # shard paths
    ("shard-dotdot", shard_index("../../other/model.safetensors"), LOGITS, None, "leaves the model folder"),
    ("shard-absolute", shard_index("/etc/passwd"), LOGITS, None, "leaves the model folder"),
    ("shard-link-out", indexed_link_out, LOGITS, None, "leaves the model folder"),
    ("weights-link-out", link_out, LOGITS, None, "a link that leaves the model folder"),
    ("tokenizer-fifo", lambda m: make_fifo(m / "tokenizer.json"), LOGITS, None, "tokenizer.json: not a regular file (a FIFO)"),
    ("tokenizer-config-deep", lambda m: (m / "tokenizer_config.json").write_bytes(deep_json(5000)), LOGITS, None,
     "nested deeper than 64 levels"),
    ("chat-template-fifo", lambda m: make_fifo(m / "chat_template.jinja"), ("generate", "{m}", "-p", "hi", "-n", "1"),
     None, "chat_template.jinja: not a regular file (a FIFO)"),
    # command-line options and input, checked before loading
    ("seed-neg", None, ("generate", "{m}", "-p", "hi", "--seed", "-1"), None, "seed must be in [0, 2**64)"),
    ("top-k-huge", None, ("generate", "{m}", "-p", "hi", "--top-k", str(10**20)), None, "top-k must be >= 0 and <= 16777216"),
    ("temp-huge", None, ("generate", "{m}", "-p", "hi", "--temp", "1e308"), None, "temperature must be >= 0 and <= 100"),
    ("context-huge", None, ("generate", "{m}", "-p", "hi", "--context", str(10**12)), None, "16<=x<=16777216"),
    ("max-tokens-huge", None, ("generate", "{m}", "-p", "hi", "-n", str(10**12)), None, "1<=x<=16777216"),
    ("out-empty", None, ("logits", "{m}", "--ids", "1", "--out", ""), None, "--out needs a file name"),
    ("stdin-not-utf8", None, ("generate", "{m}", "-p", "-"), b"\xff\xfehello", "standard input is not UTF-8"),
    ("tokenize-stdin-not-utf8", None, ("tokenize", "{m}", "-"), b"caf\xe9", "standard input is not UTF-8"),
    ("model-name-5000", None, ("inspect", "a" * 5000), None, "the name is too long for a path"),
    ("repo-id-long", None, ("inspect", "a/" + "b" * 150), None, "not a valid Hugging Face repo id"),
]


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("bf16") / "m", dtype=mx.bfloat16)


@pytest.mark.parametrize("name, setup, args, stdin, message", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_gets_one_clear_line(name, setup, args, stdin, message, tiny_dir, bf16_dir, tmp_path):
    src = bf16_dir if name == "bf16-as-f16" else tiny_dir
    m = copy_checkpoint(src, tmp_path / "m") if setup else src
    if setup:
        setup(m)
    with time_limit(20):
        r = CliRunner().invoke(main, [a.format(m=m) for a in args], input=stdin)
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert r.exit_code in (1, 2), r.output
    assert "internal error" not in r.output and "Traceback" not in r.output, r.output
    assert len(errors) == 1 and message in errors[0], r.output


def test_generation_config_values_are_only_recommendations(tiny_dir, tmp_path):
    """generation_config.json's ids and sampling values are only recommendations: wrong ones are
    skipped and the model runs; a file that is not sane JSON is still one clear line."""
    m = copy_checkpoint(tiny_dir, tmp_path / "m")
    (m / "generation_config.json").write_text('{"eos_token_id": "end", "bos_token_id": [1], "do_sample": true, '
                                              '"top_k": true, "temperature": "hot"}')
    with time_limit(20):
        r = CliRunner().invoke(main, ["generate", str(m), "-p", "hi", "-n", "2"])
    assert r.exit_code == 0, r.output
    (m / "generation_config.json").write_bytes(deep_json(5000))
    with time_limit(20):
        r = CliRunner().invoke(main, ["generate", str(m), "-p", "hi", "-n", "2"])
    assert r.exit_code == 1 and "generation_config.json: JSON nested deeper than 64 levels" in r.output


def test_the_good_checkpoint_still_runs(tiny_dir):
    """The control: the unbroken checkpoint passes every check the rows above trip."""
    r = CliRunner().invoke(main, [*(a.format(m=tiny_dir) for a in LOGITS)])
    assert r.exit_code == 0, r.output


# --- GGUF files ---------------------------------------------------------------------------

def patch_tensor_offset(data: bytes, which: int, offset) -> bytes:
    """The `which`-th tensor's data offset replaced (offset(original) -> new)."""
    from fuzzing import gguf_fields

    fields, _ = gguf_fields(data)
    pos, width, _ = [f for f in fields if f[2] == "offset"][which]
    original = int.from_bytes(data[pos:pos + width], "little")
    return data[:pos] + offset(original).to_bytes(width, "little") + data[pos + width:]


GGUF_CASES = [  # (id, extra metadata or a byte patch, message)
    ("gguf-tokens-not-strings", {"tokenizer.ggml.tokens": [1, 2, 3]}, "tokenizer.ggml.tokens must be a list of str"),
    ("gguf-merge-unknown-token", {"tokenizer.ggml.merges": ["zzz qqq"]}, "GGUF tokenizer metadata is inconsistent"),
    ("gguf-token-type-length", {"tokenizer.ggml.token_type": [1, 1]}, "token_type has 2 entries for 320 tokens"),
    ("gguf-layers-lie", {"qwen3.block_count": 4096}, "num_hidden_layers=4096, the weights hold layers 0..1"),
    ("gguf-vocab-lie", {"qwen3.vocab_size": 100000}, "vocab_size=100000, the embedding"),
    ("gguf-alignment", {"general.alignment": 48}, "must be a power of two"),
    ("gguf-offset-overlap", lambda d: patch_tensor_offset(d, 1, lambda o: 0), "overlaps the tensor before it"),
    ("gguf-offset-misaligned", lambda d: patch_tensor_offset(d, 1, lambda o: o + 1), "is misaligned or leaves a gap"),
]


@pytest.fixture(scope="module")
def good_gguf(tmp_path_factory):
    from checkpoints import random_model
    from gguf_files import write_gguf

    return write_gguf(tmp_path_factory.mktemp("gguf") / "good.gguf", random_model(), permute=False)


@pytest.mark.parametrize("name, change, message", GGUF_CASES, ids=[c[0] for c in GGUF_CASES])
def test_hostile_gguf_gets_one_clear_line(name, change, message, good_gguf, tmp_path):
    from checkpoints import random_model
    from gguf_files import write_gguf

    path = tmp_path / "bad.gguf"
    if callable(change):
        path.write_bytes(change(good_gguf.read_bytes()))
    else:
        write_gguf(path, random_model(), permute=False, extra_meta=change)
    with time_limit(20):
        r = CliRunner().invoke(main, ["logits", str(path), "--ids", "1"])
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert r.exit_code == 1 and "internal error" not in r.output, r.output
    assert len(errors) == 1 and message in errors[0], r.output


def test_the_good_gguf_still_runs(good_gguf):
    r = CliRunner().invoke(main, ["logits", str(good_gguf), "--ids", "1"])
    assert r.exit_code == 0, r.output
