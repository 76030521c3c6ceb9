"""Errors of the MSL executor, each a `FsxError` with one clear message."""

from fs_mlx.errors import FsxError


class MslError(FsxError):
    """Something the MSL executor could not do with a kernel."""


class MslCompilerMissing(MslError):
    """No clang that handles _Float16 was found."""


class MslCompileError(MslError):
    """clang rejected the kernel; the message points into the body/header."""


class MslUnsupportedError(MslError):
    """The kernel uses a Metal construct the executor cannot run."""


class MslRuntimeError(MslError):
    """The kernel faulted, hung, or broke a rule (strict mode) while running."""
