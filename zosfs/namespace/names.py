"""Which keys can be shown as names, and which names can become keys.

An object key is any UTF-8 string up to 1,024 bytes; a file name is a
non-empty byte string without '/' or NUL, not '.' or '..', up to 255 bytes.
Keys that cannot be shown (`a//b`, `a/./b`, a segment over 255 bytes) are
skipped in listings with one log line each, never renamed or rewritten:
listing must not change the bucket.
"""

from __future__ import annotations

import errno

from zosfs.fserror import FsError

NAME_MAX = 255
KEY_MAX = 1024
# zosfs's own objects (the change feed, zosfs.namespace.feed) live under this
# key prefix at the bucket's root; listings never show it.
RESERVED_PREFIX = ".zosfs/"


def listable(name: str) -> str | None:
    """Why a name found in a listing cannot be shown, or None if it can."""
    if name in ("", ".", ".."):
        return "empty, '.' or '..' path segment"
    if "\0" in name:
        return "NUL in name"
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        return f"segment longer than {NAME_MAX} bytes"
    return None


def reserved(key: str) -> bool:
    """True for a key or common prefix under zosfs's reserved prefix."""
    return key.startswith(RESERVED_PREFIX)


def from_fuse(raw: bytes) -> str:
    """A name from the kernel as a key segment; raises FsError."""
    if len(raw) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG, f"name longer than {NAME_MAX} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FsError(errno.EINVAL, "name is not valid UTF-8 (object keys must be)") from None


def check_key(key: str) -> None:
    """Raise FsError(ENAMETOOLONG) for keys the service would refuse."""
    if len(key.encode("utf-8")) > KEY_MAX:
        raise FsError(errno.ENAMETOOLONG, f"object key longer than {KEY_MAX} bytes")
