"""Sampling: option validation, each filter's semantics, and the draw's distribution."""

import math

import mlx.core as mx
import numpy as np
import pytest

from fs_mlx.errors import FsxError
from fs_mlx.generation.sample import (SamplingParams, apply_min_p, apply_top_k, apply_top_p, checkpoint_defaults,
                           make_logits_processors, make_sampler, resolve_params)

PROBS = np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32)
LOGITS = mx.array(np.log(PROBS))[None]  # [1, 4]


def kept(logits):
    return np.isfinite(np.array(logits[0])).nonzero()[0].tolist()


@pytest.mark.parametrize("opts, message", [
    (dict(temperature=-0.1), "temperature must be >= 0"),
    (dict(temperature=float("nan")), "temperature must be >= 0"),
    (dict(top_p=0.0), "top-p must be in (0, 1]"),
    (dict(top_p=1.5), "top-p must be in (0, 1]"),
    (dict(top_k=-1), "top-k must be >= 0"),
    (dict(min_p=1.0), "min-p must be in [0, 1)"),
    (dict(repetition_penalty=0), "repetition penalty must be > 0"),
])
def test_invalid_options_are_rejected(opts, message):
    with pytest.raises(FsxError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):
        SamplingParams(**opts).validate()


def test_filters():
    assert kept(apply_top_k(LOGITS, 2)) == [0, 1]
    # top-p 0.8: 0.5 alone is below 0.8, 0.5+0.3 reaches it -> two tokens (transformers agrees)
    assert kept(apply_top_p(LOGITS, 0.8)) == [0, 1]
    assert kept(apply_top_p(LOGITS, 0.81)) == [0, 1, 2]
    assert kept(apply_top_p(LOGITS, 0.1)) == [0]  # the top token always survives
    # min-p 0.25: threshold 0.25 x 0.5 = 0.125 -> drops 0.05 only
    assert kept(apply_min_p(LOGITS, 0.25)) == [0, 1, 2]
    assert kept(apply_min_p(LOGITS, 0.7)) == [0]


def test_greedy_is_argmax():
    logits = mx.random.normal((3, 50), key=mx.random.key(1))
    assert make_sampler(SamplingParams())(logits).tolist() == np.argmax(np.array(logits), -1).tolist()


def test_draws_follow_the_distribution():
    mx.random.seed(0)
    n = 20000
    draws = np.array(make_sampler(SamplingParams(temperature=1.0))(mx.repeat(LOGITS, n, axis=0)))
    freq = np.bincount(draws, minlength=4) / n
    # Binomial standard error at n=20000 is at most 0.0035; 5 sigma keeps this test from flaking.
    np.testing.assert_allclose(freq, PROBS, atol=0.018)


def test_temperature_sharpens():
    mx.random.seed(0)
    draws = np.array(make_sampler(SamplingParams(temperature=0.25))(mx.repeat(LOGITS, 5000, axis=0)))
    p = PROBS ** 4 / (PROBS ** 4).sum()  # softmax(log p / 0.25) = p^4, normalised
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 5000, p, atol=0.03)


def test_seed_reproduces():
    params = SamplingParams(temperature=1.0, seed=7)
    logits = mx.repeat(LOGITS, 64, axis=0)
    mx.random.seed(7)
    a = make_sampler(params)(logits).tolist()
    mx.random.seed(7)
    assert make_sampler(params)(logits).tolist() == a


def test_repetition_penalty_like_ctrl():
    logits = mx.array([[2.0, -1.0, 0.5, 3.0]])
    (proc,) = make_logits_processors(SamplingParams(repetition_penalty=2.0))
    out = proc(mx.array([0, 1, 1]), logits)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]  # positive halved, negative doubled


def test_presence_penalty_once_per_token():
    (proc,) = make_logits_processors(SamplingParams(presence_penalty=0.5))
    out = proc(mx.array([2, 2, 2, 0]), mx.zeros((1, 4)))
    assert out.tolist() == [[-0.5, 0.0, -0.5, 0.0]]


def test_checkpoint_defaults_and_precedence(tmp_path):
    (tmp_path / "generation_config.json").write_text(
        '{"do_sample": true, "temperature": 0.6, "top_p": 0.95, "top_k": 20}')
    defaults = checkpoint_defaults(tmp_path)
    params, said = resolve_params({"temperature": 0.9, "top_k": None}, defaults)
    assert (params.temperature, params.top_k, params.top_p) == (0.9, 20, 0.95)
    assert "from generation_config.json: top_k, top_p" in said
    (tmp_path / "generation_config.json").write_text('{"do_sample": false, "temperature": 0.6}')
    assert resolve_params({}, checkpoint_defaults(tmp_path))[0].temperature == 0
    assert math.isclose(resolve_params({}, {})[0].temperature, 0)  # no file: greedy
