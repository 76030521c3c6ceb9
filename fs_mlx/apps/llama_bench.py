"""llama.cpp as a `fsx bench` engine: `--compare llama.cpp` runs its llama-bench on the same .gguf.

On a CPU, llama.cpp is the engine to measure against. Its `llama-bench` is run as
a subprocess for each measurement, with the same prompt length, generated tokens,
depth and threads as fsx's run:

    llama-bench -m MODEL.gguf -p P -n 0 -r 1 -t T -o jsonl      prompt: P tokens at depth 0
    llama-bench -m MODEL.gguf -p 0 -n G -d P -r 1 -t T -o jsonl  decode: G tokens at depth P

and its numbers are mapped onto fsx's definitions (bench.py): prompt tok/s =
P / the prompt's time, decode tok/s = G / the G single-token steps' time (llama.cpp
times the steps only, so no first-token term), TTFT = the prompt's time. llama-bench
warms each test up itself. Peak memory is the process's peak resident set
(`os.wait4`'s ru_maxrss), not MLX's allocator peak: it also counts the binary and
the mmap'ed file pages it touched.

The binary: $FSX_LLAMA_BENCH, else `llama-bench` in the fs-mlx cache
(~/.cache/fs-mlx/llama.cpp/build/bin), which `bench/build_llama_cpp.sh` builds from
the llama.cpp sources vendored in PyPI's llama-cpp-python sdist (~10 min on 2 cores).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import FsxError
from ..files import cache_dir

BUILD_HINT = "bench/build_llama_cpp.sh builds it into the fs-mlx cache (~10 min on 2 cores)"


def find_llama_bench() -> Path:
    """The llama-bench binary to run, or an FsxError that says how to get one."""
    chosen = os.environ.get("FSX_LLAMA_BENCH")
    if chosen:
        path = Path(chosen)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise FsxError(f"FSX_LLAMA_BENCH={chosen}: not an executable file")
        return path
    cached = cache_dir() / "llama.cpp" / "build" / "bin" / "llama-bench"
    if cached.is_file():
        return cached
    on_path = shutil.which("llama-bench")
    if on_path:
        return Path(on_path)
    raise FsxError(f"--compare llama.cpp needs llama.cpp's llama-bench: none at {cached}, none on "
                   f"PATH, FSX_LLAMA_BENCH unset; {BUILD_HINT}")


class LlamaBenchEngine:
    """llama.cpp on a .gguf, measured by its own llama-bench (one subprocess per test)."""

    name = "llama.cpp"
    kernels = "ggml"

    def __init__(self, gguf: Path, threads: int, like: dict):
        """like: fsx's info() for the same file (layers, KV heads, head_dim, vocab...)."""
        if Path(gguf).suffix != ".gguf":
            raise FsxError(f"--compare llama.cpp needs a .gguf MODEL, not {gguf}")
        self.binary, self.gguf, self.threads = find_llama_bench(), Path(gguf), threads
        self.like = like
        self.model_size = self.model_type = None
        self.depth = 0
        t = time.perf_counter()
        self._test(prompt=1, gen=0, depth=0)  # the model loads, and fails early if it cannot
        self.load_s = time.perf_counter() - t

    def _test(self, prompt: int, gen: int, depth: int) -> tuple[dict, float]:
        """One llama-bench test: its JSON record and the process's peak RSS in GB."""
        cmd = [str(self.binary), "-m", str(self.gguf), "-p", str(prompt), "-n", str(gen),
               "-d", str(depth), "-r", "1", "-t", str(self.threads), "-o", "jsonl"]
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            lines = [l for l in out.read().decode(errors="replace").splitlines() if l.startswith("{")]
            if proc.returncode != 0 or not lines:
                tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
                raise FsxError(f"llama-bench failed ({' '.join(cmd)}): {' | '.join(tail) or 'no output'}")
        record = json.loads(lines[-1])
        self.model_size = record.get("model_size", self.model_size)
        self.model_type = record.get("model_type", self.model_type)
        # ru_maxrss: kilobytes on Linux, bytes on macOS
        rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024) / 1e9
        return record, rss

    def run(self, new_ids: list[int], gen: int, fresh: bool) -> dict:
        """A prompt of len(new_ids) tokens on top of the depth so far, then gen tokens decoded."""
        depth = 0 if fresh else self.depth
        n = len(new_ids)
        pp, rss_p = self._test(prompt=n, gen=0, depth=depth)
        tg, rss_g = self._test(prompt=0, gen=gen, depth=depth + n)
        prompt_s = pp["avg_ns"] / 1e9
        self.depth = depth + n + gen
        return {
            "prompt_tokens": n, "generation_tokens": gen, "ttft_s": prompt_s,
            "prompt_tps": pp["avg_ts"], "generation_tps": tg["avg_ts"],
            "peak_memory_gb": max(rss_p, rss_g), "depth": depth + n,
        }

    def info(self) -> dict:
        like = self.like
        return {
            "dtype": (self.model_type or "gguf").split()[-1],  # 'llama 135M Q4_1 - Medium' style
            "load_s": self.load_s,
            "param_bytes": {"gguf tensors": int(self.model_size or self.gguf.stat().st_size)},
            "tied": True,  # every tensor in the file counted once per token, as llama.cpp holds it
            "vocab_size": like["vocab_size"], "layers": like["layers"], "kv_heads": like["kv_heads"],
            "head_dim": like["head_dim"], "itemsize": 2,  # llama.cpp's KV cache: float16
        }

    def close(self) -> None:
        pass
