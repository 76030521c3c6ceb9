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
import signal
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
        a, b = (np.load(job / f"{mode}-{name}.rank{r}.npz")["sampled"].tolist() for r in (0, 1))
        assert a == b, f"{mode} {name}: the ranks sampled different tokens"


# --- faults: one clear line, bounded time ------------------------------------------------

FSX = [sys.executable, "-m", "fs_mlx"]
TINY = str(GOLDEN / "checkpoints" / "qwen3-tiny")
LLAMA = str(GOLDEN / "checkpoints" / "llama-tiny")


def test_a_killed_rank_stops_the_others_with_one_line(tmp_path):
    cmd = FSX + ["generate", TINY, "-p", "hi", "-n", "100000", "--ignore-eos", "--parallel", "tensor"]
    rank0, rank1 = start_ranks([cmd, cmd], tmp_path)
    for line in rank0.stderr:  # wait until both are generating
        if line.startswith("loaded in"):
            break
    time.sleep(0.5)
    rank1.kill()
    t = time.monotonic()
    (code, _, err), _ = finish([rank0, rank1])
    # 1 when MLX raises the loss; killed by the peer watcher (distributed.py) when MLX
    # hangs on it instead — which one depends on what was queued when the peer died
    assert code in (1, -signal.SIGKILL) and time.monotonic() - t < 30
    assert "Error: lost the connection to another rank" in err and "Traceback" not in err


def test_a_peer_that_never_comes_is_an_error_not_a_hang(tmp_path):
    # Rank 1 is never started: rank 0 waits FSX_DIST_TIMEOUT seconds, then says so.
    cmd = FSX + ["generate", TINY, "-p", "hi", "--parallel", "tensor"]
    port = free_ports(2)
    (tmp_path / "hosts.json").write_text(json.dumps([[f"127.0.0.1:{port}"], [f"127.0.0.1:{port + 1}"]]))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLX_RANK": "0", "MLX_HOSTFILE": str(tmp_path / "hosts.json"),
           "FSX_DIST_TIMEOUT": "2"}
    t = time.monotonic()
    p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    assert p.returncode != 0 and time.monotonic() - t < 30
    assert "rank 0: connecting to the other ranks did not finish within 2 s" in p.stderr


def test_ranks_with_different_models_stop_at_start(tmp_path):
    args = ["-p", "hi", "-n", "2", "--parallel", "tensor"]
    (c0, _, e0), (c1, _, e1) = finish(start_ranks([FSX + ["generate", TINY] + args,
                                                   FSX + ["generate", LLAMA] + args], tmp_path))
    assert c0 == 1 and c1 == 1
    assert "rank 1 loaded a different model" in e0 and e1 == ""  # rank 0 says it, once


def test_heads_that_do_not_divide_suggest_pipeline(tmp_path):
    # llama-tiny has 6 heads and 2 kv heads: 3 ranks cannot share the kv heads.
    from fs_mlx.errors import FsxError
    from fs_mlx.model.config import load_config
    from fs_mlx.model.parallel import tensor_config

    with pytest.raises(FsxError, match=r"num_key_value_heads \(2\) does not divide by 3 ranks; use --parallel pipeline"):
        tensor_config(load_config(Path(LLAMA)), 3)


def test_quantized_groups_that_do_not_split_are_refused():
    import mlx.core as mx

    from fs_mlx.errors import FsxError
    from fs_mlx.model.parallel import tensor_shard

    # down_proj with 96 inputs in group 32 = 3 groups: not two equal halves of whole groups.
    t = {"model.layers.0.mlp.down_proj.weight": mx.zeros((8, 96 * 4 // 32), mx.uint32),
         "model.layers.0.mlp.down_proj.scales": mx.zeros((8, 3)),
         "model.layers.0.mlp.down_proj.biases": mx.zeros((8, 3))}
    with pytest.raises(FsxError, match="quantized in 3 groups along its inputs, which do not split into 2"):
        tensor_shard(t, 0, 2, None)


# --- fsx launch ------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    ([], "give the fsx command to run after --"),
    (["--", "frobnicate"], "'frobnicate' is not an fsx command"),
    (["--", "launch", "generate"], "`fsx launch` does not split a model across ranks"),
    (["--", "serve", "M"], "`fsx serve` does not split a model across ranks"),
    (["-n", "0", "--", "generate", "M", "-p", "x"], "-n must be at least 1"),
    (["--hosts", "10.0.0.1,10.0.0.2", "--hostfile", "h.json", "--", "generate"], "--hosts or --hostfile, not both"),
    (["--hostfile", "missing.json", "--", "generate"], "--hostfile missing.json: no such file"),
    (["--backend", "smoke", "--", "generate"], "Invalid value for '--backend'"),
])
def test_launch_argument_errors(args, message):
    r = CliRunner().invoke(main, ["launch", *args])
    assert r.exit_code == 2 if "Invalid value" in message else r.exit_code == 1, r.output
    assert message in r.output and "Traceback" not in r.output


def test_launch_builds_the_mlx_launch_command(tmp_path):
    from fs_mlx.apps.launch import launcher_command

    cmd = launcher_command(2, None, None, None, 40000, None, ("fsx", "generate", "M", "-n", "5"))
    i = cmd.index("--")
    assert cmd[i:] == ["--", "-m", "fs_mlx", "generate", "M", "-n", "5"]  # fsx's -n stays fsx's
    assert cmd[cmd.index("--backend") + 1] == "ring" and cmd[cmd.index("-n") + 1] == "2"
    assert cmd[cmd.index("--hosts") + 1] == "127.0.0.1" and cmd[cmd.index("--starting-port") + 1] == "40000"
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text('{"backend": "jaccl", "hosts": []}')
    cmd = launcher_command(1, None, str(hostfile), None, None, None, ("bench",))
    assert "--backend" not in cmd and cmd[cmd.index("--hostfile") + 1] == str(hostfile)  # the file's own


def test_launch_runs_the_command_on_two_ranks():
    """fsx launch -> mlx.launch -> two ranks; rank 0 prints what one process prints (same seed)."""
    gen = ["generate", TINY, "-p", "hello", "--raw", "-n", "8", "--ignore-eos", "--seed", "3", "--temp", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FSX_DIST_TIMEOUT": "30"}
    one = subprocess.run(FSX + gen, env=env, cwd=ROOT, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    two = subprocess.run(FSX + ["launch", "-n", "2", "--starting-port", str(free_ports(2)), "--",
                                *gen, "--parallel", "pipeline"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    assert two.stdout == one.stdout and two.stdout.strip()  # printed once: rank 1 is silent
    assert two.stderr.count("loaded in") == 1


def test_launch_reports_a_failed_rank():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FSX_DIST_TIMEOUT": "30"}
    p = subprocess.run(FSX + ["launch", "-n", "2", "--starting-port", str(free_ports(2)), "--",
                              "generate", LLAMA, "-p", "x", "--parallel", "tensor", "--quantize", "4"],
                       env=env, cwd=ROOT, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    # llama-tiny's o_proj has 192 inputs: 96 per rank is not a whole number of 64-groups
    assert p.returncode == 1
    assert "do not split into 2 equal parts; use --parallel pipeline" in p.stderr
    assert "fsx launch: rank" in p.stderr and "Traceback" not in p.stderr
