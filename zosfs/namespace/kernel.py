"""Telling the kernel to forget what it caches of a name or an inode.

The namespace changes behind the kernel's back (another mount's change, an
upload that failed and is undone); these two notifications make the kernel
ask again. Both are safe inside a FUSE request: attributes only take no lock,
and an entry is forgotten asynchronously. A failure (no kernel session, or
the kernel holds no such inode or name any more) is only logged: nothing
then caches what was to be forgotten.
"""

from __future__ import annotations

import logging

import pyfuse3

log = logging.getLogger(__name__)


def forget_attrs(ino: int) -> None:
    """The kernel asks `getattr` again before it trusts the inode's
    attributes (its size bounds what it reads)."""
    try:
        pyfuse3.invalidate_inode(ino, attr_only=True)
    except Exception as err:
        log.debug("kernel invalidation of inode %d failed: %s", ino, err)


def forget_entry(parent: int, name: str) -> None:
    """The kernel looks the name up again."""
    try:
        pyfuse3.invalidate_entry_async(parent, name.encode("utf-8", "surrogateescape"), ignore_enoent=True)
    except Exception as err:
        log.debug("kernel invalidation of %r failed: %s", name, err)
