"""RoPE scaling rules (fs_mlx/model/rope.py) against transformers' ROPE_INIT_FUNCTIONS.

golden/vectors/rope_scaling.json holds, for real-world parameter sets (Qwen3's
and Qwen2.5's YaRN 128k, DeepSeek-style mscale, Phi-3.5's and Phi-4-mini's
LongRoPE, dynamic NTK inside and beyond the trained context, linear, Llama 3.1),
the inverse frequencies and attention factor that transformers computes
(`python golden/make_golden.py --rope`). Both sides compute in float32 from
the same formulas; the pow/exp implementations differ by an ULP or two:
rtol 1e-6.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from fs_mlx.model.config import ModelConfig
from fs_mlx.model.rope import make_rope

CASES = json.loads((Path(__file__).resolve().parent.parent / "golden" / "vectors" / "rope_scaling.json")
                   .read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_scaling_matches_transformers(case):
    rp = case["rope_parameters"]
    dims = int(case["head_dim"] * rp.get("partial_rotary_factor", 1.0))
    rope = make_rope(dims, rp["rope_theta"], False, rp, case["max_position_embeddings"])
    # The length of the forward pass picks longrope's factors and dynamic's base;
    # transformers' init functions take it as seq_len (None: at model build).
    rope = rope.at(case["seq_len"] or 1)
    # theta = position * scale * inv_freq: linear scaling divides the positions, not inv_freq
    np.testing.assert_allclose(np.array(rope.inv_freq) * rope.scale, case["inv_freq"], rtol=1e-6, atol=0)
    assert rope.mscale == pytest.approx(case["attention_factor"], rel=1e-12)
    if rope.periods is not None:  # what mx.fast.rope receives
        np.testing.assert_allclose(1 / np.array(rope.periods), case["inv_freq"], rtol=1e-6)


def test_longrope_switches_at_the_original_context():
    case = next(c for c in CASES if c["name"] == "longrope-short")
    rp = case["rope_parameters"]
    rope = make_rope(case["head_dim"], rp["rope_theta"], False, rp, case["max_position_embeddings"])
    old = rp["original_max_position_embeddings"]
    assert rope.at(old) is rope.at(1) and rope.at(old + 1) is not rope.at(old)


def test_phi3_config_reads_longrope_as_transformers_does():
    """Phi-3's config.json: "su"/"yarn" are its old names for longrope, and the original
    context sits at the top level."""
    c = ModelConfig.from_dict({
        "model_type": "phi3", "hidden_size": 3072, "num_hidden_layers": 2, "intermediate_size": 8192,
        "num_attention_heads": 32, "vocab_size": 32064, "max_position_embeddings": 131072,
        "original_max_position_embeddings": 4096, "partial_rotary_factor": 0.75,
        "rope_scaling": {"type": "su", "short_factor": [1.0] * 36, "long_factor": [2.0] * 36}})
    assert c.rope_scaling["rope_type"] == "longrope"
    assert c.rope_scaling["original_max_position_embeddings"] == 4096
    assert c.rope_dims == 72
