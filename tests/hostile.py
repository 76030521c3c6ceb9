"""Hostile inputs, built from a good tiny checkpoint: the helpers the hostile-input
tests and bench/fuzz.py share (docs/trust.md).

Each mutation takes a copy of a checkpoint folder and breaks it the way an
attacker (or a bad exporter) would; the tests then run `fsx` on it and expect
one clear line, quickly, never "internal error".
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
from contextlib import contextmanager
from pathlib import Path


def copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


# --- safetensors ---------------------------------------------------------------------

def read_safetensors(path: Path) -> tuple[dict, bytes]:
    """(header dict, data bytes) of a safetensors file."""
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def write_safetensors(path: Path, header: dict | bytes, data: bytes) -> None:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def edit_header(path: Path, edit) -> None:
    """Rewrite a safetensors header in place with `edit(header)` (the data bytes kept)."""
    header, data = read_safetensors(path)
    edit(header)
    write_safetensors(path, header, data)


def tensors_by_offset(header: dict) -> list[str]:
    return sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"])


def overlap(header: dict) -> None:
    """The second tensor starts inside the first (its length kept)."""
    a, b = tensors_by_offset(header)[:2]
    begin, end = header[b]["data_offsets"]
    header[b]["data_offsets"] = [begin - 4, end - 4]


def alias(header: dict) -> None:
    """Two same-sized tensors share the same bytes."""
    names = tensors_by_offset(header)
    sizes = {}
    for n in names:
        begin, end = header[n]["data_offsets"]
        if end - begin in sizes:
            header[n]["data_offsets"] = list(header[sizes[end - begin]]["data_offsets"])
            return
        sizes[end - begin] = n
    raise AssertionError("no two tensors of the same size")


def relabel_one(new_dtype: str):
    def edit(header: dict) -> None:
        name = next(k for k in tensors_by_offset(header) if header[k]["dtype"] in ("F16", "BF16"))
        header[name]["dtype"] = new_dtype
    return edit


def deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# --- running with bounds -----------------------------------------------------------------

@contextmanager
def time_limit(seconds: int):
    """Raise TimeoutError if the body runs longer (SIGALRM also interrupts a blocking open)."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s (a hang)")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def make_fifo(path: Path) -> None:
    if path.exists():
        path.unlink()
    os.mkfifo(path)
