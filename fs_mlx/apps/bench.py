"""`fsx bench`: tokens per second, time to first token and memory — next to mlx-lm, against the roofline.

One measurement is the same for every engine, taken on the same clock:

    t0 --prefill P prompt tokens--> first token --G-1 more tokens--> last token

    ttft_s          = first - t0
    prompt_tps      = P / ttft_s                    (mlx-lm's definition)
    generation_tps  = (G - 1) / (last - first)      tokens after the first / time after the first
    peak_memory_gb  = mx.get_peak_memory() / 1e9, reset at t0 (weights and KV cache included)

Each engine runs through its own public streaming API — fsx `generate.stream_generate`,
mlx-lm `mlx_lm.stream_generate` — greedy, EOS ignored, on random prompt ids from a
fixed seed (the engines: bench_engines.py). mlx-lm runs in a sibling process, so
each process's peak memory is its own engine's alone; runs alternate between engines
and the order rotates every repeat, so a slow spell on a shared machine hits both.

The roofline: decoding one token reads every weight once (the embedding table in full
when it doubles as the output projection, one row of it otherwise) plus the K and V of
every cached position. bytes/token x tok/s / memory bandwidth is the fraction of the
machine's ceiling that the engine reaches. See docs/performance.md.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import mlx.core as mx

from ..errors import FsxError
from ..files import write_atomic

# --- memory bandwidth ---------------------------------------------------------------

# Unified-memory bandwidth in GB/s, Apple's figures for each chip's top configuration.
# Binned parts have less (M3 Max 14-core CPU: 300, M4 Max 14-core CPU: 410; M5 Pro/Max
# as announced): pass --bandwidth when yours differs.
APPLE_BANDWIDTH_GBS = {
    "M1": 68.25, "M1 Pro": 200, "M1 Max": 400, "M1 Ultra": 800,
    "M2": 100, "M2 Pro": 200, "M2 Max": 400, "M2 Ultra": 800,
    "M3": 100, "M3 Pro": 150, "M3 Max": 400, "M3 Ultra": 819,
    "M4": 120, "M4 Pro": 273, "M4 Max": 546,
    "M5": 153, "M5 Pro": 307, "M5 Max": 614,
}


def device_name() -> str:
    info = mx.device_info() if hasattr(mx, "device_info") else mx.metal.device_info()
    return str(info.get("device_name", "unknown"))


def apple_bandwidth(name: str) -> float | None:
    """'Apple M2 Max' -> 400.0; None for anything not in the table."""
    words = name.replace("Apple", "").split()
    for n in (2, 1):  # "M4 Max" before "M4"
        key = " ".join(words[:n])
        if key in APPLE_BANDWIDTH_GBS:
            return float(APPLE_BANDWIDTH_GBS[key])
    return None


# --- roofline arithmetic --------------------------------------------------------------

def weight_bytes_per_token(param_bytes: dict[str, int], tied: bool, vocab_size: int) -> int:
    """Bytes of weights one decoded token reads, from {parameter name: bytes held in memory}.

    Every matrix is read once per token, except the embedding table: it is read in full
    only when tied (it is the output projection too); otherwise one row is gathered.
    """
    total = sum(param_bytes.values())
    if tied:
        return total
    embed = sum(n for k, n in param_bytes.items() if k.startswith("model.embed_tokens."))
    return total - embed + embed // vocab_size


def kv_bytes_per_position(layers: int, kv_heads: int, head_dim: int, itemsize: int) -> int:
    """K and V of one cached position, all layers."""
    return 2 * layers * kv_heads * head_dim * itemsize


def bytes_per_token(weight_bytes: int, kv_per_position: int, depth: float) -> float:
    return weight_bytes + kv_per_position * depth


def roofline_fraction(bytes_tok: float, tps: float, bandwidth_gbs: float | None) -> float | None:
    return None if not bandwidth_gbs else bytes_tok * tps / (bandwidth_gbs * 1e9)


# --- settings -----------------------------------------------------------------------

MAX_TOKENS = 1 << 20  # prompt, generated and context depths: beyond any model's context
# mlx-lm as it loads the checkpoint, or cast to float32 like fsx on CPU; llama.cpp's
# llama-bench on the same .gguf (llama_bench.py)
COMPARE_CHOICES = ("mlx-lm", "mlx-lm:float32", "llama.cpp")


@dataclass
class Settings:
    model: str | None  # None: the default model (hub.DEFAULT_MODEL)
    prompt_tokens: int = 128
    gen_tokens: int = 64
    repeat: int = 3
    warmup: bool = True
    contexts: list[int] = field(default_factory=list)  # empty: one run at prompt_tokens
    compare: list[str] = field(default_factory=list)
    kernels: list[str] = field(default_factory=lambda: ["auto"])
    bandwidth_gbs: float | None = None
    seed: int = 0
    quantize: tuple[int, int] | None = None  # (bits, group_size): quantize float weights first
    dtype: str | None = None  # fsx's compute dtype; None: its own choice (float32 on CPU)
    parallel: str | None = None  # under fsx launch: tensor | pipeline (this process is one rank)

    def validate(self) -> "Settings":
        if self.prompt_tokens < 1:
            raise FsxError(f"--prompt-tokens must be at least 1, got {self.prompt_tokens}")
        if self.gen_tokens < 2:
            raise FsxError(f"--gen-tokens must be at least 2 (decode speed needs two tokens), "
                           f"got {self.gen_tokens}")
        if self.repeat < 1:
            raise FsxError(f"--repeat must be at least 1, got {self.repeat}")
        if max(self.prompt_tokens, self.gen_tokens) > MAX_TOKENS or self.repeat > 1000:
            raise FsxError(f"--prompt-tokens and --gen-tokens must be at most {MAX_TOKENS}, "
                           f"--repeat at most 1000")
        if any(c > MAX_TOKENS for c in self.contexts):
            raise FsxError(f"--contexts must be at most {MAX_TOKENS} tokens")
        if self.bandwidth_gbs is not None and not self.bandwidth_gbs > 0:
            raise FsxError(f"--bandwidth must be a positive number of GB/s, got {self.bandwidth_gbs}")
        if self.parallel and (self.compare or len(self.kernels) > 1):
            raise FsxError("with --parallel, fsx bench measures one fsx engine (no --compare, one "
                           "--kernels): the other engines would run unsplit on every rank")
        for c in self.compare:
            if c not in COMPARE_CHOICES:
                raise FsxError(f"--compare must be one of {', '.join(COMPARE_CHOICES)}, not {c!r}")
        if any(c.startswith("mlx-lm") for c in self.compare):
            try:
                import importlib.util
                found = importlib.util.find_spec("mlx_lm") is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                raise FsxError("--compare mlx-lm needs mlx-lm installed (pip install mlx-lm)")
        from ..model.backends import KERNEL_CHOICES

        for k in self.kernels:
            if k not in KERNEL_CHOICES:
                raise FsxError(f"--kernels must be one of {', '.join(KERNEL_CHOICES)} "
                               f"(comma-separated to compare), not {k!r}")
        from ..model.config import FLOAT_DTYPES

        if self.dtype not in (None, *FLOAT_DTYPES):
            raise FsxError(f"--dtype must be one of {', '.join(FLOAT_DTYPES)}, not {self.dtype!r}")
        if self.contexts:
            if any(b <= a for a, b in zip(self.contexts, self.contexts[1:])):
                raise FsxError(f"--contexts must increase: {','.join(map(str, self.contexts))}")
            if self.contexts[0] < 1:
                raise FsxError("--contexts must be positive token counts")
            for a, b in zip(self.contexts, self.contexts[1:]):  # each step continues the cache
                if b <= a + self.gen_tokens:
                    raise FsxError(f"--contexts: {b} is not beyond the previous step's depth "
                                   f"({a + self.gen_tokens}: its context plus {self.gen_tokens} "
                                   "generated tokens)")
        return self


def parse_int_list(text: str, option: str) -> list[int]:
    """'512,2k,8192' -> [512, 2048, 8192]."""
    out = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        mult = 1024 if part.lower().endswith("k") else 1
        try:
            out.append(int(part[:-1] if mult > 1 else part) * mult)
        except ValueError:
            raise FsxError(f"{option}: expected comma-separated token counts like 512,2048, "
                           f"got {text!r}") from None
    if not out:
        raise FsxError(f"{option}: no values given")
    return out


def prompt_ids(n: int, vocab: int, seed: int) -> list[int]:
    """n random token ids from a fixed seed: the same prompt for every engine and run."""
    rng = random.Random(seed)
    return [rng.randrange(vocab) for _ in range(n)]


# --- the plan ------------------------------------------------------------------------

def open_engines(s: Settings, workdir: Path, progress: Callable[[str], None]) -> list:
    """fsx once per --kernels choice, then one mlx-lm per --compare entry.

    The first fsx runs in this process; every other engine in a sibling process of its
    own, so that each peak memory is one model's.
    """
    from .bench_engines import FsxEngine, WorkerEngine, mlx_lm_checkpoint

    model, quantize = s.model, s.quantize
    if quantize and s.compare:  # mlx-lm cannot quantize on load: both read one written copy
        from ..formats.quantize import write_quantized
        from ..loader import resolve_model_dir

        model = str(workdir / "quantized")
        progress(f"quantizing to {quantize[0]} bits, group {quantize[1]} (fsx quantize) ...")
        write_quantized(resolve_model_dir(s.model), Path(model), *quantize)
        quantize = None
    engines = []
    try:
        for k in s.kernels:
            progress(f"loading {model or 'the default model'} in fsx (kernels {k}) ...")
            if not engines:
                engines.append(FsxEngine(model, k, quantize, s.dtype, s.parallel))
            else:
                engines.append(WorkerEngine("fsx", k, {
                    "engine": "fsx", "model": str(engines[0].lm.path), "kernels": k,
                    "quantize": quantize, "dtype": s.dtype}))
        for c in s.compare:
            if c == "llama.cpp":
                from .. import cpu
                from .llama_bench import LlamaBenchEngine

                progress(f"llama.cpp: llama-bench on {engines[0].lm.path}, {cpu.num_threads()} threads ...")
                engines.append(LlamaBenchEngine(engines[0].lm.path, cpu.num_threads(), engines[0].info()))
                continue
            dtype = c.split(":")[1] if ":" in c else None
            path = mlx_lm_checkpoint(engines[0].lm.path, progress)
            progress(f"loading {path} in mlx-lm{' as ' + dtype if dtype else ''} (sibling process) ...")
            engines.append(WorkerEngine("mlx-lm", "mlx", {"engine": "mlx-lm", "model": path,
                                                          "dtype": dtype}))
    except BaseException:
        for e in engines:
            e.close()
        raise
    return engines


def run_bench(s: Settings, progress: Callable[[str], None] = lambda m: None) -> dict:
    """Load every engine, warm each up, measure them alternately; one JSON-ready report."""
    s.validate()
    bandwidth, source = resolve_bandwidth(s.bandwidth_gbs)
    with tempfile.TemporaryDirectory(prefix="fsx-bench-") as workdir:
        engines = open_engines(s, Path(workdir), progress)
        try:
            path = str(engines[0].lm.path)
            results = measure_all(s, engines, bandwidth, progress)
        finally:
            for e in engines:
                e.close()
    return {
        "model_path": path,
        "results": results,
        "machine": machine_info(bandwidth, source),
        "versions": versions(any(c.startswith("mlx-lm") for c in s.compare)),
        "settings": {**asdict(s), "definitions": DEFINITIONS},
    }


def measure_all(s: Settings, engines: list, bandwidth: float | None, progress) -> list[dict]:
    first = engines[0].info()
    depths = s.contexts or [s.prompt_tokens]
    limit = first["max_position_embeddings"]
    if depths[-1] + s.gen_tokens > limit:
        raise FsxError(f"context {depths[-1]} + {s.gen_tokens} generated tokens exceeds the "
                       f"model's {limit} positions")
    ids = prompt_ids(depths[-1], first["vocab_size"], s.seed)

    infos = [first] + [e.info() for e in engines[1:]]
    if s.warmup:  # first calls allocate, fault pages in, fill caches: not what we measure
        for e, info in zip(engines, infos):
            progress(f"warm-up: {e.name} {info['dtype']} (kernels {e.kernels})")
            e.run(ids[: depths[0]], min(s.gen_tokens, 8), fresh=True)
    rows: dict[tuple[int, int], list[dict]] = {(i, d): [] for i in range(len(engines)) for d in depths}

    total, step = s.repeat * len(engines) * len(depths), 0
    for r in range(s.repeat):
        have = [0] * len(engines)  # each engine's cache depth
        for j, depth in enumerate(depths):
            # Engines take turns at every depth (each keeps its own cache), and who goes
            # first rotates, so a slow spell on a shared machine lands on both.
            for i in [(r + k) % len(engines) for k in range(len(engines))]:
                e = engines[i]
                if have[i] >= depth:
                    raise FsxError(f"--contexts: {depth} is not beyond the previous step's depth "
                                   f"({have[i]}: its context plus {s.gen_tokens} generated tokens)")
                # The sweep reuses the cache: only the tokens beyond what it holds are prefilled.
                m = e.run(ids[have[i]:depth], s.gen_tokens, fresh=(j == 0))
                have[i] = m["depth"]
                rows[(i, depth)].append(m)
                step += 1
                progress(f"[{step}/{total}] {e.name:<6} {infos[i]['dtype']:<8} context {depth:>6}: "
                         f"prompt {m['prompt_tps']:9.1f} tok/s  decode {m['generation_tps']:8.2f} tok/s  "
                         f"peak {m['peak_memory_gb']:.3f} GB")
    results = [result_row(engines[i], infos[i], d, rows[(i, d)], s.gen_tokens, bandwidth)
               for d in depths for i in range(len(engines))]
    add_ratios(results)
    return results


METRICS = ("prompt_tps", "generation_tps", "ttft_s", "peak_memory_gb")


def result_row(engine, info: dict, context: int, runs: list[dict], gen: int,
               bandwidth: float | None) -> dict:
    """Medians as the headline numbers, min/median/max of each in `spread`, every run kept."""
    row = {"engine": engine.name, "kernels": engine.kernels, "dtype": info["dtype"],
           "context": context, "prompt_tokens": runs[0]["prompt_tokens"], "gen_tokens": gen,
           "repeat": len(runs)}
    row.update({m: statistics.median(r[m] for r in runs) for m in METRICS})
    row["spread"] = {m: summarise([r[m] for r in runs]) for m in METRICS}
    row["load_s"] = info["load_s"]
    weights = weight_bytes_per_token(info["param_bytes"], info["tied"], info["vocab_size"])
    kv = kv_bytes_per_position(info["layers"], info["kv_heads"], info["head_dim"], info["itemsize"])
    bpt = bytes_per_token(weights, kv, context + gen / 2)  # the mean depth while decoding
    row["weight_bytes_per_token"] = weights
    row["kv_bytes_per_position"] = kv
    row["bytes_per_token"] = bpt
    row["achieved_gbs"] = bpt * row["generation_tps"] / 1e9
    row["roofline_fraction"] = roofline_fraction(bpt, row["generation_tps"], bandwidth)
    row["runs"] = runs
    return row


def add_ratios(results: list[dict]) -> None:
    """Each row other than the first fsx one at its context gets fsx / this row, three ways.

    `ratio` divides medians. `ratio_paired` is the median over repeats of fsx's run
    divided by this engine's run of the same repeat — the two ran back to back, so a
    slow spell on a shared machine mostly cancels. `ratio_best` divides each side's
    best run (highest tok/s, lowest peak): interference only ever slows a run down.
    """
    metrics = ("prompt_tps", "generation_tps", "peak_memory_gb")
    for row in results:
        ref = next(r for r in results if r["context"] == row["context"])
        if row is ref:
            row["ratio"] = row["ratio_paired"] = row["ratio_best"] = None
            continue
        row["ratio"] = {m: _div(ref[m], row[m]) for m in metrics}
        if "runs" in row and "runs" in ref:
            row["ratio_paired"] = {m: _median([_div(a[m], b[m]) for a, b in zip(ref["runs"], row["runs"])])
                                   for m in metrics}
            best = {"prompt_tps": max, "generation_tps": max, "peak_memory_gb": min}
            row["ratio_best"] = {m: _div(f(r[m] for r in ref["runs"]), f(r[m] for r in row["runs"]))
                                 for m, f in best.items()}


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _div(a: float, b: float) -> float | None:
    return a / b if b else None


def summarise(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


DEFINITIONS = {
    "prompt_tps": "prompt tokens prefilled in this step / ttft_s",
    "generation_tps": "(generated tokens - 1) / (time of the last token - time of the first)",
    "ttft_s": "seconds from the call to the first generated token",
    "peak_memory_gb": "mx.get_peak_memory() / 1e9 during the step (weights included), per process",
    "context": "KV cache depth when decoding starts",
    "bytes_per_token": "weights read per decoded token, as held in memory, + K and V at the "
                       "mean decode depth (context + gen_tokens / 2)",
    "achieved_gbs": "bytes_per_token x generation_tps / 1e9",
    "roofline_fraction": "achieved_gbs / memory bandwidth (null when the bandwidth is unknown)",
    "ratio": "the first fsx row / this row, medians: > 1 = fsx faster (tps) or bigger (peak)",
    "ratio_paired": "median over repeats of (fsx run / this engine's run of the same repeat)",
    "ratio_best": "each side's best run: max tok/s, min peak",
    "spread": "min, median, max over the repeats",
}


# --- machine and versions --------------------------------------------------------------

def resolve_bandwidth(override: float | None) -> tuple[float | None, str]:
    if override:
        return override, "--bandwidth"
    name = device_name()
    bw = apple_bandwidth(name) if mx.metal.is_available() else None
    return (bw, f"Apple table ({name})") if bw else (None, "unknown")


def machine_info(bandwidth: float | None, source: str) -> dict:
    from .. import cpu as cpu_kernels
    from .. import openblas

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory = None
    return {
        "device": device_name(), "default_device": str(mx.default_device()),
        "metal": mx.metal.is_available(), "cpu": cpu, "cpu_count": os.cpu_count(),
        "memory_gib": memory, "platform": platform.platform(), "blas": openblas.STATUS,
        "cpu_matmuls": cpu_kernels.STATUS,
        "bandwidth_gbs": bandwidth, "bandwidth_source": source,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def versions(with_mlx_lm: bool) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("fs-mlx", "mlx") + (("mlx-lm",) if with_mlx_lm else ()):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


# --- output ---------------------------------------------------------------------------

def format_report(report: dict) -> str:
    s, mach = report["settings"], report["machine"]
    bw = f"{mach['bandwidth_gbs']:g} GB/s ({mach['bandwidth_source']})" if mach["bandwidth_gbs"] \
        else "bandwidth unknown (--bandwidth GB/s)"
    lines = [
        f"{report['model_path']} | prompt {s['prompt_tokens']}, generate {s['gen_tokens']}, "
        f"{s['repeat']} repeat(s): median (min-max) | {mach['device']}, {bw}",
        f"{'engine':<10}{'kernels':<8}{'dtype':<9}{'context':>8}  {'prompt tok/s':<22}"
        f"{'decode tok/s':<22}{'TTFT ms':>9}{'peak MB':>9}{'MB/token':>10}{'roofline':>10}",
    ]
    for r in report["results"]:
        sp = r["spread"]
        frac = f"{r['roofline_fraction'] * 100:.1f}%" if r["roofline_fraction"] is not None else "unknown"
        lines.append(
            f"{r['engine']:<10}{r['kernels']:<8}{r['dtype']:<9}{r['context']:>8}  "
            f"{_spread(sp['prompt_tps']):<22}{_spread(sp['generation_tps']):<22}"
            f"{r['ttft_s'] * 1000:>9.1f}{r['peak_memory_gb'] * 1000:>9.1f}"
            f"{r['bytes_per_token'] / 1e6:>10.2f}{frac:>10}"
        )
    for r in report["results"]:
        if r["ratio"]:
            q = r["ratio"]
            ref = next(x for x in report["results"] if x["context"] == r["context"])
            lines.append(
                f"{_label(ref)} / {_label(r)} at context {r['context']}: decode "
                f"{_x(q['generation_tps'])}, prompt {_x(q['prompt_tps'])}, peak memory "
                f"{_x(q['peak_memory_gb'])} (medians); decode paired {_x(r['ratio_paired']['generation_tps'])}, "
                f"best {_x(r['ratio_best']['generation_tps'])}"
            )
    lines.append("load: " + ", ".join(
        f"{r['engine']} {r['dtype']} {r['load_s']:.2f} s"
        for r in report["results"] if r["context"] == report["results"][0]["context"]))
    return "\n".join(lines)


def _label(row: dict) -> str:
    """'fsx' or 'mlx-lm (bfloat16)'; with the kernels when fsx runs more than one kind."""
    kernels = f" --kernels {row['kernels']}" if row["engine"] == "fsx" else ""
    return f"{row['engine']} ({row['dtype']}{kernels})"


def _spread(d: dict) -> str:
    f = (lambda v: f"{v:.0f}") if d["max"] >= 100 else (lambda v: f"{v:.2f}")
    return f"{f(d['median'])} ({f(d['min'])}-{f(d['max'])})"


def _x(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


def write_json(path: str, obj: dict) -> None:
    """The report as indented JSON, written atomically (never a half-written file)."""
    write_atomic(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))

