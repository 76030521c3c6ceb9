"""Draws the book's figures (docs/figures/*.svg) from the engine itself.

    python tools/docs_figures.py               # all of them (~1 min on a laptop CPU)
    python tools/docs_figures.py roofline kv   # some (names: see FIGURES at the bottom)

Every number in a picture is computed here, from the code the book describes: the default model
(SmolLM2-135M-Instruct Q4_1, fetched once by `fsx run`), the golden qwen3-tiny checkpoint, the
kernels' own launch-geometry functions and the benchmark results saved in bench/results/.
Nothing is typed in by hand. Needs the `docs` extra (matplotlib). Commit the SVGs it writes.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "figures"
for p in (ROOT, ROOT / "tools"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

plt.rcParams.update({
    "svg.fonttype": "none",          # text stays text: small files, searchable, the reader's font
    "svg.hashsalt": "fs-mlx",        # stable ids: regenerating an unchanged figure changes no bytes
    "font.size": 10, "axes.spines.top": False, "axes.spines.right": False,
    "figure.facecolor": "white",     # readable on the site's dark theme too
})
ACCENT, SECOND, GREY = "#3f51b5", "#e65100", "#9e9e9e"


def save(fig, name: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.svg"
    fig.savefig(path, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": "tools/docs_figures.py"})
    if os.environ.get("FSX_FIGURES_PREVIEW"):     # a PNG copy to look at, e.g. /tmp/figures
        fig.savefig(Path(os.environ["FSX_FIGURES_PREVIEW"]) / f"{name}.png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    print(f"{path.relative_to(ROOT)}  {path.stat().st_size / 1024:.0f} KB")


# ---------------------------------------------------------------------------------------------
# Attention of a real prompt on the default model
# ---------------------------------------------------------------------------------------------

PROMPT = "The cat sat on the mat because it was tired, so the cat slept."


class RecordingBackend:
    """MLX's ops, plus a copy of every attention call's probabilities (softmax(q kᵀ·scale + mask))."""

    def __init__(self):
        from fs_mlx.model.backends import MLXBackend

        self.inner, self.name, self.probs = MLXBackend(), "mlx+record", []

    def __getattr__(self, op):
        return getattr(self.inner, op)

    def attention(self, q, k, v, *, scale, mask, window=None):
        import mlx.core as mx

        B, Hq, L, D = q.shape
        Hkv, S = k.shape[1], k.shape[2]
        kk = mx.repeat(k, Hq // Hkv, axis=1)                          # [B, Hq, S, D]: GQA, one copy per query head
        scores = (q.astype(mx.float32) @ kk.astype(mx.float32).transpose(0, 1, 3, 2)) * scale  # [B, Hq, L, S]
        i = mx.arange(L)[:, None] + (S - L)                           # absolute position of each query
        scores = mx.where(mx.arange(S)[None, :] <= i, scores, -mx.inf)
        self.probs.append(np.array(mx.softmax(scores, axis=-1)[0]))   # [Hq, L, S]
        return self.inner.attention(q, k, v, scale=scale, mask=mask, window=window)


def fig_attention():
    import mlx.core as mx

    from fs_mlx import load
    from fs_mlx.generation.cache import make_cache

    rec = RecordingBackend()
    lm = load("smollm2", kernels=rec)
    ids = lm.tokenizer.encode(PROMPT)
    labels = [lm.tokenizer.decode([i]).replace("\n", "\\n") for i in ids]
    n_layers = len(lm.model.layers)
    # Whole prompt at once, then the same prompt in two chunks (the second sees the first's cache).
    mx.eval(lm.model(mx.array([ids])))
    whole = rec.probs[:n_layers]
    rec.probs.clear()
    cache, cut = make_cache(lm.model), len(ids) // 2
    mx.eval(lm.model(mx.array([ids[:cut]]), cache=cache))
    mx.eval(lm.model(mx.array([ids[cut:]]), cache=cache))
    chunk2 = rec.probs[n_layers:2 * n_layers]
    G = lm.config.num_attention_heads // lm.config.num_key_value_heads

    picks = [(0, 0), (n_layers // 2, 0), (n_layers - 1, 1)]
    fig, axes = plt.subplots(2, 2, figsize=(11, 10.5))
    axes = axes.reshape(-1)
    for ax, (layer, head) in zip(axes[:3], picks):
        ax.imshow(whole[layer][head], cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"layer {layer}, head {head} (KV head {head // G})")
        ax.set_xticks(range(len(ids)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(ids)), labels, fontsize=7)
        ax.set_xlabel("key (attended to)")
    axes[0].set_ylabel("query (attending)")
    layer, head = picks[1]
    p = chunk2[layer][head]                                             # [L2, S]
    ax = axes[3]
    ax.imshow(p, cmap="Oranges", vmin=0, vmax=1, aspect="auto")
    ax.axvline(cut - 0.5, color=GREY, lw=1, ls="--")
    ax.set_title(f"second chunk: L={p.shape[0]} queries, S={p.shape[1]} keys")
    ax.set_xticks(range(len(ids)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(p.shape[0]), labels[cut:], fontsize=7)
    ax.text(cut / 2 - 0.5, p.shape[0] - 0.8, "keys from the cache", ha="center", fontsize=8, color="black")
    ax.text(cut + (len(ids) - cut) / 2 - 0.5, p.shape[0] - 0.8, "this chunk's keys", ha="center", fontsize=8)
    fig.suptitle(f'Attention probabilities, SmolLM2-135M on "{PROMPT}" ({len(ids)} tokens).\n'
                 f"Causal: nothing above the diagonal; the second chunk's band is offset by S−L = {cut}.")
    fig.tight_layout()
    save(fig, "attention")


# ---------------------------------------------------------------------------------------------
# The KV cache growing
# ---------------------------------------------------------------------------------------------

def _smollm2_config():
    from fs_mlx import load

    return load("smollm2").config


def fig_kv():
    import mlx.core as mx

    from fs_mlx.generation.cache import KVCache

    c = _smollm2_config()
    Hkv, D, n_layers = c.num_key_value_heads, c.head_dim, c.num_hidden_layers
    cache = KVCache()
    prompt, total = 300, 900
    steps, offsets, capacities = [], [], []

    def record(step):
        steps.append(step)
        offsets.append(cache.offset)
        capacities.append(cache.keys.shape[2])

    kv = mx.zeros((1, Hkv, prompt, D))
    cache.update_and_fetch(kv, kv)                       # prefill: the prompt's keys in one write
    record(0)
    one = mx.zeros((1, Hkv, 1, D))
    for t in range(1, total - prompt + 1):               # decode: one position per step
        cache.update_and_fetch(one, one)
        record(t)
    per_position = 2 * n_layers * Hkv * D * 4            # K and V, every layer, float32
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.step(steps, capacities, where="post", color=SECOND, label="capacity (allocated positions)")
    ax.plot(steps, offsets, color=ACCENT, label="offset (positions stored)")
    ax.set_xlabel(f"decode step (after a {prompt}-token prefill)")
    ax.set_ylabel("positions")
    ax.legend(loc="upper left", frameon=False)
    sec = ax.secondary_yaxis("right", functions=(lambda p: p * per_position / 2**20, lambda m: m * 2**20 / per_position))
    sec.set_ylabel("MiB, all layers (fp32)")
    step = np.diff(capacities)
    grow = [s for s, d in zip(steps[1:], step) if d > 0]
    for g in grow:
        ax.annotate("grows", (g, capacities[steps.index(g)]), textcoords="offset points", xytext=(-30, 8), fontsize=8,
                    color=SECOND)
    ax.set_title(f"KVCache on SmolLM2-135M: [1, {Hkv}, capacity, {D}] per layer, {per_position:,} bytes per position")
    save(fig, "kv-cache")


# ---------------------------------------------------------------------------------------------
# Decode speed against the memory-bandwidth roofline, from bench/results/
# ---------------------------------------------------------------------------------------------

CHIPS = {"Apple M1 (68 GB/s)": 68, "Apple M4 Max (546 GB/s)": 546}   # docs/performance.md's range


def fig_roofline():
    points = []
    for path in sorted(glob.glob(str(ROOT / "bench/results/*/*.json"))):
        report = json.loads(Path(path).read_text())
        for r in report.get("results", []):
            if r.get("generation_tps") and r.get("bytes_per_token") and r.get("context", 0) <= 512:
                points.append((Path(path).stem, r["engine"], r["bytes_per_token"], r["generation_tps"],
                               report.get("machine", {}).get("cpu", "?")))
    fig, ax = plt.subplots(figsize=(8, 4.8))
    x = np.logspace(5.5, 9.5, 50)
    for (name, gbs), ls in zip(CHIPS.items(), ["--", "-"]):
        ax.plot(x, gbs * 1e9 / x, ls=ls, color=GREY, lw=1)
        ax.text(x[-1], gbs * 1e9 / x[-1] * 1.3, name, color=GREY, fontsize=8, ha="right")
    seen = set()
    for model, engine, nbytes, tps, cpu in points:
        style = ({"marker": "o", "color": ACCENT, "s": 26, "zorder": 4} if engine == "fsx" else
                 {"marker": "s", "facecolors": "none", "edgecolors": SECOND, "s": 60, "zorder": 3})
        ax.scatter(nbytes, tps, **style,
                   label=None if engine in seen else f"{engine}, measured ({cpu}, 2 cores)")
        seen.add(engine)
        if engine == "fsx":
            ax.annotate(model, (nbytes, tps), textcoords="offset points", xytext=(5, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bytes read per decoded token (weights + KV cache)")
    ax.set_ylabel("decode tokens / s")
    ax.set_title("The bandwidth roofline: tok/s ≤ bandwidth ÷ bytes per token")
    ax.legend(frameon=False, fontsize=8, loc="lower left")
    save(fig, "roofline")


# ---------------------------------------------------------------------------------------------
# A kernel's launch geometry: qmv
# ---------------------------------------------------------------------------------------------

def fig_qmv_layout():
    from matplotlib.patches import Rectangle

    from fs_mlx.kernels.quantized import qmv_geometry

    c = _smollm2_config()
    N = K = c.hidden_size                          # o_proj of the default model: [576, 576]
    grid, tg = qmv_geometry(1, N)
    threads_per_tg = tg[0] * tg[1] * tg[2]
    simd_per_tg = threads_per_tg // 32
    n_tg = (grid[0] // tg[0]) * (grid[1] // tg[1]) * (grid[2] // tg[2])
    rows_per_tg = -(-N // n_tg)
    rows_per_simd = rows_per_tg // simd_per_tg
    vpt = 16                                       # 4-bit: 16 values (two uint32 words) per lane per step
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1, 1.6]})
    colors = plt.get_cmap("tab20").colors
    for t in range(min(n_tg, 6)):
        for s in range(simd_per_tg):
            r0 = t * rows_per_tg + s * rows_per_simd
            a.add_patch(Rectangle((0, r0), K, rows_per_simd, color=colors[(2 * t + s) % 20], lw=0))
            a.text(K / 2, r0 + rows_per_simd / 2, f"threadgroup {t}, SIMD group {s}", ha="center", va="center",
                   fontsize=7)
    a.text(K / 2, 6 * rows_per_tg + 6, f"… {n_tg} threadgroups in all", ha="center", fontsize=8)
    a.set_xlim(0, K)
    a.set_ylim(6 * rows_per_tg + 12, 0)
    a.set_xlabel(f"k (input, {K} values)")
    a.set_ylabel("n (output row)")
    a.set_title(f"W [{N}, {K}]: {rows_per_simd} rows per SIMD group, {rows_per_tg} per threadgroup")
    # One SIMD group's sweep over K: lane l reads values [step·32·vpt + l·vpt, + vpt).
    span = 32 * vpt
    steps = -(-K // span)
    for st in range(steps):
        for lane in range(32):
            k0 = st * span + lane * vpt
            if k0 >= K:
                break
            b.add_patch(Rectangle((k0, 0), vpt, rows_per_simd, facecolor=plt.get_cmap("viridis")(lane / 31),
                                  edgecolor="white", lw=0.3))
        b.text(st * span + min(span, K - st * span) / 2, rows_per_simd + 0.45, f"step {st}", ha="center", fontsize=8)
    for lane in (0, 31):
        b.annotate(f"lane {lane}: values {lane * vpt}–{lane * vpt + vpt - 1}", (lane * vpt + vpt / 2, 0),
                   xytext=(lane * vpt + (4 if lane == 0 else -150), -0.9), fontsize=7,
                   arrowprops={"arrowstyle": "-", "lw": 0.5})
    b.set_xlim(0, K)
    b.set_ylim(rows_per_simd + 1, -1.5)
    b.set_yticks([r + 0.5 for r in range(rows_per_simd)], [f"row {r}" for r in range(rows_per_simd)])
    b.set_xlabel("k")
    b.set_title(f"one SIMD group: 32 lanes × {vpt} values = {span} values per step, the same x for all "
                f"{rows_per_simd} rows,\nthen simd_sum adds the 32 lanes' partial sums of each row", fontsize=9)
    fig.suptitle(f"qmv on the default model's o_proj: grid {grid}, threadgroup {tg} "
                 f"(threads, as MLX counts them) — fs_mlx/kernels/quantized.py: qmv_geometry", y=1.0)
    save(fig, "qmv-layout")


# ---------------------------------------------------------------------------------------------
# Quantization error
# ---------------------------------------------------------------------------------------------

def fig_quantization():
    import mlx.core as mx

    from fs_mlx import load

    lm = load("smollm2")
    emb = lm.model.model.embed_tokens          # Q8_0 in the GGUF: within ~0.4 % of the trained weights
    w = mx.dequantize(emb.weight, emb.scales, emb.biases, group_size=emb.group_size, bits=emb.bits)
    w = w[:4096, :512].astype(mx.float32)      # 4,096 rows x 512 = 2.1 M weights (512: every group size divides it)
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1.2, 1]})
    std = float(mx.std(w).item())
    for gs, color in zip((32, 64, 128), (ACCENT, SECOND, GREY)):
        q, s, bias = mx.quantize(w, group_size=gs, bits=4)
        err = np.array((mx.dequantize(q, s, bias, group_size=gs, bits=4) - w).reshape(-1)) / std
        rms = float(np.sqrt(np.mean(err**2)))
        a.hist(err, bins=121, range=(-0.6, 0.6), histtype="step", color=color, lw=1.2,
               label=f"group {gs}: RMS error {rms:.3f} σ")
    a.set_yscale("log")
    a.set_xlabel("error of a 4-bit weight, in units of the weights' standard deviation σ")
    a.set_ylabel("weights")
    a.set_title("SmolLM2's embedding re-quantized to 4 bits: smaller groups, smaller errors")
    a.legend(frameon=False, fontsize=8)
    # One group of 32 weights snapped to 16 levels: w ≈ scale·q + bias.
    g = w[7, :32]
    q, s, bias = mx.quantize(g.reshape(1, 32), group_size=32, bits=4)
    deq = np.array(mx.dequantize(q, s, bias, group_size=32, bits=4).reshape(-1))
    scale, b0 = float(s.item()), float(bias.item())
    for level in range(16):
        b.axhline(b0 + scale * level, color=GREY, lw=0.4)
    gi = np.array(g)
    b.scatter(range(32), gi, color=ACCENT, s=14, label="weight", zorder=3)
    b.scatter(range(32), deq, color=SECOND, marker="_", s=120, label="4-bit value: scale·q + bias", zorder=3)
    b.vlines(range(32), gi, deq, color=SECOND, lw=0.6)
    b.text(32.5, b0, f"bias = {b0:.4f} (q = 0)", fontsize=7, va="center")
    b.text(32.5, b0 + 15 * scale, f"q = 15, scale = {scale:.4f}", fontsize=7, va="center")
    b.set_xlim(-1, 44)
    b.set_xlabel("index in the group")
    b.set_title("one group of 32: 16 levels between its min and max", fontsize=10)
    b.legend(frameon=False, fontsize=8, loc="upper center")
    save(fig, "quantization-error")


# ---------------------------------------------------------------------------------------------
# Launches per decoded layer, before and after fusion
# ---------------------------------------------------------------------------------------------

def fig_launches():
    from docs_numbers import count_ops_per_layer   # tools/docs_numbers.py: the book's text quotes the same counts

    rows = [("checkpoint's layers\n(nothing fused)", count_ops_per_layer(None, fused=False)),
            ("q/k/v and gate/up\nfused, dense", count_ops_per_layer(None)),
            ("fused, 4-bit\n(SwiGLU in the matmul)", count_ops_per_layer((4, 32)))]
    ops = ["rms_norm", "add_rms_norm", "qk_norm_rope", "attention", "linear", "quantized_matmul", "swiglu",
           "quantized_swiglu"]
    colors = dict(zip(ops, plt.get_cmap("tab10").colors))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for y, (label, counts) in enumerate(rows):
        left = 0.0
        for op in ops:
            n = counts.get(op, 0)
            if n:
                ax.barh(y, n, left=left, color=colors[op], edgecolor="white",
                        label=op if op not in ax.get_legend_handles_labels()[1] else None)
                ax.text(left + n / 2, y, f"{n:g}", ha="center", va="center", color="white", fontsize=8)
                left += n
        ax.text(left + 0.2, y, f"{left:g} launches", va="center", fontsize=9)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(sum(c.values()) for _, c in rows) + 3)
    ax.set_xlabel("backend calls per layer for one decoded token (= kernel launches on the Metal backend)")
    ax.legend(frameon=False, fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    ax.set_title("Launches per decoded layer (CountingBackend on qwen3-tiny)")
    save(fig, "launches")


FIGURES = {"attention": fig_attention, "kv": fig_kv, "roofline": fig_roofline, "qmv": fig_qmv_layout,
           "quantization": fig_quantization, "launches": fig_launches}

if __name__ == "__main__":
    names = sys.argv[1:] or list(FIGURES)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        sys.exit(f"docs_figures.py: no figure {unknown[0]!r}; choose from {', '.join(FIGURES)}")
    for name in names:
        FIGURES[name]()
