"""Which keys can be shown as names, and which names can become keys.

An object key is any UTF-8 string up to 1,024 bytes; a file name is a
non-empty byte string without '/' or NUL, not '.' or '..', up to 255 bytes.
Keys that cannot be shown (`a//b`, `a/./b`, a segment over 255 bytes) are
skipped in listings with one log line each, never renamed or rewritten:
listing must not change the bucket. Nor are they deleted unseen: `rmdir` of
a directory that holds them fails with ENOTEMPTY and a log line naming each
(`hidden_reason` says why a key is not shown).
"""

from __future__ import annotations

import errno
from collections.abc import Iterable

from zosfs.fserror import FsError

NAME_MAX = 255
KEY_MAX = 1024
# zosfs's own objects live under this one key prefix at the bucket's root:
# the change feed under `.zosfs/feed/` (zosfs.namespace.feed) and the
# metadata index under `.zosfs/index/` (zosfs.namespace.index). Listings of
# the bucket's root never show it, and the name cannot be looked up there.
RESERVED_PREFIX = ".zosfs/"
RESERVED_NAME = RESERVED_PREFIX[:-1]


def listable(name: str) -> str | None:
    """Why a name found in a listing cannot be shown, or None if it can."""
    if name in ("", ".", ".."):
        return "empty, '.' or '..' path segment"
    if "\0" in name:
        return "NUL in name"
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        return f"segment longer than {NAME_MAX} bytes"
    return None


# How many keys an ENOTEMPTY explanation names (changes.Changes.rmdir).
EXPLAIN_KEYS = 20
# A file hidden by the directory of its name: a name once the directory is gone.
SHADOWED = "a file hidden by the directory of the same name"


def hidden_reason(key: str, prefix: str, others: Iterable[str] = ()) -> str | None:
    """Why `key` is never shown below the directory `prefix`, or None if
    every segment of it is a name. `others` are keys beside it: a file `x` is
    hidden by a directory `x/` of the same name (the directory wins)."""
    rel = key[len(prefix):]
    segments = rel[:-1].split("/") if rel.endswith("/") else rel.split("/")  # a marker ends in '/'
    for seg in segments:
        reason = listable(seg)
        if reason:
            return reason
    if not rel.endswith("/") and any(o.startswith(key + "/") for o in others):
        return SHADOWED
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
