"""Soak test: many requests of random shapes against one `fsx serve`, then check it is whole.

    python bench/serve_soak.py [--model golden/checkpoints/qwen3-tiny] [--requests 200] [--workers 8]

Each request is, at random: a streaming or non-streaming chat or completion
with a random prompt length, max_tokens and sampling (70 %); a stream the
client drops after a few chunks (15 %); or a malformed body (15 %). At the end:

  - every well-formed request that was not dropped got a complete answer
    (streams: a finish_reason and [DONE]; `ignore_eos` replies exactly max_tokens long);
  - every malformed one got a 4xx with OpenAI's error object;
  - the server is idle again (/health: nothing waiting or running) and its
    memory is back near its idle level (MLX's active memory: the prefix
    cache's own bytes are reported separately; process RSS for reference);
  - its log has no traceback and no 5xx line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import free_port, wait_ready  # noqa: E402

WORDS = "the a cat sat on mat sea light keeper story river stone morning bread cook moon".split()
MALFORMED = [
    "{not json", "[]", '{"model": "x", "messages": [{"role": "user", "content": "hi"}]}',
    '{"model": "M", "messages": "hi"}', '{"model": "M", "messages": [{"role": "user", "content": "hi"}], '
    '"temperature": "hot"}', '{"model": "M", "prompt": "hi", "max_tokens": -5}',
    '{"model": "M", "prompt": "hi", "max_tokens": 100000000}', '{"model": "M", "prompt": [1, -2]}',
    '{"model": "M", "messages": [{"role": "user", "content": "hi"}], "top_p": 7}',
]


def call(port: int, path: str, body: str, drop_after: int | None = None) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    out = {"status": r.status}
    if r.getheader("Content-Type", "").startswith("text/event-stream"):
        chunks, done = [], False
        for raw in r:
            line = raw.decode().strip()
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data:"):
                chunks.append(json.loads(line[5:]))
                if drop_after is not None and len(chunks) >= drop_after:
                    conn.sock.close()  # the client goes away mid-stream
                    break
        out.update(chunks=chunks, done=done)
    else:
        out["json"] = json.loads(r.read() or b"null")
    conn.close()
    return out


def one(port: int, model: str, rng: random.Random) -> tuple[str, bool, str]:
    """(kind, ok, detail) for one random request."""
    roll = rng.random()
    if roll < 0.15:
        body = rng.choice(MALFORMED).replace('"M"', json.dumps(model))
        path = rng.choice(["/v1/chat/completions", "/v1/completions"])
        r = call(port, path, body)
        ok = 400 <= r["status"] < 500 and "error" in (r.get("json") or {})
        return "malformed", ok, f"{r['status']}"
    chat = rng.random() < 0.5
    prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 200)))
    n = rng.randint(1, 64)
    body = {"model": model, "max_tokens": n, "ignore_eos": True, "temperature": rng.choice([0, 0.7, 1.0]),
            "seed": rng.randint(0, 9)}
    body.update({"messages": [{"role": "user", "content": prompt}]} if chat else {"prompt": prompt})
    path = "/v1/chat/completions" if chat else "/v1/completions"
    if roll < 0.30:
        r = call(port, path, json.dumps({**body, "max_tokens": 64, "stream": True}), drop_after=rng.randint(1, 4))
        return "dropped", r["status"] == 200, ""
    stream = rng.random() < 0.5
    r = call(port, path, json.dumps({**body, "stream": stream, "stream_options": {"include_usage": True}}
                                    if stream else body))
    if r["status"] != 200:
        return "normal", False, f"status {r['status']}"
    if stream:
        finishes = [c["choices"][0]["finish_reason"] for c in r["chunks"] if c.get("choices")
                    and c["choices"][0].get("finish_reason")]
        usage = r["chunks"][-1].get("usage") if r["chunks"] else None
        ok = r["done"] and finishes == ["length"] and usage and usage["completion_tokens"] == n
        return "normal", bool(ok), f"finishes {finishes} usage {usage}"
    j = r["json"]
    ok = j["choices"][0]["finish_reason"] == "length" and j["usage"]["completion_tokens"] == n
    return "normal", ok, json.dumps(j["usage"])


def health(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/health")
    return json.loads(conn.getresponse().read())


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "golden" / "checkpoints" / "qwen3-tiny"))
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    port = free_port()
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "fs_mlx", "serve", args.model, "--port", str(port),
                             "--model-id", "soak", "--max-batch", "8", "--max-queue", "256"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(port, proc)
        warm = random.Random(-1)
        for _ in range(10):
            one(port, "soak", warm)
        idle = health(port)
        idle_rss = rss_mb(proc.pid)

        rngs = [random.Random(args.seed * 100_000 + i) for i in range(args.requests)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            results = list(pool.map(lambda r: one(port, "soak", r), rngs))
        wall = time.perf_counter() - t0
        deadline = time.monotonic() + 30
        while (h := health(port))["running"] or h["waiting"] or h["prefilling"]:
            assert time.monotonic() < deadline, f"the server never went idle: {h}"
            time.sleep(0.2)
        end_rss = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    log.seek(0)
    lines = log.read().splitlines()
    bad_lines = [x for x in lines if "Traceback" in x or "ERROR" in x or '" 5' in x]

    kinds = {}
    for kind, ok, detail in results:
        k = kinds.setdefault(kind, [0, 0, []])
        k[0] += 1
        k[1] += ok
        if not ok:
            k[2].append(detail)
    print(f"{args.requests} requests in {wall:.1f} s, {args.workers} at a time; model {args.model}")
    for kind, (n, ok, failures) in kinds.items():
        print(f"  {kind:9s} {ok}/{n} as expected" + (f"; failures: {failures[:3]}" if failures else ""))
    outside = [round(x["active_memory_mb"] - x["prefix_cache_mb"], 1) for x in (idle, h)]
    print(f"  MLX active memory outside the prefix cache: idle {outside[0]} MB -> after {outside[1]} MB; "
          f"the prefix cache {idle['prefix_cache_mb']} -> {h['prefix_cache_mb']} MB (its budget: 512 MB); "
          f"process RSS {idle_rss:.0f} -> {end_rss:.0f} MB")
    print(f"  server log: {len(lines)} lines, {len(bad_lines)} with a traceback, ERROR or 5xx"
          + (f": {bad_lines[:3]}" if bad_lines else ""))
    print(f"  peak batch {h['peak_batch']}, decode steps {h['decode_steps']}")
    if any(n != ok for n, ok, _ in kinds.values()) or bad_lines:
        sys.exit(1)


if __name__ == "__main__":
    main()
