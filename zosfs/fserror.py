"""The one exception the filesystem layers raise for a refused operation."""

from __future__ import annotations


class FsError(Exception):
    """An operation refused with an errno; `message` says why, for the log."""

    def __init__(self, errno: int, message: str = "") -> None:
        super().__init__(message)
        self.errno = errno
        self.message = message
