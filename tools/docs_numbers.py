"""Figures the book quotes, computed from the engine and the repository: one subcommand each.

Each prints the figure the way the text writes it, one per line, so that the marker next to the
text (`<!-- check: python tools/docs_numbers.py NAME -->`) can compare them (tools/docs_checks.py).

    python tools/docs_numbers.py --list
    python tools/docs_numbers.py golden-bytes
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FACTS = {}


def fact(fn):
    FACTS[fn.__name__.replace("_", "-")] = fn
    return fn


def _inspect(model: str) -> dict:
    """`fsx inspect MODEL --json`, the way a reader would run it."""
    from click.testing import CliRunner

    try:
        from fs_mlx.apps.cli import main
    except ImportError:
        from fs_mlx.cli import main
    result = CliRunner().invoke(main, ["inspect", model, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@fact
def golden_bytes():
    """Size of the golden qwen3-tiny checkpoint's weights file."""
    print(f"{(ROOT / 'golden/checkpoints/qwen3-tiny/model.safetensors').stat().st_size:,}")


@fact
def default_model_shapes():
    """The notation table's column for the default model, as table cells."""
    c = _inspect("smollm2")["config"]
    hq, hkv = c["num_attention_heads"], c["num_key_value_heads"]
    d = c.get("head_dim") or c["hidden_size"] // hq
    for cell in (1, c["hidden_size"], f"{hq}, {hkv}", d, hq // hkv, c["num_hidden_layers"], c["vocab_size"]):
        print(f"| {cell} |")


@fact
def default_model_hidden():
    """The default model's hidden size (the residual stream's width)."""
    print(_inspect("smollm2")["config"]["hidden_size"])


def count_ops_per_layer(quantize=None, fused=True) -> dict[str, float]:
    """Backend calls for one decoded token, per layer: a CountingBackend on the golden qwen3-tiny."""
    import mlx.core as mx

    import fs_mlx.model.fuse as fuse
    from fs_mlx import load
    from fs_mlx.model.backends import CountingBackend, MLXBackend

    real_can_stack = fuse.can_stack
    if not fused:
        # "Nothing fused": q, k, v (and gate, up) run one by one. That is the engine's own path for
        # checkpoints whose parts cannot share one matrix (fuse.Concat), taken here for every layer.
        fuse.can_stack = lambda layers: False
    try:
        lm = load(ROOT / "golden/checkpoints/qwen3-tiny", kernels=CountingBackend(MLXBackend()), quantize=quantize)
    finally:
        fuse.can_stack = real_can_stack
    calls = lm.model.ops.calls
    calls.clear()
    mx.eval(lm.model(mx.array([[5]])))
    counts = dict(calls)
    counts["rms_norm"] -= 1                        # the final norm
    head = next(k for k in ("quantized_matmul", "linear") if counts.get(k))
    counts[head] -= 1                              # the tied head
    n = len(lm.model.layers)
    return {k: v / n for k, v in counts.items() if v}


def _fmt(n: float) -> str:
    return f"{n:g}"


@fact
def launches_per_layer():
    """Backend calls per decoded layer: nothing fused, fused dense, fused 4-bit (bold, as quoted)."""
    for quantize, fused in ((None, False), (None, True), ((4, 32), True)):
        print(f"**{_fmt(sum(count_ops_per_layer(quantize, fused).values()))}**")


@fact
def launches_today():
    """kernels.md's two rows for today's block: the ops per decoded layer, dense and 4-bit."""
    d = count_ops_per_layer(None)
    print(f"{_fmt(d['rms_norm'])} rms_norm, {_fmt(d['add_rms_norm'])} add_rms_norm, {_fmt(d['qk_norm_rope'])}, "
          f"{_fmt(d['attention'])}, {_fmt(d['linear'])} matmuls, {_fmt(d['swiglu'])} swiglu = **{_fmt(sum(d.values()))}**")
    q = count_ops_per_layer((4, 32))
    print(f"{_fmt(q['rms_norm'])}, {_fmt(q['add_rms_norm'])}, {_fmt(q['qk_norm_rope'])}, {_fmt(q['attention'])}, "
          f"{_fmt(q['quantized_matmul'])} matmuls, {_fmt(q['quantized_swiglu'])} quantized_swiglu = **{_fmt(sum(q.values()))}**")


def golden_errors() -> dict[str, dict[str, float]]:
    """Worst |fsx − transformers| per stage on the three golden checkpoints (all their prompts)."""
    import numpy as np

    from fs_mlx import load
    from fs_mlx.generation.forward import logits_for

    out = {}
    for name in ("qwen3-tiny", "llama-tiny", "llama-mha"):
        lm = load(ROOT / "golden" / "checkpoints" / name)
        meta = json.loads((ROOT / "golden" / "vectors" / f"{name}.json").read_text())
        ref = np.load(ROOT / "golden" / "vectors" / f"{name}.npz")
        worst = {"block0": 0.0, "final_norm": 0.0, "logits": 0.0, "argmax": True}
        for i in range(len(meta["prompts"])):
            trace: dict = {}
            logits = np.asarray(logits_for(lm, ref[f"p{i}_ids"].tolist(), trace))
            for stage in ("block0", "final_norm"):
                worst[stage] = max(worst[stage], float(np.abs(np.asarray(trace[stage]) - ref[f"p{i}_{stage}"]).max()))
            worst["logits"] = max(worst["logits"], float(np.abs(logits - ref[f"p{i}_logits"]).max()))
            worst["argmax"] &= bool((logits.argmax(-1) == ref[f"p{i}_logits"].argmax(-1)).all())
        out[name] = worst
    return out


@fact
def golden_bound():
    """The forward-pass chapter's claim: every golden logit within the 1e-3 bar, the argmax equal."""
    errors = golden_errors()
    # The exact values move with the BLAS (summation order); the bound and the argmax do not.
    print(", ".join(name for name in errors) + ": every logit within 1e-3"
          if all(w["logits"] < 1e-3 for w in errors.values()) else
          "; ".join(f"{n}: {w['logits']:.1e}" for n, w in errors.items()))
    print("the same argmax at every position" if all(w["argmax"] for w in errors.values()) else "argmax differs")


@fact
def golden_errors_table():
    """The forward-pass chapter's table, measured on this machine (not checked: it moves with the BLAS)."""
    for name, w in golden_errors().items():
        print(f"| {name} | {w['block0']:.1e} | {w['final_norm']:.1e} | {w['logits']:.1e} |")


@fact
def default_model_megabytes():
    """The default model's GGUF file size, in MB as the GGUF chapter quotes it."""
    print(f"{_inspect('smollm2')['memory']['weights_on_disk_bytes'] / 1e6:.0f} MB")


@fact
def default_model_qk_rows():
    """Rows of q and k per layer that GGUF's Q/K un-permutation reorders, on the default model."""
    c = _inspect("smollm2")["config"]
    d = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    print(f"{c['num_attention_heads'] * d} + {c['num_key_value_heads'] * d} rows")


JOURNEY_PROMPT = "The capital of France is"
_journey: dict = {}


def _journey_run() -> dict:
    """One prefill of the journey's prompt on the default model, with a KV cache (once per process)."""
    if _journey:
        return _journey
    import mlx.core as mx

    try:
        from fs_mlx import load
        from fs_mlx.generation.cache import make_cache
    except ImportError:
        from fs_mlx.loading import load
        from fs_mlx.cache import make_cache
    lm = load("smollm2")
    ids = lm.tokenizer.encode(JOURNEY_PROMPT)
    tokens = mx.array([ids])                               # [1, L]
    cache = make_cache(lm.model)
    logits = lm.model(tokens, cache=cache)                 # [1, L, vocab]
    probs = mx.softmax(logits[0, -1].astype(mx.float32))
    nxt = int(mx.argmax(probs).item())
    k = cache[0].keys[..., : cache[0].offset, :]           # [1, Hkv, L, D]
    _journey.update(lm=lm, ids=ids, tokens=tokens.shape, logits=logits.shape,
                    kv=k.shape, next=nxt, p=float(probs[nxt].item()),
                    text=lm.tokenizer.decode([nxt]), layers=len(cache))
    return _journey


def _shape(s) -> str:
    return "[" + ", ".join(str(int(n)) for n in s) + "]"


@fact
def journey_ids():
    """The map's journey: the prompt's ids and their shape."""
    j = _journey_run()
    print(", ".join(map(str, j["ids"])))
    print(_shape(j["tokens"]))


@fact
def journey_embedding():
    """The map's journey: the embedding table and the embedded prompt."""
    j = _journey_run()
    c = j["lm"].config
    print(_shape((c.vocab_size, c.hidden_size)))
    print(_shape((*j["tokens"], c.hidden_size)))


@fact
def journey_blocks():
    """The map's journey: the number of blocks and the residual stream's shape."""
    j = _journey_run()
    print(f"{j['layers']} blocks")
    print(_shape((*j["tokens"], j["lm"].config.hidden_size)))


@fact
def journey_kv():
    """The map's journey: the keys one block stores for the prompt."""
    print(_shape(_journey_run()["kv"]))


@fact
def journey_logits():
    """The map's journey: the logits' shape."""
    print(_shape(_journey_run()["logits"]))


@fact
def journey_next():
    """The map's journey: the greedy next token, its text and probability (2 digits)."""
    j = _journey_run()
    print(j["next"])
    print(json.dumps(j["text"]))
    print(f"{j['p']:.2f}")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("--list", "-h", "--help"):
        for name, fn in FACTS.items():
            print(f"{name:28} {fn.__doc__.strip().splitlines()[0]}")
        return 0
    if argv[0] not in FACTS:
        print(f"docs_numbers.py: no figure named {argv[0]!r}; --list shows them", file=sys.stderr)
        return 2
    FACTS[argv[0]](*argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
