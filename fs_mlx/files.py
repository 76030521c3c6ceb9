"""Files: where fs-mlx caches things, writing so that an interruption never leaves half of
one, and reading so that a hostile one (a FIFO, a huge or deeply nested JSON) fails with
one clear line."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

from .errors import FsxError


def cache_dir() -> Path:
    """$FSX_CACHE_DIR, else $XDG_CACHE_HOME/fs-mlx, else ~/.cache/fs-mlx (not created here)."""
    if os.environ.get("FSX_CACHE_DIR"):
        return Path(os.environ["FSX_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fs-mlx"


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write(f)` on a temporary file beside `path`, then rename it into place.

    A rename within one folder is atomic: readers see the old file or the whole
    new one, and Ctrl-C or a full disk leaves at most nothing.
    """
    path = os.fspath(path)
    if not path or os.path.isdir(path):
        raise FsxError(f"cannot write {path!r}: give a file name")
    tmp = f"{path}.partial-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as e:
        raise FsxError(f"cannot write {path}: {e.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def atomic_dir(out: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside `out`, renamed to `out` when the block succeeds.

        with atomic_dir("model-4bit") as tmp:
            (tmp / "config.json").write_text(...)

    An error or Ctrl-C inside the block leaves no `out` and no temporary folder.
    """
    out = Path(out)
    if out.exists():
        raise FsxError(f"{out} already exists; remove it or choose another name")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise FsxError(f"cannot write {out}: {parent} is not a directory")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
    try:
        yield tmp
        os.rename(tmp, out)
    except OSError as e:
        raise FsxError(f"cannot write {out}: {e.strerror or e}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --- reading files that came from the internet ---------------------------------------
#
# A model folder is untrusted: a FIFO or a device in place of a weight file would
# block a plain open() forever, and a 5,000-deep JSON array overflows the parser's
# stack. Everything that reads model files goes through these two functions.

MAX_JSON_BYTES = 64 * 1024 * 1024  # config/tokenizer_config/index files; tokenizer.json is larger
MAX_JSON_DEPTH = 64  # real files nest < 10 deep (tokenizer.json: 6)


def open_regular(path: str | os.PathLike) -> IO[bytes]:
    """Open `path` for reading, refusing anything that is not a regular file.

    O_NONBLOCK makes opening a FIFO return at once (instead of waiting for a
    writer); fstat then tells what was opened, with no window for a swap.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise FsxError(f"{path}: cannot read: {e.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise FsxError(f"{path}: not a regular file ({_kind(mode)}); model files must be plain files")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a plain file"


def read_bytes(path: str | os.PathLike, limit: int) -> bytes:
    """The whole of a regular file of at most `limit` bytes."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise FsxError(f"{path}: {size} bytes, more than the {limit} allowed for this file")
        return f.read(limit + 1)[:limit]


def parse_json(data: bytes | str, source: str, max_depth: int = MAX_JSON_DEPTH):
    """json.loads with one clear error for every way it can fail, nesting bounded."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise FsxError(f"{source}: JSON nested deeper than {max_depth} levels") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FsxError(f"{source}: not valid JSON: {e}") from None
    if _depth(value) > max_depth:
        raise FsxError(f"{source}: JSON nested deeper than {max_depth} levels")
    return value


def _depth(value) -> int:
    """Nesting depth of parsed JSON, without recursion (the parser already bounded it)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if d <= MAX_JSON_DEPTH:  # no need to look further once past the limit
                todo.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def read_json(path: str | os.PathLike, limit: int = MAX_JSON_BYTES):
    """A small JSON file from a model folder, parsed (any value: the caller checks the type)."""
    return parse_json(read_bytes(path, limit), str(path))
