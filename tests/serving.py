"""A live `fsx serve` for tests: the app on a free 127.0.0.1 port, uvicorn in a thread."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from fs_mlx import generate
from fs_mlx.apps.serve import create_app, make_scheduler
from fs_mlx.generation.chat import render

GOLDEN = Path(__file__).parent.parent / "golden" / "checkpoints"
MODEL_ID = "qwen3-tiny"


class Http:
    """Plain HTTP with the standard library, for what the openai client will not send."""

    def __init__(self, base_url: str):
        host, port = base_url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)

    def request(self, method: str, path: str, body: dict | str | None = None):
        """(status, headers, parsed JSON body)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        data = body if isinstance(body, str) or body is None else json.dumps(body)
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        out = r.status, r.headers, json.loads(r.read() or b"null")  # headers: case-insensitive
        conn.close()
        return out

    @contextmanager
    def stream(self, path: str, body: dict):
        """Start a streaming POST; yields (status, a function returning the next SSE line); closes after."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = conn.getresponse()

        def next_event() -> str:
            while True:
                line = r.readline().decode().strip()
                if line:
                    return line

        try:
            yield r.status, next_event
        finally:
            conn.sock.close() if conn.sock else None  # a client going away mid-stream
            conn.close()


@contextmanager
def live_server(lm, **options):
    """The app on a free port, uvicorn in a thread; yields (base_url, scheduler)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scheduler, settings = make_scheduler(lm, MODEL_ID, **options)
    scheduler.start()
    server = uvicorn.Server(uvicorn.Config(create_app(scheduler, settings), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", scheduler
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        scheduler.stop()


def chat_ids(lm, messages, **kwargs) -> list[int]:
    """The prompt the server builds for `messages` (the template writes BOS itself)."""
    return lm.tokenizer.encode(render(lm.tokenizer, messages, add_generation_prompt=True, **kwargs),
                               add_special_tokens=False)


def alone(lm, ids, n, **kw):
    text, tokens, last = generate(lm, ids, max_tokens=n, **kw)
    return text, tokens, last.finish_reason


