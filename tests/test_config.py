import json

import pytest

from fs_mlx.model.config import ModelConfig, load_config
from fs_mlx.errors import FsxError

QWEN3_0_6B = {  # the real Qwen3-0.6B config.json, abridged to what matters
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 1024,
    "num_hidden_layers": 28, "intermediate_size": 3072, "num_attention_heads": 16,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "rope_theta": 1000000,
    "rms_norm_eps": 1e-06, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "sliding_window": None, "use_sliding_window": False,
}


def test_qwen3_fields_and_unknown_keys():
    c = ModelConfig.from_dict(QWEN3_0_6B)
    assert (c.head_dim, c.num_key_value_heads, c.rope_theta) == (128, 8, 1e6)
    assert c.qk_norm and c.tie_word_embeddings
    assert c.extra["architectures"] == ["Qwen3ForCausalLM"]  # kept aside, not an error
    assert c.use_sliding_window is False and set(c.layer_types) == {"full_attention"}


def test_transformers5_rope_parameters():
    d = {k: v for k, v in QWEN3_0_6B.items() if k != "rope_theta"}
    d["rope_parameters"] = {"rope_theta": 1000000.0, "rope_type": "default"}
    assert ModelConfig.from_dict(d).rope_theta == 1e6


def test_defaults_for_multi_head_llama():
    c = ModelConfig.from_dict({**QWEN3_0_6B, "model_type": "llama", "num_key_value_heads": None,
                               "head_dim": None})
    assert c.num_key_value_heads == 16 and c.head_dim == 64 and not c.qk_norm


def test_unknown_architecture_lists_supported():
    with pytest.raises(FsxError, match=r"model_type='mamba'.*gemma3_text, llama, mistral, phi3, qwen2, qwen3, qwen3_moe"):
        ModelConfig.from_dict({**QWEN3_0_6B, "model_type": "mamba"})


@pytest.mark.parametrize("field", ["hidden_size", "num_hidden_layers", "vocab_size", "model_type"])
def test_missing_required_field_is_named(tmp_path, field):
    d = {k: v for k, v in QWEN3_0_6B.items() if k != field}
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(FsxError, match=f"missing required field.*{field}"):
        load_config(tmp_path)


def test_bad_gqa_ratio():
    with pytest.raises(FsxError, match="not a multiple"):
        ModelConfig.from_dict({**QWEN3_0_6B, "num_key_value_heads": 3})


def test_config_not_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(FsxError, match="not valid JSON"):
        load_config(tmp_path)


GEMMA3_T5 = {  # transformers 5's save_pretrained spelling of a Gemma 3 config
    "model_type": "gemma3_text", "hidden_size": 64, "num_hidden_layers": 3, "intermediate_size": 96,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 100,
    "layer_types": ["sliding_attention", "full_attention", "sliding_attention"], "sliding_window": 8,
    "query_pre_attn_scalar": 24, "hidden_activation": "gelu_pytorch_tanh",
    "rope_parameters": {"full_attention": {"factor": 2.0, "rope_theta": 1000000.0, "rope_type": "linear"},
                        "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}},
}


def test_gemma3_both_spellings():
    """The hub's Gemma 3 configs (rope_theta, rope_local_base_freq, rope_scaling for the global
    layers, sliding_window_pattern) and transformers 5's (rope_parameters per layer type,
    layer_types) give the same model."""
    new = ModelConfig.from_dict(GEMMA3_T5)
    old = {k: v for k, v in GEMMA3_T5.items() if k not in ("rope_parameters", "layer_types")}
    old = ModelConfig.from_dict({**old, "rope_theta": 1e6, "rope_local_base_freq": 1e4,
                                 "rope_scaling": {"rope_type": "linear", "factor": 2.0},
                                 "sliding_window_pattern": 2})
    for c in (new, old):
        assert c.layer_types == ["sliding_attention", "full_attention", "sliding_attention"]
        assert (c.rope_theta, c.rope_local_base_freq, c.rope_scaling["factor"]) == (1e6, 1e4, 2.0)
        assert c.norm_plus_one and c.embed_scale and c.sandwich_norms and c.qk_norm
        assert c.activation == "gelu_pytorch_tanh" and c.tie_word_embeddings


def test_family_defaults_follow_transformers():
    base = {k: QWEN3_0_6B[k] for k in ("hidden_size", "num_hidden_layers", "intermediate_size",
                                       "num_attention_heads", "vocab_size")}
    # Mistral without the key: transformers' default window (4096); an explicit null: none
    assert ModelConfig.from_dict({**base, "model_type": "mistral"}).sliding_window == 4096
    c = ModelConfig.from_dict({**base, "model_type": "mistral", "sliding_window": None})
    assert c.sliding_window is None and set(c.layer_types) == {"full_attention"}
    # Qwen2: the window applies only with use_sliding_window, from max_window_layers on
    c = ModelConfig.from_dict({**base, "model_type": "qwen2", "num_hidden_layers": 4, "sliding_window": 16,
                               "use_sliding_window": True, "max_window_layers": 2})
    assert c.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2 and c.qkv_bias
    # Qwen3-MoE saved by transformers 5 says num_local_experts
    c = ModelConfig.from_dict({**base, "model_type": "qwen3_moe", "num_local_experts": 8,
                               "num_experts_per_tok": 2, "moe_intermediate_size": 32, "mlp_only_layers": [3]})
    assert c.num_experts == 8 and [c.is_moe_layer(i) for i in range(4)] == [True, True, True, False]


@pytest.mark.parametrize("change, message", [
    ({"model_type": "gemma3_text", "attn_logit_softcapping": 50.0}, "attn_logit_softcapping"),
    ({"model_type": "llama", "hidden_act": "relu"}, "unsupported hidden_act 'relu'"),
    ({"model_type": "qwen3_moe", "num_experts": 4, "num_experts_per_tok": 5, "moe_intermediate_size": 8},
     "num_experts_per_tok"),
    ({"model_type": "mistral", "layer_types": ["sliding_attention"]}, "layer_types must list 28"),
])
def test_bad_family_fields(change, message):
    with pytest.raises(FsxError, match=message):
        ModelConfig.from_dict({**QWEN3_0_6B, **change})
