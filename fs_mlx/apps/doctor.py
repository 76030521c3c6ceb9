"""`fsx doctor`: do the hand-written kernels work on this machine, and how fast are they?

On a Mac (Metal available) it builds every kernel with Metal, checks each
against the plain-math reference (fs_mlx/model/reference.py) on a few shapes
— the small ones whose inputs MLX passes in `constant` memory among them —
times each against MLX's own op, and runs a short `fsx bench --compare
mlx-lm` on the default model. Elsewhere it runs the same checks through the
MSL executor (fs_mlx/msl: the same sources on the CPU), says so, and skips
the timings, which would measure the executor, not a GPU.

The report is plain text (or one JSON object with --json) meant to be pasted
into a bug report. Exit status 0 when every check passes.
"""

from __future__ import annotations

import platform
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable

import mlx.core as mx
import numpy as np

# Tolerances as the kernel tests' (tests/kernels/conftest.py, where each is
# argued): float sums in another order and the math library's ~1-2 ULP,
# then the output dtype's rounding (~2 ULP of half / bfloat16).
TOL = {mx.float32: 1e-5, mx.float16: 1e-3, mx.bfloat16: 8e-3}


@dataclass
class Check:
    op: str
    case: str  # the shape, in words
    dtype: str
    ok: bool
    max_err: float | None = None  # max |kernel - reference| / max |reference|
    kernel_ms: float | None = None  # median per call (Metal only)
    mlx_ms: float | None = None  # MLX's own op, same inputs
    error: str | None = None  # a compile or run failure, its first lines


@dataclass
class Report:
    machine: dict
    backend: str  # "metal" or "msl (executor)"
    checks: list[Check] = field(default_factory=list)
    bench: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def _normal(shape, seed, dtype=mx.float32, std=1.0):
    return (std * mx.random.normal(shape, key=mx.random.key(seed))).astype(dtype)


def _cases(dtype) -> list[tuple[str, str, Callable]]:
    """(op, case, fn(backend) -> output(s)) for every kernel, small shapes first."""
    from fs_mlx.model.rope import make_rope

    def rms(rows, D):
        x, w = _normal((rows, D), 1, dtype), (1 + _normal((D,), 2, std=0.1)).astype(dtype)
        return lambda b: b.rms_norm(x, w, 1e-6)

    def add_rms(rows, D):
        x, r, w = _normal((rows, D), 3, dtype), _normal((rows, D), 4, dtype), (1 + _normal((D,), 5, std=0.1)).astype(dtype)
        return lambda b: b.add_rms_norm(x, r, w, 1e-6)

    def qk(B, L, Hq, Hkv, D, offset):
        q, k = _normal((B, L, Hq, D), 6, dtype), _normal((B, L, Hkv, D), 7, dtype)
        qw, kw = (1 + _normal((D,), 8, std=0.1)).astype(dtype), (1 + _normal((D,), 9, std=0.1)).astype(dtype)
        rope = make_rope(D, 1e6, False, None)
        return lambda b: b.qk_norm_rope(q, k, qw, kw, 1e-6, rope, offset)

    def attn(B, Hq, Hkv, L, S, D, mask, keys_per_split=None):
        q, k, v = _normal((B, Hq, L, D), 10, dtype), _normal((B, Hkv, S, D), 11, dtype), _normal((B, Hkv, S, D), 12, dtype)
        if keys_per_split is None:
            return lambda b: b.attention(q, k, v, scale=D**-0.5, mask=mask)

        def forced(b):  # the decode kernel with small splits: its combine pass runs too
            if not hasattr(b, "kernel"):
                return b.attention(q, k, v, scale=D**-0.5, mask=mask)
            from fs_mlx.kernels.attention import attention_decode

            return attention_decode(b, q, k, v, scale=D**-0.5, keys_per_split=keys_per_split)
        return forced

    def swi(n):
        g, u = _normal((n,), 13, dtype, std=3.0), _normal((n,), 14, dtype)
        return lambda b: b.swiglu(g, u)

    def geg(n):
        g, u = _normal((n,), 13, dtype, std=3.0), _normal((n,), 14, dtype)
        return lambda b: b.geglu(g, u)

    def experts(N, k, E, out, inp, bits=None):  # mixture of experts: each row through its k experts
        x = _normal((N, 1, 1, inp), 17, dtype)
        idx = mx.random.randint(0, E, (N, k), key=mx.random.key(18)).astype(mx.int32)
        W = _normal((E, out, inp), 19, std=0.05)
        if bits is None:
            W = W.astype(dtype)
            return lambda b: b.gather_linear(x, W, idx)
        w, s, bi = mx.quantize(W, group_size=32, bits=bits)
        s, bi = s.astype(dtype), bi.astype(dtype)
        return lambda b: b.gather_quantized_matmul(x, w, s, bi, idx, group_size=32, bits=bits)

    def qmat(M, N, K, bits, swiglu=False):
        w, s, bi = mx.quantize(_normal((N, K), 15, std=0.05), group_size=32, bits=bits)
        s, bi = s.astype(dtype), bi.astype(dtype)
        x = _normal((M, K), 16, dtype)
        if swiglu:
            return lambda b: b.quantized_swiglu(x, w, s, bi, group_size=32, bits=bits)
        return lambda b: b.quantized_matmul(x, w, s, bi, transpose=True, group_size=32, bits=bits)

    return [
        ("rms_norm", "1 x 4 (inputs in constant memory)", rms(1, 4)),
        ("rms_norm", "3 x 1024 (Qwen3-0.6B hidden)", rms(3, 1024)),
        ("rms_norm", "1 x 5003 (two sweeps)", rms(1, 5003)),
        ("add_rms_norm", "1 x 4 (constant memory)", add_rms(1, 4)),
        ("add_rms_norm", "2 x 4096 (8B hidden)", add_rms(2, 4096)),
        ("qk_norm_rope", "q, k of 4 elements (constant memory)", qk(1, 1, 1, 1, 4, 3)),
        ("qk_norm_rope", "decode, Qwen3-0.6B heads, position 1000", qk(1, 1, 16, 8, 128, 1000)),
        ("qk_norm_rope", "prefill of 7, 8B heads", qk(1, 7, 32, 8, 128, 0)),
        ("attention", "decode, 2 splits of 32 keys, 1 head (combine inputs in constant memory)",
         attn(1, 1, 1, 1, 40, 16, None, keys_per_split=32)),
        ("attention", "decode, Qwen3-0.6B heads, 700 keys", attn(1, 16, 8, 1, 700, 128, None)),
        ("attention", "prefill of 20 after 30 cached, causal, 8B heads", attn(1, 32, 8, 20, 50, 128, "causal")),
        ("swiglu", "3 elements (constant memory)", swi(3)),
        ("swiglu", "3072 (Qwen3-0.6B MLP)", swi(3072)),
        ("geglu", "3 elements (constant memory)", geg(3)),
        ("geglu", "6912 (Gemma 3 1B MLP)", geg(6912)),
        ("gather_linear", "3 tokens x top-2 of 8 experts, 64 x 128", experts(3, 2, 8, 64, 128)),
        ("gather_quantized_matmul", "4-bit, 1 token x top-8 of 32 experts, 128 x 256",
         experts(1, 8, 32, 128, 256, bits=4)),
        ("quantized_matmul", "4-bit 1 x 32 weight: 4 words (constant memory)", qmat(1, 1, 32, 4)),
        ("quantized_matmul", "4-bit decode, 1024 x 1024", qmat(1, 1024, 1024, 4)),
        ("quantized_matmul", "8-bit prefill of 40, 256 x 512", qmat(40, 256, 512, 8)),
        ("quantized_swiglu", "4-bit decode, 2 x 256 x 512", qmat(1, 512, 512, 4, swiglu=True)),
    ]


def _as_list(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _rel_err(out: mx.array, ref: mx.array, dtype) -> float:
    o = np.array(out.astype(mx.float32))
    r = np.array(ref.astype(dtype).astype(mx.float32))  # the best the dtype can hold
    return float(np.abs(o - r).max() / max(float(np.abs(r).max()), 1e-6))


def _median_ms(fn, repeats=20) -> float:
    mx.eval(fn())  # compiled and warm
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        mx.eval(fn())
        mx.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def check_kernels(on_metal: bool, dtypes=(mx.float32, mx.float16)) -> list[Check]:
    from fs_mlx.kernels import MetalBackend
    from fs_mlx.model.backends import MLXBackend, ReferenceBackend

    kernels, reference, mlx_ops = MetalBackend(executor=not on_metal), ReferenceBackend(), MLXBackend()
    checks = []
    for dtype in dtypes:
        for op, case, run in _cases(dtype):
            c = Check(op, case, str(dtype).split(".")[-1], ok=False)
            try:
                outs = [mx.array(o) for o in _as_list(run(kernels))]
                mx.eval(outs)
                refs = _as_list(run(reference))
                errs = [_rel_err(o, r, dtype) for o, r in zip(outs, refs)]
                c.max_err = max(errs)
                # rtol and atol of the tests, over the output's scale: 2x for the max-norm form
                c.ok = all(o.shape == r.shape and o.dtype == dtype for o, r in zip(outs, refs)) and \
                    c.max_err <= 2 * TOL[dtype]
                if on_metal:
                    c.kernel_ms = _median_ms(lambda: run(kernels))
                    c.mlx_ms = _median_ms(lambda: run(mlx_ops))
            except Exception as e:  # a kernel that does not compile is a finding, not a crash
                c.error = "".join(traceback.format_exception_only(type(e), e)).strip()[:2000]
            checks.append(c)
    return checks


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "mlx": mx.__version__}
    try:
        from importlib.metadata import version

        info["fs-mlx"] = version("fs-mlx")
    except Exception:
        info["fs-mlx"] = "(not installed: a source checkout)"
    if mx.metal.is_available():
        try:
            d = mx.metal.device_info()
            info["gpu"] = d.get("device_name", "?")
            info["memory_gb"] = round(d.get("memory_size", 0) / 2**30, 1)
        except Exception:
            info["gpu"] = "Metal (device info unavailable)"
    else:
        from fs_mlx.msl.compiler import find_compiler

        try:
            info["executor_compiler"] = find_compiler()[1]
        except Exception as e:
            info["executor_compiler"] = f"missing: {e}"
    return info


def run_bench(model: str | None) -> dict:
    """A short `fsx bench --compare mlx-lm` on the default model, as JSON."""
    cmd = [sys.executable, "-m", "fs_mlx", "bench", "--compare", "mlx-lm", "-p", "64", "-g", "32", "-r", "1", "--json"]
    if model:
        cmd.insert(4, model)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip()[-2000:], "command": " ".join(cmd[1:])}
    import json

    return {"command": "fsx " + " ".join(cmd[3:]), "result": json.loads(proc.stdout)}


def doctor(bench: bool = True, model: str | None = None) -> Report:
    on_metal = mx.metal.is_available()
    report = Report(machine(), "metal" if on_metal else "msl (executor)")
    if not on_metal:
        report.notes.append("No Metal on this machine: the kernels ran through the MSL executor "
                            "(the same sources, on the CPU). Timings and the benchmark need a Mac.")
    report.checks = check_kernels(on_metal)
    if bench and on_metal:
        report.bench = run_bench(model)
    return report


def format_report(r: Report) -> str:
    lines = ["fsx doctor", ""]
    for k, v in r.machine.items():
        lines.append(f"  {k}: {v}")
    lines += ["", f"kernels built by: {r.backend}"] + [f"  note: {n}" for n in r.notes] + [""]
    lines.append(f"  {'op':17s} {'dtype':8s} {'result':6s} {'max err':>9s} {'kernel ms':>10s} {'mlx ms':>8s}  case")
    for c in r.checks:
        res = "ok" if c.ok else "FAIL"
        err = f"{c.max_err:.1e}" if c.max_err is not None else "-"
        km = f"{c.kernel_ms:.3f}" if c.kernel_ms is not None else "-"
        mm = f"{c.mlx_ms:.3f}" if c.mlx_ms is not None else "-"
        lines.append(f"  {c.op:17s} {c.dtype:8s} {res:6s} {err:>9s} {km:>10s} {mm:>8s}  {c.case}")
        if c.error:
            lines += ["      " + ln for ln in c.error.splitlines()[:12]]
    failed = [c for c in r.checks if not c.ok]
    lines += ["", f"{len(r.checks) - len(failed)} of {len(r.checks)} checks passed"]
    if r.bench is not None:
        lines += ["", "benchmark: " + r.bench.get("command", "")]
        if "error" in r.bench:
            lines.append("  failed: " + r.bench["error"])
        else:
            import json

            lines.append("  " + json.dumps(r.bench["result"])[:4000])
    lines += ["", "Paste this report into an issue at the project's tracker."]
    return "\n".join(lines)


def as_json(r: Report) -> dict:
    return {"ok": r.ok, **asdict(r)}
