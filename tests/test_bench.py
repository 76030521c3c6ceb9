"""fsx bench: the report's shape, the arithmetic behind it, and clear errors.

Nothing here asserts a speed: timings on a shared CI machine say nothing. The
checks are on what the numbers *are* (schema, definitions, roofline arithmetic,
ratios) and on the runs being what was asked (tokens, contexts, engines).
"""

import importlib.util
import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from click.testing import CliRunner

from fs_mlx.apps import bench, bench_engines
from fs_mlx.apps.cli import main
from fs_mlx.errors import FsxError

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden" / "checkpoints" / "qwen3-tiny"
ROW_KEYS = {"engine", "kernels", "dtype", "prompt_tps", "generation_tps", "ttft_s", "peak_memory_gb",
            "context", "prompt_tokens", "gen_tokens", "repeat", "spread", "load_s", "bytes_per_token",
            "weight_bytes_per_token", "kv_bytes_per_position", "achieved_gbs", "roofline_fraction",
            "ratio", "ratio_paired", "ratio_best", "runs"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    if GOLDEN.is_dir():
        return str(GOLDEN)
    from checkpoints import write_checkpoint

    return str(write_checkpoint(tmp_path_factory.mktemp("bench") / "tiny"))


def run_cli(*args):
    result = CliRunner().invoke(main, ["bench", *args])
    return result


def bench_json(*args) -> dict:
    r = run_cli(*args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


# --- the report -------------------------------------------------------------------

def test_json_report_schema(model_dir, tmp_path):
    out = tmp_path / "r.json"
    rep = bench_json(model_dir, "-p", "12", "-g", "5", "-r", "2", "--bandwidth", "100", "--out", str(out))
    assert json.loads(out.read_text()) == rep  # --out saves the same object
    assert not list(tmp_path.glob("*.partial-*"))  # written atomically: no leftovers
    assert {"results", "machine", "versions", "settings", "model_path"} <= set(rep)
    (row,) = rep["results"]
    assert ROW_KEYS <= set(row)
    assert row["engine"] == "fsx" and row["kernels"] == "mlx" and row["dtype"] == "float32"
    assert row["context"] == 12 and row["prompt_tokens"] == 12 and row["repeat"] == 2
    assert [r["generation_tokens"] for r in row["runs"]] == [5, 5]  # EOS ignored: all 5, each run
    for m in ("prompt_tps", "generation_tps", "ttft_s", "peak_memory_gb"):
        sp = row["spread"][m]
        assert sp["min"] <= sp["median"] <= sp["max"] and row[m] == sp["median"]
        assert row[m] > 0
    # prompt tok/s is the prompt over the time to the first token, run by run.
    for r in row["runs"]:
        assert r["prompt_tps"] == pytest.approx(12 / r["ttft_s"])
    assert row["ratio"] is None  # the reference row
    assert row["roofline_fraction"] == pytest.approx(row["achieved_gbs"] / 100)
    assert rep["machine"]["bandwidth_gbs"] == 100 and rep["machine"]["bandwidth_source"] == "--bandwidth"
    assert rep["versions"]["mlx"] == mx.__version__
    assert rep["settings"]["prompt_tokens"] == 12 and "definitions" in rep["settings"]


def test_table_output(model_dir):
    r = run_cli(model_dir, "-p", "8", "-g", "3", "-r", "1", "--no-warmup")
    assert r.exit_code == 0, r.output
    assert "decode tok/s" in r.stdout and "fsx" in r.stdout and "unknown" in r.stdout
    assert "[1/1] fsx" in r.stderr  # progress goes to stderr


def test_context_sweep_reuses_the_cache(model_dir):
    rep = bench_json(model_dir, "--contexts", "16,40", "-g", "4", "-r", "1", "--no-warmup")
    a, b = rep["results"]
    assert (a["context"], b["context"]) == (16, 40)
    # Depth 16 plus 4 decoded tokens are cached: only 40 - 20 tokens are prefilled next.
    assert a["prompt_tokens"] == 16 and b["prompt_tokens"] == 20
    assert b["bytes_per_token"] - a["bytes_per_token"] == pytest.approx(24 * a["kv_bytes_per_position"])


def test_random_prompt_is_fixed_by_the_seed():
    assert bench.prompt_ids(50, 1000, 0) == bench.prompt_ids(50, 1000, 0)
    assert bench.prompt_ids(50, 1000, 0) != bench.prompt_ids(50, 1000, 1)
    assert all(0 <= i < 7 for i in bench.prompt_ids(100, 7, 3))


def test_time_tokens_definitions():
    m = bench_engines.time_tokens(iter(range(6)), n_prompt=10)
    assert m["generation_tokens"] == 6 and m["prompt_tokens"] == 10
    assert m["prompt_tps"] == pytest.approx(10 / m["ttft_s"])
    with pytest.raises(FsxError, match="no tokens"):
        bench_engines.time_tokens(iter(()), n_prompt=3)


# --- roofline and ratios ------------------------------------------------------------

def qwen3_06b_param_bytes(itemsize: int) -> dict[str, int]:
    spec = importlib.util.spec_from_file_location("random_checkpoint", ROOT / "bench" / "random_checkpoint.py")
    rc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rc)
    shapes = rc.tensor_shapes(rc.SHAPES["qwen3-0.6b"])
    return {k: int(np.prod(s)) * itemsize for k, s in shapes.items()}


def test_roofline_arithmetic_qwen3_06b():
    params = qwen3_06b_param_bytes(4)
    assert sum(params.values()) == 596_049_920 * 4  # Qwen3-0.6B's parameter count, fp32
    # Tied: the 151936 x 1024 embedding is read in full as the output projection.
    w = bench.weight_bytes_per_token(params, tied=True, vocab_size=151936)
    assert w == 596_049_920 * 4
    # 28 layers x 8 KV heads x 128 x (K and V) x 4 bytes = 224 KiB per cached position.
    kv = bench.kv_bytes_per_position(28, 8, 128, 4)
    assert kv == 229_376
    bpt = bench.bytes_per_token(w, kv, depth=1000)
    assert bpt == 2_384_199_680 + 229_376_000
    # 10 tok/s on a 100 GB/s machine reads 26.1 GB/s of it.
    assert bench.roofline_fraction(bpt, 10.0, 100.0) == pytest.approx(0.261357568)
    assert bench.roofline_fraction(bpt, 10.0, None) is None


def test_untied_embedding_reads_one_row():
    params = {"model.embed_tokens.weight": 1000 * 64 * 4, "lm_head.weight": 1000 * 64 * 4,
              "model.norm.weight": 64 * 4}
    assert bench.weight_bytes_per_token(params, tied=False, vocab_size=1000) == 64 * 4 + 256000 + 256
    assert bench.weight_bytes_per_token({"model.embed_tokens.weight": 256000}, True, 1000) == 256000


@pytest.mark.parametrize("name,gbs", [("Apple M1", 68.25), ("Apple M2 Max", 400), ("Apple M3 Ultra", 819),
                                      ("Apple M4 Pro", 273), ("Apple M4", 120), ("Apple M5 Max", 614),
                                      ("AMD EPYC", None), ("Intel(R) Xeon(R)", None)])
def test_apple_bandwidth_table(name, gbs):
    assert bench.apple_bandwidth(name) == gbs


def test_bandwidth_unknown_off_apple():
    bw, source = bench.resolve_bandwidth(None)
    if not mx.metal.is_available():
        assert (bw, source) == (None, "unknown")
    assert bench.resolve_bandwidth(55.0) == (55.0, "--bandwidth")


def test_ratios_are_fsx_over_the_other_row():
    def row(engine, context, *runs):  # runs: (prompt_tps, generation_tps, peak_memory_gb)
        runs = [dict(zip(("prompt_tps", "generation_tps", "peak_memory_gb"), r)) for r in runs]
        medians = {m: float(np.median([r[m] for r in runs])) for m in runs[0]}
        return {"engine": engine, "context": context, "runs": runs, **medians}

    rows = [row("fsx", 64, (100, 30, 2.0), (120, 36, 2.0), (80, 10, 2.0)),
            row("mlx-lm", 64, (50, 20, 1.0), (60, 24, 0.5), (40, 10, 1.0)),
            row("fsx", 512, (80, 10, 2.5)),
            row("mlx-lm", 512, (80, 0, 2.5))]
    bench.add_ratios(rows)
    assert rows[0]["ratio"] is None and rows[2]["ratio"] is None and rows[0]["ratio_paired"] is None
    assert rows[1]["ratio"] == {"prompt_tps": 2.0, "generation_tps": 1.5, "peak_memory_gb": 2.0}
    # Paired: run by run 30/20, 36/24, 10/10 -> median 1.5; 2/1, 2/0.5, 2/1 -> 2.
    assert rows[1]["ratio_paired"] == {"prompt_tps": 2.0, "generation_tps": 1.5, "peak_memory_gb": 2.0}
    # Best: 120/60, 36/24, and the lowest peaks 2.0/0.5.
    assert rows[1]["ratio_best"] == {"prompt_tps": 2.0, "generation_tps": 1.5, "peak_memory_gb": 4.0}
    assert rows[3]["ratio"] == {"prompt_tps": 1.0, "generation_tps": None, "peak_memory_gb": 1.0}


def test_int_lists():
    assert bench.parse_int_list("512,2k, 8192", "--contexts") == [512, 2048, 8192]
    with pytest.raises(FsxError, match="--contexts"):
        bench.parse_int_list("512,lots", "--contexts")


# --- bad options --------------------------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["-r", "0"], "--repeat must be at least 1"),
    (["-g", "1"], "--gen-tokens must be at least 2"),
    (["-p", "0"], "--prompt-tokens must be at least 1"),
    (["--contexts", "512,abc"], "--contexts: expected comma-separated token counts"),
    (["--contexts", "1024,512"], "--contexts must increase"),
    (["--contexts", "64,4095"], "exceeds the model's 4096 positions"),
    (["--contexts", "32,34", "-g", "4"], "34 is not beyond the previous step's depth"),
    (["--compare", "vllm"], "--compare must be one of mlx-lm, mlx-lm:float32, llama.cpp, not 'vllm'"),
    (["--bandwidth", "-3"], "--bandwidth must be a positive number"),
    (["--kernels", "cuda"], "--kernels must be one of auto, metal, mlx"),
])
def test_bad_options_fail_with_one_clear_line(model_dir, args, message):
    r = run_cli(model_dir, "-r", "1", "--no-warmup", *args)
    assert r.exit_code == 1, r.output
    assert message in r.stderr and "Traceback" not in r.output


def test_several_kernels_each_in_its_own_process(model_dir):
    """--kernels mlx,msl: the second fsx runs in a sibling process, so both peaks are one model's."""
    rep = bench_json(model_dir, "-p", "6", "-g", "3", "-r", "1", "--no-warmup", "--kernels", "mlx,msl")
    a, b = rep["results"]
    assert (a["kernels"], b["kernels"]) == ("mlx", "msl") and a["engine"] == b["engine"] == "fsx"
    assert b["peak_memory_gb"] < 1.5 * a["peak_memory_gb"]  # not two models' weights
    assert b["ratio"]["generation_tps"] == pytest.approx(a["generation_tps"] / b["generation_tps"])


def test_metal_kernels_need_metal(model_dir):
    r = run_cli(model_dir, "--kernels", "mlx,metal", "-r", "1", "-p", "6", "-g", "3")
    if mx.metal.is_available():
        assert r.exit_code == 0, r.output
    else:
        assert r.exit_code == 1 and "needs an Apple GPU" in r.stderr


def test_missing_model():
    r = run_cli("/nonexistent/model-dir")
    assert r.exit_code == 1 and "not found" in r.stderr


# --- mlx-lm side by side ---------------------------------------------------------------

def test_compare_mlx_lm(model_dir):
    rep = bench_json(model_dir, "-p", "10", "-g", "4", "-r", "2", "--compare", "mlx-lm",
                     "--compare", "mlx-lm:float32")
    fsx, lm, lm32 = rep["results"]
    assert (fsx["engine"], lm["engine"], lm32["engine"]) == ("fsx", "mlx-lm", "mlx-lm")
    assert lm32["dtype"] == "float32" and lm["dtype"] == "float32"  # the checkpoint is fp32
    for row in (lm, lm32):
        assert [r["generation_tokens"] for r in row["runs"]] == [4, 4]  # EOS ignored there too
        assert row["ratio"]["generation_tps"] == pytest.approx(fsx["generation_tps"] / row["generation_tps"])
        # Same checkpoint, same dtype: the same bytes per token.
        assert row["bytes_per_token"] == fsx["bytes_per_token"]
    assert rep["versions"]["mlx-lm"]


def test_gguf_export_is_the_same_model_in_mlx_lm(tmp_path):
    """mlx-lm cannot read GGUF: bench writes it out as an MLX directory. Same logits."""
    import mlx_lm
    from checkpoints import random_model

    from gguf_files import Q, write_gguf  # test_gguf's GGUF writer (gguf-py)

    from fs_mlx.generation.forward import logits_for
    from fs_mlx.loader import load

    model = random_model(model_type="llama", hidden_size=128, intermediate_size=128, head_dim=32,
                         num_attention_heads=4, num_key_value_heads=2)
    path = write_gguf(tmp_path / "q.gguf", model, permute=True,
                      types={"attn_q": Q.Q8_0, "attn_k": Q.Q4_0, "attn_v": Q.Q4_1, "ffn_up": Q.Q4_1,
                             "ffn_gate": Q.Q4_0, "ffn_down": Q.Q8_0, "attn_output": Q.Q4_1,
                             "token_embd": Q.Q8_0})
    out = tmp_path / "mlx"
    bench_engines.export_gguf(path, out)
    theirs, _ = mlx_lm.load(str(out))
    theirs.set_dtype(mx.float32)
    ids = [5, 17, 33, 2, 90, 41, 7, 250]
    want = logits_for(load(path), ids)
    got = np.array(theirs(mx.array([ids]))[0])
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=0)
