"""Reading safetensors checkpoints: one file or many shards.

A safetensors file is an 8-byte little-endian header length, a JSON header
({name: {dtype, shape, data_offsets}}), then the raw tensor bytes. We read
and check the header ourselves before handing the file to `mx.load`, so a
truncated download or a hand-edited file fails with a message that names the
tensor and the file, and `fsx inspect` can describe a 60 GB checkpoint without
reading its weights.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from ..errors import FsxError

DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the format's own limit


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # safetensors spelling: "BF16", "F32", "U32", ...
    shape: tuple[int, ...]
    file: Path
    offset: int = 0  # where its bytes begin in the file (header included)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and check one safetensors header against the file's real size."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise FsxError(f"{path}: truncated safetensors file ({size} bytes, no header)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise FsxError(
                    f"{path}: not a safetensors file or truncated "
                    f"(header claims {n} bytes, file has {size})"
                )
            header = json.loads(f.read(n))
    except OSError as e:
        raise FsxError(f"{path}: cannot read: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise FsxError(f"{path}: malformed safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise FsxError(f"{path}: malformed safetensors header (not a JSON object)")

    data_size = size - 8 - n
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = meta["dtype"], tuple(int(s) for s in meta["shape"])
            begin, end = (int(o) for o in meta["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise FsxError(f"{path}: tensor {name!r} has a malformed header entry") from None
        if dtype not in DTYPE_BYTES:
            raise FsxError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
        info = TensorInfo(name, dtype, shape, path, 8 + n + begin)
        if end - begin != info.nbytes or begin < 0:
            raise FsxError(
                f"{path}: tensor {name!r} is {end - begin} bytes on disk but its "
                f"shape {list(shape)} {dtype} needs {info.nbytes}"
            )
        if end > data_size:
            raise FsxError(
                f"{path}: truncated: tensor {name!r} ends at byte {8 + n + end}, "
                f"file has {size}"
            )
        tensors[name] = info
    return tensors


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a checkpoint, in the order the index names them."""
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise FsxError(f"{index}: malformed (expected a 'weight_map' object)") from None
        files = [model_dir / f for f in dict.fromkeys(weight_map.values())]
        for f in files:
            if not f.is_file():
                raise FsxError(f"{index}: names shard {f.name}, which is missing")
        return files
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FsxError(f"{model_dir}: no *.safetensors weights found")
    return files


def tensor_index(model_dir: Path) -> dict[str, TensorInfo]:
    """Every tensor of the checkpoint, from the headers alone (no weights read)."""
    index: dict[str, TensorInfo] = {}
    for f in weight_files(model_dir):
        for name, info in read_header(f).items():
            if name in index:
                raise FsxError(f"tensor {name!r} appears in both {index[name].file} and {f}")
            index[name] = info
    return index


def load_tensors(model_dir: Path) -> tuple[dict[str, mx.array], dict[str, TensorInfo]]:
    """Checked headers first, then the tensors themselves (lazily, via mx.load).

    Why not the `safetensors` package's `safe_open(framework="mlx")`: it goes
    through NumPy, which has no bfloat16 ("data type 'bfloat16' not understood",
    safetensors 0.8.0), and most checkpoints are bfloat16; `mx.load` reads every
    dtype, lazily: a tensor's bytes are read when it is first evaluated.
    """
    index = tensor_index(model_dir)
    tensors: dict[str, mx.array] = {}
    for f in dict.fromkeys(info.file for info in index.values()):
        try:
            tensors.update(mx.load(str(f)))
        except (RuntimeError, ValueError) as e:
            raise FsxError(f"{f}: cannot load: {e}") from None
    return tensors, index


# --- one rank's slice, read from disk -------------------------------------------

# safetensors dtype -> (numpy dtype to read the bytes as, MLX dtype they are)
_NUMPY = {"F32": ("<f4", mx.float32), "F16": ("<f2", mx.float16), "BF16": ("<u2", mx.bfloat16),
          "U32": ("<u4", mx.uint32), "I32": ("<i4", mx.int32), "I64": ("<i8", mx.int64),
          "U8": ("u1", mx.uint8), "I8": ("i1", mx.int8)}


def read_slice(info: TensorInfo, axis: int, start: int, stop: int) -> mx.array:
    """info's tensor, only indices start:stop along `axis`, read straight from the file.

    `mx.load` reads a whole tensor even when only a slice of it is used (and the
    slice keeps the whole buffer alive). Under tensor parallelism each rank needs
    1/N of each large matrix, so it maps the file and copies out just its rows
    (axis 0: one contiguous byte range) or its columns (axis 1: one range per row;
    the page cache may read the neighbouring bytes, the process does not hold them).
    """
    import numpy as np

    if info.dtype not in _NUMPY:
        raise FsxError(f"{info.file}: tensor {info.name!r}: cannot slice dtype {info.dtype}")
    np_dtype, mx_dtype = _NUMPY[info.dtype]
    data = np.memmap(info.file, dtype=np_dtype, mode="r", offset=info.offset, shape=info.shape)
    index = [slice(None)] * len(info.shape)
    index[axis] = slice(start, stop)
    part = np.ascontiguousarray(data[tuple(index)])  # the only copy: this rank's slice
    del data
    return mx.array(part).view(mx_dtype) if info.dtype == "BF16" else mx.array(part)
