"""Writing files so that an interruption never leaves half of one behind."""

from __future__ import annotations

import os
from typing import IO, Callable

from .errors import FsxError


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
