"""FUSE handlers for extended attributes: the probes the kernel and `ls -l`
send on every file are answered here at once; the rest goes to `Xattrs`.

A mixin of `Operations` (zosfs/fuse_ops.py).
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyfuse3

from zosfs.fserror import FsError
from zosfs.fuse_handler import handler

if TYPE_CHECKING:
    from zosfs.data.read import BlockCache
    from zosfs.namespace.tree import Namespace
    from zosfs.namespace.views import Views
    from zosfs.xattrs import Xattrs

STATS_XATTR = b"user.zosfs.stats"
CACHE_XATTR = b"user.zosfs.cache"  # a file's cached blocks (JSON); set to "drop" to drop them
# Asked for by ls -l (selinux, the POSIX ACLs) and the kernel (capability, on
# every write) on every file; never stored (see zosfs/xattrs.py), so answered
# here at once, without looking at the inode.
NO_XATTR_NAMES = frozenset({b"security.capability", b"security.selinux"})
NO_XATTR_PREFIXES = (b"system.",)
# Of those, what ls -l asks of every file (its SELinux label, its POSIX ACL)
# is answered "not supported" (as by a filesystem without labels or ACLs:
# setting them fails so too): ls then stops asking on this mount (it keeps
# the st_dev that answered ENOTSUP), instead of sending two FUSE requests per
# file. security.capability, asked by the kernel on writes, stays "no such
# attribute".
UNSUPPORTED_XATTRS = frozenset({b"security.selinux"})
UNSUPPORTED_PREFIXES = (b"system.posix_acl_",)


class XattrOps:
    """The extended-attribute handlers of `Operations`."""

    ns: Namespace
    reads: BlockCache
    xattrs: Xattrs
    stats: Callable[[], dict[str, Any]]
    views: Views


    @handler
    async def getxattr(self, ino: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if name in UNSUPPORTED_XATTRS or name.startswith(UNSUPPORTED_PREFIXES):
            raise pyfuse3.FUSEError(errno.ENOTSUP)  # directly, and once per mount (see above)
        if name in NO_XATTR_NAMES or name.startswith(NO_XATTR_PREFIXES):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        if self.views.owns(ino):
            raise FsError(pyfuse3.ENOATTR)  # (a view's files have none)
        if name == STATS_XATTR and ino == pyfuse3.ROOT_INODE:
            return json.dumps(self.stats(), separators=(",", ":")).encode()
        if name == CACHE_XATTR:
            return json.dumps(self.reads.describe(self.ns.key(self.ns.get(ino)))).encode()
        return await self.xattrs.get(self.ns.get(ino), _xattr_name(name))

    @handler
    async def listxattr(self, ino: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        if self.views.owns(ino):
            return []
        # trusted.* only for root (the kernel lets no one else read them; uid 0
        # stands for CAP_SYS_ADMIN, which the request does not carry).
        return await self.xattrs.list(self.ns.get(ino), privileged=ctx.uid == 0)

    @handler
    async def setxattr(self, ino: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext) -> None:
        if name in NO_XATTR_NAMES or name.startswith(NO_XATTR_PREFIXES):
            # (cp -a sets system.posix_acl_access on every file: ENOTSUP, which it ignores.)
            raise FsError(errno.ENOTSUP, f"{name.decode(errors='replace')} is not stored (see README: Extended attributes)")
        if self.views.owns(ino):
            raise FsError(errno.EROFS, "a view is read-only")
        if name == CACHE_XATTR and value.strip() == b"drop":
            self.reads.drop(self.ns.key(self.ns.get(ino)))
            return
        await self.xattrs.set(self.ns.get(ino), _xattr_name(name), value)

    @handler
    async def removexattr(self, ino: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        if name in NO_XATTR_NAMES or name.startswith(NO_XATTR_PREFIXES):
            raise FsError(pyfuse3.ENOATTR)
        if self.views.owns(ino):
            raise FsError(errno.EROFS, "a view is read-only")
        await self.xattrs.remove(self.ns.get(ino), _xattr_name(name))


def _xattr_name(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FsError(errno.EINVAL, "attribute names must be UTF-8") from None
