"""Files: where fs-mlx caches things, and writing so that an interruption never leaves half of one."""

from __future__ import annotations

import os
import shutil
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
