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
    assert c.extra["use_sliding_window"] is False  # kept aside, not an error


def test_transformers5_rope_parameters():
    d = {k: v for k, v in QWEN3_0_6B.items() if k != "rope_theta"}
    d["rope_parameters"] = {"rope_theta": 1000000.0, "rope_type": "default"}
    assert ModelConfig.from_dict(d).rope_theta == 1e6


def test_defaults_for_multi_head_llama():
    c = ModelConfig.from_dict({**QWEN3_0_6B, "model_type": "llama", "num_key_value_heads": None,
                               "head_dim": None})
    assert c.num_key_value_heads == 16 and c.head_dim == 64 and not c.qk_norm


def test_unknown_architecture_lists_supported():
    with pytest.raises(FsxError, match=r"model_type='mamba'.*llama, qwen3"):
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
