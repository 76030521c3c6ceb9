"""Issue 15's Qwen3-0.6B-shape targets, in one command: fsx against llama.cpp (Q4_0, Q8_0) and mlx-lm (float32).

    python bench/qwen3_shape.py                 # everything: 12.5 min on 2 busy cores (+ ~3 min set-up, once)
    python bench/qwen3_shape.py --only q4_0     # one entry (q4_0, q8_0, f32)
    python bench/qwen3_shape.py --table         # the table again, from the saved reports

The targets (issue 15): on the same machine, side by side in one run,
  - fsx decode >= 40 % of llama.cpp's on a Q4_0 and on a Q8_0 GGUF of Qwen3-0.6B's shape;
  - fsx float32 decode >= 2x mlx-lm float32 on the same float32 checkpoint.

Set-up, once, into --work (default /tmp/fsx-bench, ~3.4 GB): a random-weight checkpoint of
Qwen3-0.6B's shape in float32 (bench/random_checkpoint.py) and the same weights as GGUF
Q4_0 and Q8_0 (bench/gguf_checkpoint.py: llama.cpp's converter's metadata, every matrix
in the one type, as `llama-quantize --pure`). Then three `fsx bench` runs, each engine
alternating with fsx inside the run:

    fsx bench qwen3-0.6b-q4_0.gguf -p 64 -g 32 -r 3 --compare llama.cpp
    fsx bench qwen3-0.6b-q8_0.gguf -p 64 -g 32 -r 3 --compare llama.cpp
    fsx bench qwen3-0.6b-f32       -p 64 -g 32 -r 3 --compare mlx-lm:float32

Reports go to --results (default bench/results/<os>-<arch>-<cpus>cpu/): qwen3-shape-q4_0.json,
qwen3-shape-q8_0.json, qwen3-shape-f32.json and machine-qwen3-shape.txt (the machine, the
versions, the load average before and after each entry, and the table printed at the end;
machine-qwen3-shape-<entries>.txt for an --only subset).
llama.cpp's llama-bench must be built first (bench/build_llama_cpp.sh); this checks before
spending any time. Random weights measure what the real ones would: speed depends on shapes
and types, not on what the weights say.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

# entry -> (what fsx loads, the engine it is compared with, the decode ratio the issue asks for)
ENTRIES = {
    "q4_0": ("qwen3-0.6b-q4_0.gguf", "llama.cpp", 0.40),
    "q8_0": ("qwen3-0.6b-q8_0.gguf", "llama.cpp", 0.40),
    "f32": ("qwen3-0.6b-f32", "mlx-lm:float32", 2.0),
}
SOURCE = "qwen3-0.6b-f32"  # the float32 checkpoint every file is made from


def default_results() -> Path:
    return ROOT / "bench" / "results" / f"{platform.system().lower()}-{platform.machine()}-{os.cpu_count()}cpu"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


# --- set-up ---------------------------------------------------------------------------

def prepare(work: Path, entries: list[str]) -> None:
    """The float32 checkpoint and the GGUFs the entries need, each written once."""
    import gguf_checkpoint
    import random_checkpoint

    work.mkdir(parents=True, exist_ok=True)
    src = work / SOURCE
    if not (src / "config.json").is_file():
        print(f"== writing {src} (random weights, Qwen3-0.6B's shape, float32)", file=sys.stderr)
        random_checkpoint.write("qwen3-0.6b", src, dtype="float32")
    for e in entries:
        target = work / ENTRIES[e][0]
        if target.suffix == ".gguf" and not target.is_file():
            print(f"== writing {target} from {src}", file=sys.stderr)
            gguf_checkpoint.write(src, target, e, name="qwen3-0.6b-random")


def preflight(entries: list[str]) -> None:
    """Fail in seconds, not after an hour: the other engines must be there."""
    if any(ENTRIES[e][1] == "llama.cpp" for e in entries):
        from fs_mlx.apps.llama_bench import find_llama_bench
        from fs_mlx.errors import FsxError

        try:
            find_llama_bench()
        except FsxError as err:
            sys.exit(f"error: {err}")
    if any(ENTRIES[e][1].startswith("mlx-lm") for e in entries):
        import importlib.util

        if importlib.util.find_spec("mlx_lm") is None:
            sys.exit("error: the f32 entry compares with mlx-lm: pip install -e .[bench]")


def llama_cpp_version() -> str:
    try:
        from fs_mlx.apps.llama_bench import find_llama_bench

        binary = find_llama_bench()
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
        line = (out.stdout + out.stderr).strip().splitlines()
        return f"{binary} ({line[0] if line else 'version unknown'})"
    except Exception as err:  # noqa: BLE001 - a version line is informative, never fatal
        return f"unavailable ({err})"


def machine_lines(entries: list[str]) -> list[str]:
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--", "fs_mlx", "cpu"]).returncode
    cpu = platform.processor()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import fs_mlx.openblas as openblas  # first: it preloads a system OpenBLAS before mlx.core loads
    from fs_mlx import cpu as cpu_kernels

    import mlx.core as mx

    lines = [
        f"recorded: {datetime.now(timezone.utc):%Y-%m-%dT%H:%MZ}",
        f"command: python bench/qwen3_shape.py {' '.join(sys.argv[1:])}".rstrip(),
        f"commit: {git.stdout.strip()}{' (+ local changes)' if dirty else ''}",
        f"{platform.system()} {platform.release()} {platform.machine()}",
        f"model name: {cpu}",
        f"cpus: {os.cpu_count()}",
        f"blas: {openblas.STATUS}",
        f"cpu matmuls: {cpu_kernels.STATUS}",
        f"mlx {mx.__version__} {mx.default_device()}",
    ]
    if any(ENTRIES[e][1].startswith("mlx-lm") for e in entries):
        from importlib.metadata import version

        lines.append(f"mlx-lm {version('mlx-lm')}")
    if any(ENTRIES[e][1] == "llama.cpp" for e in entries):
        lines.append(f"llama.cpp: {llama_cpp_version()}")
    return lines


# --- the runs ---------------------------------------------------------------------------

def bench_command(model: Path, compare: str, a) -> list[str]:
    cmd = [sys.executable, "-m", "fs_mlx", "bench", str(model), "-p", str(a.prompt), "-g", str(a.gen),
           "-r", str(a.repeat), "--compare", compare]
    return cmd + (["--bandwidth", str(a.bandwidth)] if a.bandwidth else [])


def run_entry(entry: str, a, log: list[str]) -> None:
    model_name, compare, _ = ENTRIES[entry]
    out = a.results / f"qwen3-shape-{entry}.json"
    cmd = bench_command(a.work / model_name, compare, a) + ["--out", str(out)]
    log.append(f"{entry}: load average before {load_average()}")
    print(f"== {entry}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(cmd, env=env)
    took = time.perf_counter() - t0
    log.append(f"{entry}: load average after {load_average()}, took {took:.0f} s, exit {done.returncode}")
    if done.returncode != 0:
        raise SystemExit(f"error: fsx bench failed on {entry} (exit {done.returncode})")


# --- the table ----------------------------------------------------------------------------

def summarize(reports: dict[str, dict]) -> list[dict]:
    """One line per entry: fsx and the other engine's medians, the ratios, the target and the verdict."""
    lines = []
    for entry, rep in reports.items():
        target = ENTRIES[entry][2]
        fsx = next(r for r in rep["results"] if r["engine"] == "fsx")
        other = next(r for r in rep["results"] if r is not fsx)
        ratio = other["ratio"]["generation_tps"]
        lines.append({
            "entry": entry, "other": other["engine"], "other_dtype": other["dtype"], "fsx_dtype": fsx["dtype"],
            "fsx": fsx, "them": other, "target": target,
            "decode_ratio": ratio, "decode_ratio_paired": (other.get("ratio_paired") or {}).get("generation_tps"),
            "prompt_ratio": other["ratio"]["prompt_tps"],
            "met": ratio is not None and ratio >= target,
            "load_average": rep["machine"].get("load_average"),
        })
    return lines


def _cell(row: dict, metric: str) -> str:
    s = row["spread"][metric]
    f = (lambda v: f"{v:.0f}") if s["max"] >= 100 else (lambda v: f"{v:.2f}")
    return f"{f(s['median'])} ({f(s['min'])}-{f(s['max'])})"


def format_table(lines: list[dict]) -> str:
    head = (f"{'entry':<6}{'engine':<11}{'dtype':<9}{'prompt tok/s':<22}{'decode tok/s':<22}"
            f"{'MB/token':>9}  fsx/this decode (paired), prompt   target      met")
    out = [head]
    for l in lines:
        f, t = l["fsx"], l["them"]
        for who, row in (("fsx", f), (l["other"], t)):
            out.append(f"{l['entry']:<6}{who:<11}{row['dtype']:<9}{_cell(row, 'prompt_tps'):<22}"
                       f"{_cell(row, 'generation_tps'):<22}{row['bytes_per_token'] / 1e6:>9.0f}"
                       + ("" if who == "fsx" else
                          f"  {l['decode_ratio']:.2f}x ({l['decode_ratio_paired'] or float('nan'):.2f}x), "
                          f"{l['prompt_ratio']:.2f}x".ljust(36)
                          + f"decode >= {l['target']:.2f}x  {'yes' if l['met'] else 'NO'}"))
    loads = ", ".join(f"{l['entry']} {' '.join(f'{x:.1f}' for x in l['load_average'])}"
                      for l in lines if l["load_average"])
    out.append("median (min-max) over the repeats; ratios are fsx / the other engine's medians, paired = "
               "median of per-repeat ratios")
    if loads:
        out.append(f"load average at the end of each entry (1, 5, 15 min): {loads}")
    return "\n".join(out)


def read_reports(results: Path, entries: list[str]) -> dict[str, dict]:
    reports = {}
    for e in entries:
        p = results / f"qwen3-shape-{e}.json"
        if p.is_file():
            reports[e] = json.loads(p.read_text())
    return reports


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(ENTRIES), help="comma-separated entries: q4_0,q8_0,f32")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("WORK", "/tmp/fsx-bench")),
                    help="where the checkpoints are written once (~3.4 GB)")
    ap.add_argument("--results", type=Path, default=default_results())
    ap.add_argument("-p", "--prompt", type=int, default=64)
    ap.add_argument("-g", "--gen", type=int, default=32)
    ap.add_argument("-r", "--repeat", type=int, default=3)
    ap.add_argument("--bandwidth", type=float, help="GB/s, for fsx bench's roofline column")
    ap.add_argument("--table", action="store_true", help="only print the table of the saved reports")
    a = ap.parse_args(argv)
    entries = [e for e in a.only.split(",") if e]
    unknown = [e for e in entries if e not in ENTRIES]
    if unknown:
        sys.exit(f"error: unknown entries {', '.join(unknown)} (known: {', '.join(ENTRIES)})")
    if a.table:
        print(format_table(summarize(read_reports(a.results, entries))))
        return

    log = machine_lines(entries)  # first: its fs_mlx import is the one that may preload OpenBLAS
    preflight(entries)
    prepare(a.work, entries)
    a.results.mkdir(parents=True, exist_ok=True)
    for e in entries:
        run_entry(e, a, log)
    table = format_table(summarize(read_reports(a.results, entries)))
    # the whole set's file, or one per subset (a rerun of one entry keeps the others' record)
    machine = a.results / ("machine-qwen3-shape.txt" if entries == list(ENTRIES)
                           else f"machine-qwen3-shape-{'+'.join(entries)}.txt")
    machine.write_text("\n".join(log) + "\n\n" + table + "\n")
    print(table)
    print(f"reports in {a.results} (qwen3-shape-*.json, {machine.name})", file=sys.stderr)


if __name__ == "__main__":
    main()
