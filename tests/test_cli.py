"""The commands, through click's runner: output a user reads, errors a user meets."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fs_mlx.apps.cli import main
from fs_mlx.generation.forward import logits_for
from fs_mlx.loader import load


def fsx(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def test_inspect_text_and_json(tiny_dir):
    r = fsx("inspect", tiny_dir)
    assert r.exit_code == 0
    assert "qwen3 (per-head QK-norm)" in r.output and "grouped-query (2 query heads" in r.output
    assert "model.layers.N.self_attn.q_proj.weight" in r.output  # layers folded
    j = json.loads(fsx("inspect", tiny_dir, "--json").output)
    # qwen3 tiny: embedding 320x64 + 2 layers x (q 96x64, k/v 48x64, o 64x96, mlp 3x96x64,
    # 2 norms x64, q/k norm x24) + final norm 64
    per_layer = 96 * 64 + 2 * 48 * 64 + 64 * 96 + 3 * 96 * 64 + 2 * 64 + 2 * 24
    assert j["parameters"] == 320 * 64 + 2 * per_layer + 64
    assert j["memory"]["kv_cache_bytes_per_token_fp32"] == 2 * 2 * 2 * 24 * 4


def test_tokenize_roundtrip(tiny_dir):
    ids = json.loads(fsx("tokenize", tiny_dir, "hello world", "--json").output)
    assert fsx("detokenize", tiny_dir, ",".join(map(str, ids))).output == "hello world\n"
    assert fsx("detokenize", tiny_dir, json.dumps(ids)).output == "hello world\n"
    listing = fsx("tokenize", tiny_dir, "-", input="hello world").output
    assert listing.rstrip().endswith(f"{len(ids)} tokens")


def test_logits_out_matches_library(tiny_dir, tmp_path):
    out = tmp_path / "l.npy"
    r = fsx("logits", tiny_dir, "--ids", "5,6,7", "--out", out, "--top", 3)
    assert r.exit_code == 0, r.output
    saved = np.load(out)
    assert saved.dtype == np.float32 and saved.shape == (3, 320)
    np.testing.assert_array_equal(saved, logits_for(load(tiny_dir), [5, 6, 7]))
    best = int(saved[-1].argmax())
    assert f"   1 {best:>8}" in r.output  # the top-1 row names the argmax id


@pytest.mark.parametrize("args, message", [
    (["logits", "{d}"], "give exactly one of --text or --ids"),
    (["logits", "{d}", "--ids", "1,x"], "token ids must be integers"),
    (["logits", "{d}", "--ids", "1,99999"], "token id 99999 is outside the vocabulary"),
    (["logits", "/no/such/dir", "--ids", "1"], "model not found: /no/such/dir"),
    (["logits", "{d}", "--ids", "1", "--kernels", "metal"], "needs an Apple GPU"),
])
def test_user_errors_are_one_line(tiny_dir, args, message):
    r = fsx(*[a.format(d=tiny_dir) for a in args])
    assert r.exit_code != 0
    assert message in r.output and "Traceback" not in r.output


def test_broken_checkpoint_through_cli(tiny_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_dir, d)
    (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:3000])
    r = fsx("logits", d, "--ids", "1")
    assert r.exit_code == 1 and "truncated" in r.output and "Traceback" not in r.output
    out = tmp_path / "never.npy"
    fsx("logits", d, "--ids", "1", "--out", out)
    assert not out.exists()  # nothing half-written


def test_real_process_exit_status_and_stderr(tiny_dir, tmp_path):
    """The installed entry point, as a user's shell sees it."""
    import subprocess
    import sys

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "gpt_neox", "hidden_size": 8}))
    p = subprocess.run([sys.executable, "-m", "fs_mlx.apps.cli", "inspect", str(bad)],
                       capture_output=True, text=True)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        f"Error: {bad}/config.json: unsupported architecture model_type='gpt_neox'; "
        "fs-mlx supports: gemma3_text, llama, mistral, phi3, qwen2, qwen3, qwen3_moe"
    ]


def test_msl_demo_runs_a_kernel_on_this_cpu():
    r = fsx("msl-demo", "--dim", "40", "--threadgroup", "32", "--order", "reverse")
    assert r.exit_code == 0, r.output
    err = float(r.output.split("max |kernel - numpy| over the output:")[1].split()[0])
    assert err < 1e-5  # fp32 RMSNorm of 40 values: a few ULP of reduction-order difference


def test_inspect_shows_experts_and_windows():
    """Qwen3-MoE: experts and the parameters one token uses (2 of 8 experts in 2 MoE layers:
    286,240 - 2 x 6 x 3 x 64 x 32 = 212,512); Gemma 3: the sliding window, and a KV cache
    for the full context bounded by it on the local layers."""
    root = Path(__file__).resolve().parent.parent / "golden" / "checkpoints"
    r = CliRunner().invoke(main, ["inspect", str(root / "qwen3-moe-tiny")])
    assert r.exit_code == 0, r.output
    assert "experts        8 per MoE layer (2 layers), 2 per token, MLP 32 each" in r.output
    assert "active params  212.51K (212,512) per token" in r.output
    r = CliRunner().invoke(main, ["inspect", str(root / "gemma3-tiny")])
    assert "sliding window 8 tokens on 2 of 3 layers" in r.output
    # 2 x 2 KV heads x 32 x 4 bytes per layer and token: 1 global layer x 2048 + 2 local x 8
    assert "KV cache, full context  1.0 MB fp32" in r.output
