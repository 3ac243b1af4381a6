"""Owner, group and mode of a new name, as a local Linux filesystem gives them.

The kernel hands zosfs the creator's uid, gid and mode (umask applied by
zosfs, S_ISGID already stripped by the VFS where the creator may not keep
it); what is left to the filesystem is the set-group-ID directory rule of
`inode_init_owner`: an entry made in a directory with S_ISGID takes the
directory's group instead of the creator's, and a new subdirectory inherits
S_ISGID itself, so that a shared project directory stays shared.
"""

from __future__ import annotations

import stat

from zosfs.namespace.metadata import Attrs


def new_owner(parent: Attrs, mode: int, gid: int, *, is_dir: bool) -> tuple[int, int]:
    """(mode, gid) of a new entry in `parent`, made by a caller of group `gid`."""
    if not parent.mode & stat.S_ISGID:
        return mode, gid
    if is_dir:
        mode |= stat.S_ISGID
    return mode, parent.gid
