"""The one exception type users see.

Anything that is the user's fault (a bad path, a malformed file, an invalid
option) raises `FsxError` with a message that names the problem. The CLI
prints that message and exits non-zero; it never shows a traceback for it.
"""


class FsxError(Exception):
    """A problem with the user's input, explained in one message."""
