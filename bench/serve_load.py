"""Load test: N concurrent streaming clients against `fsx serve` and `mlx_lm.server`.

    python bench/serve_load.py [--model MODEL] [--clients 1,2,4,8] [--max-tokens 32]

Both servers run the same checkpoint (a .gguf is written out once as an MLX
directory for mlx-lm, as `fsx bench --compare mlx-lm` does) and stay up side
by side; for each N the engines take turns, fsx first. Each client sends one
streaming chat request (its own question, greedy, `max_tokens`) at the same
moment; we time every chunk as it arrives:

    aggregate tok/s   all clients' generated tokens / wall time of the round
    TTFT              request sent -> first content chunk, per request (p50, p95)
    ITL               gap between consecutive content chunks, all requests (p50, p95)

Tokens are counted as content chunks (both servers send one per token; a
chunk held back for a stop string or a partial character would merge two).
Standard library only on the client side, so the client costs little CPU.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUESTIONS = [
    "Write a short story about a lighthouse keeper.", "Explain how a bicycle stays upright.",
    "List some facts about the moon.", "Describe a busy market in the morning.",
    "Why is the sky blue? Explain simply.", "Write a poem about autumn leaves.",
    "Give advice to someone learning to cook.", "Describe the water cycle step by step.",
    "Tell me about the history of paper.", "What makes a good friend?",
    "Describe a thunderstorm over the sea.", "Explain what a computer program is.",
    "Write a letter to a future self.", "How do bees make honey?",
    "Describe your ideal weekend.", "What is the best way to learn a language?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v1/models")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the server did not start")


def one_request(port: int, model: str, question: str, max_tokens: int, out: dict) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": question}], "stream": True,
            "max_tokens": max_tokens, "temperature": 0.0}
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    times = []
    for raw in r:
        line = raw.decode().strip()
        if not line.startswith("data:") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[5:])
        choices = chunk.get("choices") or []
        if choices and (choices[0].get("delta") or {}).get("content"):
            times.append(time.perf_counter())
    conn.close()
    out.update(start=t0, times=times, status=r.status)


def run_round(port: int, model: str, n: int, max_tokens: int) -> dict:
    results = [{} for _ in range(n)]
    threads = [threading.Thread(target=one_request, args=(port, model, QUESTIONS[i % len(QUESTIONS)],
                                                          max_tokens, results[i])) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ttft = [r["times"][0] - r["start"] for r in results if r.get("times")]
    itl = [b - a for r in results for a, b in zip(r.get("times", []), r.get("times", [])[1:])]
    tokens = sum(len(r.get("times", [])) for r in results)
    return {"clients": n, "tokens": tokens, "wall_s": wall, "agg_tps": tokens / wall,
            "ttft_p50_ms": 1000 * pct(ttft, 50), "ttft_p95_ms": 1000 * pct(ttft, 95),
            "itl_p50_ms": 1000 * pct(itl, 50), "itl_p95_ms": 1000 * pct(itl, 95),
            "errors": sum(r.get("status") != 200 for r in results)}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="fsx MODEL (default: the default model)")
    ap.add_argument("--clients", default="1,2,4,8")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--engines", default="fsx,mlx-lm")
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    engines = args.engines.split(",")

    from fs_mlx.formats.hub import DEFAULT_MODEL, resolve

    model = args.model or DEFAULT_MODEL
    path = resolve(model).path
    servers = {}
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    try:
        for engine in engines:
            port = free_port()
            if engine == "fsx":
                cmd = [sys.executable, "-m", "fs_mlx", "serve", str(path), "--port", str(port),
                       "--max-batch", str(max(clients)), "--model-id", "bench"]
                name = "bench"
            else:
                from fs_mlx.apps.bench_engines import mlx_lm_checkpoint

                name = mlx_lm_checkpoint(Path(path), lambda m: print(m, file=sys.stderr))
                cmd = [sys.executable, "-m", "mlx_lm", "server", "--model", name, "--port", str(port),
                       "--decode-concurrency", str(max(clients)), "--log-level", "WARNING"]
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            servers[engine] = (proc, port, name)
            wait_ready(port, proc)
            run_round(port, name, 1, 4)  # warm-up: first-call costs out of the measurement
            print(f"{engine} ready on port {port}", file=sys.stderr)

        rows = []
        for n in clients:
            for engine in engines:
                proc, port, name = servers[engine]
                r = {"engine": engine, **run_round(port, name, n, args.max_tokens)}
                rows.append(r)
                print(f"{engine:7s} N={n:2d}  {r['agg_tps']:6.1f} tok/s  TTFT p50 {r['ttft_p50_ms']:6.0f} "
                      f"p95 {r['ttft_p95_ms']:6.0f} ms  ITL p50 {r['itl_p50_ms']:5.0f} p95 "
                      f"{r['itl_p95_ms']:5.0f} ms  ({r['tokens']} tok, {r['errors']} errors)", flush=True)
    finally:
        for proc, _, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)

    print("\n| engine | clients | aggregate tok/s | TTFT p50 / p95 ms | ITL p50 / p95 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['engine']} | {r['clients']} | {r['agg_tps']:.1f} | {r['ttft_p50_ms']:.0f} / "
              f"{r['ttft_p95_ms']:.0f} | {r['itl_p50_ms']:.0f} / {r['itl_p95_ms']:.0f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"model": str(path), "max_tokens": args.max_tokens,
                                              "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
