"""Reading safetensors checkpoints: one file or many shards.

A safetensors file is an 8-byte little-endian header length, a JSON header
({name: {dtype, shape, data_offsets}}), then the raw tensor bytes. We read
and check the header ourselves before handing the file to `mx.load`, so a
truncated download or a hand-edited file fails with a message that names the
tensor and the file, and `fsx inspect` can describe a 60 GB checkpoint without
reading its weights.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from ..errors import FsxError
from ..files import open_regular, parse_json, read_json

DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the format's own limit
MAX_DIMS = 8  # ggml's limit is 4; nothing real has more


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
    """Parse and check one safetensors header against the file's real size.

    The rules are the safetensors library's own (its `validate`): every tensor's
    byte extent is exactly its shape times its dtype's size, and the extents,
    sorted, tile the data section from its first byte to its last: no gaps, no
    overlaps, no two tensors sharing bytes, nothing past the end.
    """
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise FsxError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise FsxError(
                f"{path}: not a safetensors file or truncated "
                f"(header claims {n} bytes, file has {size})"
            )
        header = parse_json(f.read(n), f"{path}: safetensors header")
    if not isinstance(header, dict):
        raise FsxError(f"{path}: malformed safetensors header (not a JSON object)")

    data_size = size - 8 - n
    tensors, extents = {}, []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        where = f"{path}: tensor {name[:100]!r}"
        if not isinstance(meta, dict) or not {"dtype", "shape", "data_offsets"} <= meta.keys():
            raise FsxError(f"{where} has a malformed header entry (needs dtype, shape, data_offsets)")
        dtype, shape, offsets = meta["dtype"], meta["shape"], meta["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
            raise FsxError(f"{where} has unsupported dtype {str(dtype)[:20]!r}")
        if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(_is_count(d) for d in shape):
            raise FsxError(f"{where} has a malformed shape (a list of at most {MAX_DIMS} integers >= 0)")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
            raise FsxError(f"{where} has malformed data_offsets (two integers >= 0)")
        begin, end = offsets
        info = TensorInfo(name, dtype, tuple(shape), path, 8 + n + begin)
        if end - begin != info.nbytes:
            raise FsxError(
                f"{where} is {end - begin} bytes on disk but its "
                f"shape {list(shape)} {dtype} needs {info.nbytes}"
            )
        if end > data_size:
            raise FsxError(f"{path}: truncated: tensor {name[:100]!r} ends at byte {8 + n + end}, "
                           f"file has {size}")
        tensors[name] = info
        extents.append((begin, end, name))

    at = 0
    for begin, end, name in sorted(extents):
        if begin != at:
            what = "overlaps the previous tensor" if begin < at else f"leaves bytes {at}..{begin} unused"
            raise FsxError(f"{path}: tensor {name[:100]!r} (data_offsets [{begin}, {end}]) {what}; "
                           "a safetensors file's tensors must tile its data exactly")
        at = end
    if at != data_size:
        raise FsxError(f"{path}: {data_size - at} bytes after the last tensor; "
                       "a safetensors file's tensors must tile its data exactly")
    return tensors


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 62


def _inside(path: Path, model_dir: Path) -> bool:
    """Whether `path`, links followed, stays inside the model folder.

    huggingface_hub's cache keeps files as links from snapshots/<rev>/ to
    ../../blobs/: inside such a snapshot, the repo's cache folder is the fence.
    """
    root = model_dir.resolve()
    if root.parent.name == "snapshots":
        root = root.parent.parent
    return path.resolve().is_relative_to(root)


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a checkpoint, in the order the index names them.

    Shard names come from a file we did not write: each must be a plain relative
    path that stays inside the model folder (as transformers requires), never
    `../other/model.safetensors` or `/etc/passwd`.
    """
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json(index)
        weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise FsxError(f"{index}: malformed (expected a 'weight_map' object of file names)")
        files = []
        for name in dict.fromkeys(weight_map.values()):
            p = Path(name)
            if not name or p.is_absolute() or ".." in p.parts or not _inside(model_dir / p, model_dir):
                raise FsxError(f"{index}: shard path {name[:200]!r} leaves the model folder; "
                               "shards must be files inside it")
            if not (model_dir / p).exists():
                raise FsxError(f"{index}: names shard {name[:200]}, which is missing")
            files.append(model_dir / p)
        return files
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FsxError(f"{model_dir}: no *.safetensors weights found")
    for f in files:
        if not _inside(f, model_dir):
            raise FsxError(f"{f}: a link that leaves the model folder; weights must be files inside it")
    return files


def tensor_index(model_dir: Path) -> dict[str, TensorInfo]:
    """Every tensor of the checkpoint, from the headers alone (no weights read)."""
    index: dict[str, TensorInfo] = {}
    for f in weight_files(model_dir):
        for name, info in read_header(f).items():
            if name in index:
                raise FsxError(f"tensor {name!r} appears in both {index[name].file} and {f}")
            index[name] = info
    # No exporter mixes the two 16-bit floats: one of each is a relabelled tensor
    # (same bytes, other meaning: the values come out as garbage).
    halves = {d: n for n, t in index.items() if (d := t.dtype) in ("F16", "BF16")}
    if len(halves) == 2:
        raise FsxError(f"{model_dir}: tensor {halves['F16']} is F16 but {halves['BF16']} is BF16; "
                       "a checkpoint stores its 16-bit floats in one format (a relabelled tensor?)")
    return index


def load_tensors(model_dir: Path) -> tuple[dict[str, mx.array], dict[str, TensorInfo]]:
    """Checked headers first, then the tensors themselves (lazily, via mx.load).

    Why not the `safetensors` package's `safe_open(framework="mlx")`: it goes
    through NumPy, which has no bfloat16 ("data type 'bfloat16' not understood",
    safetensors 0.8.0), and most checkpoints are bfloat16; `mx.load` reads every
    dtype, lazily: a tensor's bytes are read when it is first evaluated.
    """
    index = tensor_index(model_dir)
    return load_indexed(index), index


def load_indexed(index: dict[str, TensorInfo]) -> dict[str, mx.array]:
    """The tensors of an already checked index (lazily, via mx.load)."""
    tensors: dict[str, mx.array] = {}
    for f in dict.fromkeys(info.file for info in index.values()):
        try:
            tensors.update(mx.load(str(f)))
        except (RuntimeError, ValueError) as e:
            raise FsxError(f"{f}: cannot load: {e}") from None
    return tensors


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
