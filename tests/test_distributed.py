"""Two ranks over loopback (MLX's ring backend): the split model computes what the whole one does.

Each job starts two processes the way `mlx.launch` does on one machine (MLX_RANK
plus a hostfile of two free local ports) and waits a bounded time. One job per
mode runs every case (tests/dist_worker.py), because starting ranks costs seconds.

Expected values: transformers' logits and greedy tokens (golden/vectors) for the
float checkpoints, and the single-process fsx model for all of them — the split
changes only the order of additions (the partial sums of o_proj and down_proj).
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fs_mlx.apps.cli import main
from fs_mlx.formats.quantize import write_quantized
from fs_mlx.generation.forward import logits_for
from fs_mlx.generation.generate import generate
from fs_mlx.loader import load

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden"
WORKER = Path(__file__).resolve().parent / "dist_worker.py"
JOB_TIMEOUT_S = 120  # a hung job fails the test instead of the suite

# Single-process vs split, both fp32 on the same weights: only the partial sums
# of o_proj/down_proj are added in another order (measured worst 3.5e-5 on
# logits of O(30)); 1e-4 is the bar. Pipeline moves activations unchanged: exact.
ATOL = {"tensor": 1e-4, "pipeline": 0.0}
GOLDEN_ATOL = 1e-3  # transformers vs fsx, as in test_golden.py


def free_ports(n: int) -> int:
    """A port p with p .. p+n-1 free right now (the ring backend listens on consecutive ports)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p + n > 65535:
            continue
        try:
            socks = []
            for i in range(n):
                t = socket.socket()
                socks.append(t)
                t.bind(("127.0.0.1", p + i))
            return p
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError("no free ports")


def start_ranks(commands: list[list[str]], tmp_path: Path, env: dict | None = None) -> list[subprocess.Popen]:
    """One process per rank, connected by a ring hostfile on loopback (what mlx.launch writes)."""
    port = free_ports(len(commands))
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{port + r}"] for r in range(len(commands))]))
    procs = []
    for rank, cmd in enumerate(commands):
        e = {**os.environ, "PYTHONPATH": str(ROOT), "MLX_RANK": str(rank),
             "MLX_HOSTFILE": str(hostfile), "FSX_DIST_TIMEOUT": "30", **(env or {})}
        procs.append(subprocess.Popen(cmd, env=e, cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return procs


def finish(procs, timeout=JOB_TIMEOUT_S) -> list[tuple[int, str, str]]:
    """(exit status, stdout, stderr) of each rank; kills them all past the timeout."""
    deadline = time.monotonic() + timeout
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"a rank was still running after {timeout} s")
        results.append((p.returncode, out, err))
    return results


# --- the split model equals the whole one --------------------------------------------

PROMPTS = [[5, 17, 300, 42, 9, 100, 3, 77], [1, 2, 3]]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Float (f32, bf16, two-file), MLX-quantized on disk, quantized while loading, GGUF."""
    tmp = tmp_path_factory.mktemp("dist")
    golden = {}
    for name in ("qwen3-tiny", "llama-tiny", "llama-mha"):
        arrays = np.load(GOLDEN / "vectors" / f"{name}.npz")
        n = len(json.loads((GOLDEN / "vectors" / f"{name}.json").read_text())["prompts"])
        golden[name] = [arrays[f"p{i}_ids"].tolist() for i in range(min(n, 2))]
    # Group 32: the row-split inputs (qwen3-tiny's down_proj: 192 / 2 = 96) split on whole groups.
    q4 = write_quantized(GOLDEN / "checkpoints" / "qwen3-tiny", tmp / "qwen3-q4", 4, 32)["path"]
    from checkpoints import random_model
    from gguf_files import Q, write_gguf

    model = random_model(model_type="llama", hidden_size=256, intermediate_size=256, head_dim=64,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    types = {"attn_q": Q.Q8_0, "attn_k": Q.Q4_0, "attn_v": Q.Q4_1, "attn_output": Q.Q8_0,
             "ffn_down": Q.Q4_1, "ffn_up": Q.F16}
    gguf = write_gguf(tmp / "llama.gguf", model, types=types, permute=True)
    return [
        {"name": "qwen3-tiny", "model": str(GOLDEN / "checkpoints/qwen3-tiny"), "prompts": golden["qwen3-tiny"]},
        {"name": "llama-tiny", "model": str(GOLDEN / "checkpoints/llama-tiny"), "prompts": golden["llama-tiny"]},
        {"name": "llama-mha", "model": str(GOLDEN / "checkpoints/llama-mha"), "prompts": golden["llama-mha"]},
        {"name": "qwen3-q4-disk", "model": str(q4), "prompts": PROMPTS},
        {"name": "llama-q8-load", "model": str(GOLDEN / "checkpoints/llama-tiny"), "quantize": [8, 32],
         "prompts": PROMPTS},
        {"name": "llama-gguf", "model": str(gguf), "prompts": PROMPTS},
    ]


@pytest.fixture(scope="module")
def job(cases, tmp_path_factory):
    """Both modes, every case, in one two-rank job: {rank}/{mode}-{name} results in a directory."""
    tmp = tmp_path_factory.mktemp("job")
    spec = {"modes": ["tensor", "pipeline"], "out": str(tmp), "cases": cases}
    cmd = [sys.executable, str(WORKER), json.dumps(spec)]
    for rank, (code, out, err) in enumerate(finish(start_ranks([cmd, cmd], tmp))):
        assert code == 0, f"rank {rank}: {err[-2000:]}"
    return tmp


@pytest.fixture(scope="module")
def whole(cases):
    """The single-process logits and greedy tokens of every case and prompt."""
    out = {}
    for case in cases:
        q = tuple(case["quantize"]) if case.get("quantize") else None
        lm = load(case["model"], kernels="mlx", quantize=q)
        out[case["name"]] = [(logits_for(lm, ids), generate(lm, ids, max_tokens=16, ignore_eos=True)[1])
                             for ids in case["prompts"]]
    return out


@pytest.mark.parametrize("mode", ["tensor", "pipeline"])
def test_two_ranks_equal_one_process(mode, cases, job, whole):
    for case in cases:
        name = case["name"]
        golden = np.load(GOLDEN / "vectors" / f"{name}.npz") if (GOLDEN / "vectors" / f"{name}.npz").exists() else None
        for rank in (0, 1):
            got = np.load(job / f"{mode}-{name}.rank{rank}.npz")
            for i, (logits, greedy) in enumerate(whole[name]):
                where = f"{mode} {name} rank {rank} prompt {i}"
                np.testing.assert_allclose(got[f"p{i}_logits"], logits, rtol=0, atol=ATOL[mode], err_msg=where)
                assert got[f"p{i}_greedy"].tolist() == greedy, where
                if golden is not None:  # and against transformers itself
                    np.testing.assert_allclose(got[f"p{i}_logits"], golden[f"p{i}_logits"], rtol=0,
                                               atol=GOLDEN_ATOL, err_msg=where)
                    assert greedy == golden[f"p{i}_greedy"].tolist()[:16], where
