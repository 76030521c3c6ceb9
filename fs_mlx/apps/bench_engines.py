"""The engines `fsx bench` measures, and the one clock they are measured by.

    FsxEngine       fs-mlx in this process (generate.stream_generate)
    MlxLmEngine     mlx-lm (mlx_lm.stream_generate) — run inside a sibling process:
    WorkerEngine    the parent's handle on it: JSON lines over a pipe, one request at a time

Each engine keeps one KV cache: run(new_ids, gen, fresh) extends it by new_ids (a new
cache when fresh), decodes gen tokens greedily with EOS ignored, and returns the
measurement of `time_tokens` plus the cache depth. info() returns what the roofline
needs (parameter bytes as held in memory, KV-cache shape and dtype); bench.py does the
arithmetic. mlx-lm reads directories only, so a .gguf is exported for it once
(`export_gguf`).

    python -m fs_mlx.apps.bench_engines      # the worker: one engine, driven on stdin
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

import mlx.core as mx
from mlx.utils import tree_flatten

from ..errors import FsxError
from ..files import atomic_dir


def model_param_bytes(model) -> dict[str, int]:
    return {k: v.nbytes for k, v in tree_flatten(model.parameters())}


# --- one measurement ---------------------------------------------------------------

def time_tokens(tokens: Iterator[int], n_prompt: int) -> dict:
    """Drain a token stream; time it with the definitions at the top of this file."""
    gc.collect()
    mx.clear_cache()
    mx.reset_peak_memory()
    t0 = time.perf_counter()
    first = last = 0.0
    n = 0
    for _ in tokens:
        last = time.perf_counter()
        if n == 0:
            first = last
        n += 1
    if n == 0:
        raise FsxError("the engine generated no tokens")
    ttft = first - t0
    return {
        "prompt_tokens": n_prompt,
        "generation_tokens": n,
        "ttft_s": ttft,
        "prompt_tps": n_prompt / ttft,
        "generation_tps": (n - 1) / (last - first) if n > 1 and last > first else 0.0,
        "peak_memory_gb": mx.get_peak_memory() / 1e9,
    }


# --- the engines ---------------------------------------------------------------------

class FsxEngine:
    name = "fsx"

    def __init__(self, model: str | None, kernels: str, quantize: tuple[int, int] | None = None,
                 dtype: str | None = None, parallel: str | None = None):
        from ..loader import load

        t = time.perf_counter()
        self.lm = load(model, kernels=kernels, dtype=getattr(mx, dtype) if dtype else None,
                       quantize=quantize, parallel=parallel)
        self.kernels = self.lm.kernels
        self.load_s = time.perf_counter() - t
        self.cache = None

    def run(self, new_ids: list[int], gen: int, fresh: bool) -> dict:
        from ..generation.generate import PromptCache, stream_generate

        if fresh or self.cache is None:
            self.cache = PromptCache(self.lm.model)
        prompt = self.cache.tokens + new_ids  # reuse() finds the cached prefix
        stream = stream_generate(self.lm, prompt, max_tokens=gen, ignore_eos=True, cache=self.cache)
        m = time_tokens((r.token for r in stream if r.token is not None), len(new_ids))
        return {**m, "depth": self.cache.offset}

    def info(self) -> dict:
        c = self.lm.config
        return {
            "dtype": str(self.lm.dtype).replace("mlx.core.", ""), "load_s": self.load_s,
            "param_bytes": model_param_bytes(self.lm.model), "tied": c.tie_word_embeddings,
            "vocab_size": c.vocab_size, "layers": c.num_hidden_layers,
            "kv_heads": c.num_key_value_heads, "head_dim": c.head_dim, "itemsize": self.lm.dtype.size,
            "max_position_embeddings": c.max_position_embeddings,
        }

    def close(self) -> None:
        pass


class MlxLmEngine:
    """mlx-lm itself, in this process (the worker's side)."""

    name = "mlx-lm"

    def __init__(self, model: str, dtype: str | None):
        import mlx_lm
        from mlx_lm.sample_utils import make_sampler

        t = time.perf_counter()
        self.model, self.tokenizer = mlx_lm.load(model)
        if dtype == "float32":
            self.model.set_dtype(mx.float32)  # floats only; packed quantized weights stay
            mx.eval(self.model.parameters())
        self.load_s = time.perf_counter() - t
        self.tokenizer.eos_token_ids = []  # EOS ignored, as fsx's ignore_eos
        self.sampler = make_sampler(temp=0.0)
        self.cache = None

    def run(self, new_ids: list[int], gen: int, fresh: bool) -> dict:
        import mlx_lm
        from mlx_lm.models.cache import make_prompt_cache

        if fresh or self.cache is None:
            self.cache = make_prompt_cache(self.model)
        stream = mlx_lm.stream_generate(
            self.model, self.tokenizer, mx.array(new_ids), max_tokens=gen,
            sampler=self.sampler, prompt_cache=self.cache,
        )
        m = time_tokens((r.token for r in stream), len(new_ids))
        return {**m, "depth": self.cache[0].offset}

    def info(self) -> dict:
        args = self.model.args
        # The activations' dtype (and so the KV cache's) is what the embedding yields:
        # the weights' dtype, or a quantized embedding's scales' dtype.
        dtype = self.model.model.embed_tokens(mx.array([[0]])).dtype
        params = model_param_bytes(self.model)
        head_dim = getattr(args, "head_dim", None) or args.hidden_size // args.num_attention_heads
        return {
            "dtype": str(dtype).replace("mlx.core.", ""), "load_s": self.load_s,
            "param_bytes": params, "tied": not any(k.startswith("lm_head.") for k in params),
            "vocab_size": args.vocab_size, "layers": args.num_hidden_layers,
            "kv_heads": args.num_key_value_heads, "head_dim": head_dim, "itemsize": dtype.size,
        }

    def close(self) -> None:
        pass


class WorkerEngine:
    """The parent's handle on an engine that lives in a sibling process (JSON lines)."""

    def __init__(self, name: str, kernels: str, load: dict):
        """load: what the worker builds — {"engine": "mlx-lm", "model", "dtype"} or
        {"engine": "fsx", "model", "kernels", "quantize", "dtype"}."""
        self.name, self.kernels = name, kernels
        self.stderr = tempfile.TemporaryFile(mode="w+")  # a file: a full pipe would block it
        self.proc = subprocess.Popen([sys.executable, "-m", "fs_mlx.apps.bench_engines"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, bufsize=1)
        self.kernels = self._call({"op": "load", **load}).get("kernels", kernels)

    def _call(self, request: dict) -> dict:
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            self.proc.wait()
            self.stderr.seek(0)
            err = self.stderr.read().strip().splitlines()
            raise FsxError(f"the {self.name} worker died: {err[-1] if err else 'no message'}")
        reply = json.loads(line)
        if "error" in reply:
            raise FsxError(f"{self.name}: {reply['error']}")
        return reply

    def run(self, new_ids: list[int], gen: int, fresh: bool) -> dict:
        return self._call({"op": "run", "ids": new_ids, "gen": gen, "fresh": fresh})

    def info(self) -> dict:
        return self._call({"op": "info"})

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.stderr.close()


def worker_main() -> None:
    """The sibling process: one engine (mlx-lm, or fsx with other kernels), driven by
    JSON lines on stdin."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything mlx-lm prints goes to stderr, never into the protocol
    engine = None
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "load" and req["engine"] == "fsx":
                quantize = tuple(req["quantize"]) if req.get("quantize") else None
                engine = FsxEngine(req["model"], req["kernels"], quantize, req.get("dtype"))
                reply = {"ok": True, "kernels": engine.kernels}
            elif req["op"] == "load":
                engine = MlxLmEngine(req["model"], req.get("dtype"))
                reply = {"ok": True}
            elif req["op"] == "run":
                reply = engine.run(req["ids"], req["gen"], req["fresh"])
            elif req["op"] == "info":
                reply = engine.info()
            else:
                break
        except Exception as e:  # reported to the parent, which raises it as FsxError
            reply = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply) + "\n")



# --- GGUF for mlx-lm -------------------------------------------------------------------

def mlx_lm_checkpoint(path: Path, progress: Callable[[str], None]) -> str:
    """A directory mlx-lm loads holding the very weights fsx runs.

    mlx-lm reads Hugging Face / MLX directories, not GGUF files: a .gguf is written
    out once (cached next to the downloaded models) as an MLX-quantized directory —
    the tensors exactly as `mx.load` decodes them, which is also what fsx runs.
    """
    if path.is_dir():
        return str(path)
    from ..formats.hub import cache_dir

    st = path.stat()
    out = cache_dir() / "mlx-lm" / f"{path.stem}-{st.st_size}-{int(st.st_mtime)}"
    if not (out / "config.json").is_file():
        progress(f"writing {path.name} as an MLX checkpoint for mlx-lm: {out}")
        export_gguf(path, out)
    return str(out)


def export_gguf(path: Path, out: Path) -> None:
    """A .gguf -> config.json + model.safetensors + tokenizer files, MLX layout (atomic)."""

    from ..formats.gguf import config_from_header, load_tensors, read_header
    from ..formats.gguf_tokenizer import build_tokenizer
    from ..model.config import FIXED_BY_ARCHITECTURE

    header = read_header(path)
    config = config_from_header(header)
    tensors = load_tensors(header, config)
    tok = build_tokenizer(header)
    raw = {k: v for k, v in asdict(config).items()
           if k not in ("extra", *FIXED_BY_ARCHITECTURE) and v is not None}
    if config.quantization:
        q = dict(config.quantization)
        for name, scales in tensors.items():  # layers whose width differs from the default
            if name.endswith(".scales"):
                layer = name[: -len(".scales")]
                bits = tensors[f"{layer}.weight"].shape[-1] * 32 // (scales.shape[-1] * q["group_size"])
                if bits != q["bits"]:
                    q[layer] = {"group_size": q["group_size"], "bits": bits}
        raw["quantization"] = q
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp:
        mx.save_safetensors(str(tmp / "model.safetensors"), tensors, metadata={"format": "mlx"})
        tok.backend.save(str(tmp / "tokenizer.json"))
        tok_config = {**tok.special_tokens, "chat_template": tok.chat_template,
                      "tokenizer_class": "PreTrainedTokenizerFast"}
        (tmp / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
        raw["eos_token_id"] = tok.eos_token_ids or raw.get("eos_token_id")
        (tmp / "config.json").write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    worker_main()
