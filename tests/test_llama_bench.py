"""`fsx bench --compare llama.cpp`: how llama-bench is run and how its numbers are read.

llama.cpp itself takes ~10 min to build, so these tests run a stand-in
`llama-bench` (a script that records its arguments and answers as llama-bench's
`-o jsonl` does): they check the commands (the same prompt, depth, tokens and
threads as fsx's run), the mapping onto fsx's definitions, and the errors.
When the real binary is built (bench/build_llama_cpp.sh), `fsx bench MODEL.gguf
--compare llama.cpp` runs it the same way.
"""

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fs_mlx.apps.cli import main
from fs_mlx.apps.llama_bench import LlamaBenchEngine, find_llama_bench
from fs_mlx.errors import FsxError

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden" / "checkpoints" / "qwen3-tiny"

# Answers like llama-bench 0.3.36: one JSON object per test; prompt at 500 tok/s, decode at 50.
FAKE = """#!{python}
import json, sys
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
opt = dict(zip(args[::2], args[1::2]))
p, n = int(opt["-p"]), int(opt["-n"])
tokens, rate = (p, 500.0) if p else (n, 50.0)
print("some log line")
print(json.dumps({{"model_type": "llama 135M Q4_1", "model_size": 123456, "n_prompt": p, "n_gen": n,
                   "n_depth": int(opt["-d"]), "n_threads": int(opt["-t"]),
                   "avg_ns": int(tokens / rate * 1e9), "avg_ts": rate}}))
"""

LIKE = {"vocab_size": 100, "layers": 2, "kv_heads": 1, "head_dim": 8}


@pytest.fixture
def fake_llama_bench(tmp_path, monkeypatch):
    log = tmp_path / "calls.jsonl"
    exe = tmp_path / "llama-bench"
    exe.write_text(FAKE.format(python=sys.executable, log=str(log)))
    exe.chmod(0o755)
    monkeypatch.setenv("FSX_LLAMA_BENCH", str(exe))
    return lambda: [json.loads(line) for line in log.read_text().splitlines()]


def test_runs_prompt_then_decode_at_that_depth(fake_llama_bench, tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    engine = LlamaBenchEngine(gguf, threads=3, like=LIKE)
    m = engine.run(list(range(64)), 16, fresh=True)
    assert m["prompt_tps"] == 500.0 and m["generation_tps"] == 50.0
    assert m["ttft_s"] == pytest.approx(64 / 500) and m["depth"] == 64
    assert m["peak_memory_gb"] > 0
    calls = fake_llama_bench()[1:]  # after the load check
    opts = [dict(zip(c[::2], c[1::2])) for c in calls]
    assert [(o["-p"], o["-n"], o["-d"], o["-t"]) for o in opts] == [("64", "0", "0", "3"),
                                                                    ("0", "16", "64", "3")]
    assert all(o["-m"] == str(gguf) and o["-o"] == "jsonl" for o in opts)
    m = engine.run(list(range(32)), 16, fresh=False)  # a sweep continues from 64 + 16
    assert m["depth"] == 64 + 16 + 32
    info = engine.info()
    assert info["dtype"] == "Q4_1" and info["param_bytes"] == {"gguf tensors": 123456}


def test_needs_a_gguf_and_a_binary(tmp_path, monkeypatch, fake_llama_bench):
    with pytest.raises(FsxError, match="needs a .gguf MODEL"):
        LlamaBenchEngine(tmp_path, threads=2, like=LIKE)
    monkeypatch.setenv("FSX_LLAMA_BENCH", str(tmp_path / "nothing"))
    with pytest.raises(FsxError, match="not an executable file"):
        find_llama_bench()
    monkeypatch.delenv("FSX_LLAMA_BENCH")
    monkeypatch.setenv("FSX_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    with pytest.raises(FsxError, match="build_llama_cpp.sh"):
        find_llama_bench()


def test_bench_compare_llama_cpp_on_a_directory_model_is_one_clear_line(fake_llama_bench):
    result = CliRunner().invoke(main, ["bench", str(GOLDEN), "-p", "4", "-g", "2", "-r", "1",
                                       "--compare", "llama.cpp"])
    assert result.exit_code != 0
    assert "needs a .gguf MODEL" in result.output and "Traceback" not in result.output


def test_bench_table_has_the_llama_cpp_row(fake_llama_bench, tmp_path):
    """The whole `fsx bench X.gguf --compare llama.cpp`, its llama-bench stood in for."""
    from checkpoints import random_model
    from gguf_files import Q, write_gguf

    model = random_model(model_type="llama", hidden_size=64, intermediate_size=64, head_dim=16,
                         num_attention_heads=4, num_key_value_heads=2)
    path = write_gguf(tmp_path / "q.gguf", model, permute=True, types={"ffn_up": Q.Q4_1, "token_embd": Q.Q8_0})
    result = CliRunner().invoke(main, ["bench", str(path), "-p", "6", "-g", "3", "-r", "2",
                                       "--compare", "llama.cpp", "--json"])
    assert result.exit_code == 0, result.output
    fsx, llama = json.loads(result.stdout)["results"]
    assert (llama["engine"], llama["kernels"], llama["dtype"]) == ("llama.cpp", "ggml", "Q4_1")
    assert llama["generation_tps"] == 50.0 and llama["prompt_tps"] == 500.0
    assert llama["ratio"]["generation_tps"] == pytest.approx(fsx["generation_tps"] / 50.0)
    table = CliRunner().invoke(main, ["bench", str(path), "-p", "6", "-g", "3", "-r", "1",
                                      "--compare", "llama.cpp"])
    assert table.exit_code == 0, table.output
    assert "\nllama.cpp ggml    Q4_1 " in table.stdout
    assert " / llama.cpp (Q4_1) at context 6: decode " in table.stdout
