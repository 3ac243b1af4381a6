"""The FUSE operations: thin handlers over the namespace and the data path.

Each handler decodes its arguments, calls down, and encodes the answer. No
policy lives here (no retries, no caching decisions). Every handler is
wrapped by `handler`, so that only `FUSEError` ever leaves it: pyfuse3 ends
the whole mount on any other exception.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pyfuse3

from zosfs.data.opencheck import OpenCheck
from zosfs.data.read import BlockCache, Reader, same_data
from zosfs.data.write import WritePath
from zosfs.fserror import FsError
from zosfs.limits import MAX_FILE_SIZE, within_max_size
from zosfs.namespace import names
from zosfs.namespace.inodes import Inode
from zosfs.namespace.listing import Listing
from zosfs.namespace.metadata import decode_rdev
from zosfs.namespace.owners import new_owner
from zosfs.namespace.tree import Namespace
from zosfs.options import Options
from zosfs.xattrs import Xattrs
from zosfs.zos import ZosError

log = logging.getLogger(__name__)

STATS_XATTR = b"user.zosfs.stats"
CACHE_XATTR = b"user.zosfs.cache"  # a file's cached blocks (JSON); set to "drop" to drop them
# Asked for by ls -l (selinux, the POSIX ACLs) and the kernel (capability, on
# every write) on every file; never stored (see zosfs/xattrs.py), so answered
# here at once, without looking at the inode.
NO_XATTR_NAMES = frozenset({b"security.capability", b"security.selinux"})
NO_XATTR_PREFIXES = (b"system.",)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


# Offsets of a directory listing: "." is 0, ".." is 1, the names come after.
DOT_ENTRIES = 2
# Errors that answer what was asked, not failures of the mount.
ROUTINE_ERRORS = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.ENOTSUP, errno.ENODATA}


def handler(fn: F) -> F:
    """Map every failure of a handler to an errno, and log its cause."""

    @functools.wraps(fn)
    async def wrapper(self: Operations, *args: Any) -> Any:
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except FsError as err:
            if err.message:
                # (Routine answers, such as ENOTSUP to `cp -a` setting a
                # POSIX ACL on every file, would flood the log.)
                level = logging.DEBUG if err.errno in ROUTINE_ERRORS else logging.WARNING
                log.log(level, "%s: %s (%s)", fn.__name__, err.message, errno.errorcode.get(err.errno, err.errno))
            raise pyfuse3.FUSEError(err.errno) from None
        except ZosError as err:
            log.warning("%s failed: %s [errno %s]", fn.__name__, err, errno.errorcode.get(err.errno, err.errno))
            raise pyfuse3.FUSEError(err.errno) from None
        except Exception:
            log.exception("internal error in %s; answering EIO", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


@dataclass
class FileHandle:
    """One open file. It reads the version of the object current at open,
    so that a change by another client reads as EIO (or as the old bytes
    still cached), never as a mix of two versions; it follows only this
    mount's own changes (`version`, see `WritePath.version`)."""

    inode: Inode
    writable: bool
    etag: str  # the version this handle reads: the one current at open
    size: int
    version: int  # WritePath.version of the inode when etag and size were taken
    reader: Reader | None = None


@dataclass
class DirHandle:
    inode: Inode
    listing: Listing
    names: list[str]


class Operations(pyfuse3.Operations):
    """pyfuse3 operations of one mount."""

    def __init__(
        self,
        ns: Namespace,
        reads: BlockCache,
        writes: WritePath,
        xattrs: Xattrs,
        opts: Options,
        stats: Callable[[], dict[str, Any]],
    ) -> None:
        super().__init__()
        self.ns = ns
        self.reads = reads
        self.writes = writes
        self.xattrs = xattrs
        self.opts = opts
        self.stats = stats
        self.files: dict[int, FileHandle] = {}
        self.dirs: dict[int, DirHandle] = {}
        self._next_fh = 1
        self.fault: Callable[[str], None] | None = None  # tests: raise inside a handler
        self.open_check = OpenCheck(ns, reads)

    def _fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def _check_fault(self, op: str) -> None:
        if self.fault is not None:
            self.fault(op)

    # -- attributes -------------------------------------------------------------

    def entry(self, inode: Inode) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        a = inode.attrs
        e.st_ino = inode.ino
        e.generation = 0
        e.entry_timeout = self.opts.entry_timeout
        # Attributes guessed from a listing must not be cached by the kernel:
        # the first stat() comes here and fetches the real ones.
        e.attr_timeout = self.opts.attr_timeout if inode.meta_known else 0
        e.st_mode = a.mode
        # 1 for directories too: "unknown", so find does not skip
        # subdirectories by counting links; 0 for a file unlinked while open.
        e.st_nlink = 0 if inode.gone and not inode.is_dir else 1
        e.st_uid = a.uid
        e.st_gid = a.gid
        e.st_rdev = decode_rdev(inode.meta) if stat.S_ISCHR(a.mode) or stat.S_ISBLK(a.mode) else 0
        e.st_size = 0 if inode.is_dir else inode.size
        e.st_blksize = 1 << 20  # cp and friends size their buffers by it: fewer, larger writes
        e.st_blocks = -(-e.st_size // 512)
        e.st_atime_ns = a.mtime_ns
        e.st_mtime_ns = a.mtime_ns
        e.st_ctime_ns = a.ctime_ns
        return e

    def negative_entry(self, timeout: float) -> pyfuse3.EntryAttributes:
        """"No such name", cached by the kernel for `timeout` seconds: what is
        left of zosfs's own negative answer, so that the kernel's negative
        dentry never outlives it (a file made elsewhere would stay hidden)."""
        e = pyfuse3.EntryAttributes()
        e.st_ino = 0
        e.entry_timeout = timeout
        return e

    # -- names ----------------------------------------------------------------------

    @handler
    async def lookup(self, parent_ino: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._check_fault("lookup")
        parent = self.ns.get(parent_ino)
        text = names.from_fuse(name)
        try:
            inode = await self.ns.lookup(parent, text)
        except FsError as err:
            if err.errno == errno.ENOENT:
                return self.negative_entry(self.ns.negative_ttl(parent, text))
            raise
        inode.lookups += 1
        return self.entry(inode)

    @handler
    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            self.ns.table.forget(ino, count)

    @handler
    async def getattr(self, ino: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._check_fault("getattr")
        return self.entry(await self.ns.getattr(self.ns.get(ino)))

    @handler
    async def setattr(
        self, ino: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields, fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._check_fault("setattr")
        inode = self.ns.get(ino)
        if fields.update_size:
            if inode.is_dir:
                raise FsError(errno.EISDIR)
            if attr.st_size > MAX_FILE_SIZE:
                raise FsError(errno.EFBIG, f"{attr.st_size} bytes: an object holds at most {MAX_FILE_SIZE} (5 TiB)")
            await self.ns.check_unlocked(inode, "truncating")
            await self.writes.truncate(inode, attr.st_size)
        a = inode.attrs
        mode, uid, gid, mtime = a.mode, a.uid, a.gid, a.mtime_ns
        if fields.update_mode:
            mode = stat.S_IFMT(a.mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_uid:
            uid = attr.st_uid
        if fields.update_gid:
            gid = attr.st_gid
        if fields.update_mtime:
            mtime = attr.st_mtime_ns
        if (mode, uid, gid, mtime) != (a.mode, a.uid, a.gid, a.mtime_ns):
            new = type(a)(mode, uid, gid, mtime, time.time_ns())
            writer = inode.writer
            if writer is not None and writer.pending:
                inode.attrs = new
                writer.attrs_changed()  # the pending upload carries them
            else:
                await self.ns.set_attrs(inode, new, persist=True)
                if writer is not None:
                    writer.base_etag = inode.etag
        return self.entry(inode)

    @handler
    async def readlink(self, ino: int, ctx: pyfuse3.RequestContext) -> bytes:
        self._check_fault("readlink")
        target = await self.ns.readlink(self.ns.get(ino))
        return target.encode("utf-8", "surrogateescape")

    @handler
    async def symlink(self, parent_ino: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._check_fault("symlink")
        parent = self.ns.get(parent_ino)
        _, gid = new_owner(parent.attrs, 0, ctx.gid, is_dir=False)
        inode = await self.ns.symlink(parent, names.from_fuse(name), target.decode("utf-8", "surrogateescape"), ctx.uid, gid)
        inode.lookups += 1
        return self.entry(inode)

    @handler
    async def mkdir(self, parent_ino: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._check_fault("mkdir")
        parent = self.ns.get(parent_ino)
        mode, gid = new_owner(parent.attrs, mode & ~ctx.umask, ctx.gid, is_dir=True)
        inode = await self.ns.mkdir(parent, names.from_fuse(name), mode, ctx.uid, gid)
        inode.lookups += 1
        return self.entry(inode)

    @handler
    async def mknod(self, parent_ino: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._check_fault("mknod")
        parent = self.ns.get(parent_ino)
        text = names.from_fuse(name)
        mode, gid = new_owner(parent.attrs, mode & ~ctx.umask, ctx.gid, is_dir=False)
        if stat.S_ISREG(mode):
            inode = await self.ns.create_file(parent, text, mode, ctx.uid, gid)
            self.writes.writer(inode)
            await self.writes.release(inode)  # uploads the empty object
        elif stat.S_IFMT(mode) in (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK):
            inode = await self.ns.changes.mknod(parent, text, mode, rdev, ctx.uid, gid)
        else:
            raise FsError(errno.EINVAL, f"mknod of file type {stat.S_IFMT(mode):o}")
        inode.lookups += 1
        return self.entry(inode)

    @handler
    async def unlink(self, parent_ino: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._check_fault("unlink")
        parent = self.ns.get(parent_ino)
        text = names.from_fuse(name)
        known = self.ns.table.child(parent.ino, text)
        if known is not None and known.writer is not None:
            await self.writes.discard(known)
        await self.ns.unlink(parent, text)

    @handler
    async def rmdir(self, parent_ino: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._check_fault("rmdir")
        await self.ns.rmdir(self.ns.get(parent_ino), names.from_fuse(name))

    @handler
    async def rename(
        self, parent_old: int, name_old: bytes, parent_new: int, name_new: bytes, flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        self._check_fault("rename")
        src_parent, dst_parent = self.ns.get(parent_old), self.ns.get(parent_new)
        src_name, dst_name = names.from_fuse(name_old), names.from_fuse(name_new)
        src = self.ns.table.child(src_parent.ino, src_name)
        if src is not None:
            # What is written must be in the bucket before it can be copied.
            pending = [src] if not src.is_dir else list(self.ns.table.below(src))
            for inode in pending:
                if inode.writer is not None:
                    await self.writes.flush(inode)
            dst = self.ns.table.child(dst_parent.ino, dst_name)
            if dst is not None and dst is not src and dst.writer is not None and not src.is_dir and not flags:
                # The file being replaced is open with unwritten data: like an
                # unlinked file, nothing of it may reach the server any more
                # (its key is about to hold the renamed file).
                await self.writes.discard(dst)
        await self.ns.rename(src_parent, src_name, dst_parent, dst_name, flags)

    @handler
    async def link(self, ino: int, new_parent: int, new_name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self._check_fault("link")
        raise FsError(errno.EPERM, "hard links are not supported: an object has exactly one key")

    # -- files ----------------------------------------------------------------------

    @handler
    async def open(self, ino: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        inode = self.ns.get(ino)
        if inode.is_dir:
            raise FsError(errno.EISDIR)
        writable = flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
        # O_RDONLY|O_TRUNC truncates too, as on a local disk: the kernel has
        # checked that the opener may write before passing O_TRUNC on.
        truncating = bool(flags & os.O_TRUNC)
        if self.opts.open_revalidate == "always" and not truncating:
            # Close-to-open: the latest version in the bucket (one request).
            if await self.open_check.check(inode, reading=flags & os.O_ACCMODE != os.O_WRONLY):
                _forget_kernel_attrs(inode.ino)
        elif not inode.fresh():
            await self.ns.getattr(inode)  # (open_revalidate=ttl, or O_TRUNC: no need to read it)
        if writable or truncating:
            await self.ns.check_unlocked(inode, "writing")
        if truncating:
            await self.writes.open_truncated(inode)
        elif writable and flags & os.O_APPEND:
            self.writes.writer(inode).opened_for_append = True
        return self._open_handle(inode, writable)

    def _open_handle(self, inode: Inode, writable: bool) -> pyfuse3.FileInfo:
        fh = self._fh()
        others = [h for h in self.files.values() if h.inode is inode]
        self.files[fh] = FileHandle(inode, writable, inode.etag, inode.size, self.writes.version(inode))
        inode.opens += 1
        fi = pyfuse3.FileInfo(fh=fh)
        # Keep the kernel's pages only if they are of the version now current.
        fi.keep_cache = inode.writer is not None or bool(inode.etag and inode.etag == inode.page_etag)
        inode.page_etag = inode.etag
        if inode.writer is None and any(self._reads_old_version(h) for h in others):
            # The page cache is one per inode: while handles of the old
            # version are open, this one bypasses it, so that neither sees
            # the other's pages, and no page is trusted afterwards.
            fi.direct_io = True
            inode.page_etag = ""
        return fi

    def _follow_changes(self, handle: FileHandle) -> None:
        """Let a handle read the version now current if this mount changed
        the content (a writer began or ended), if only the metadata changed
        (the ETag moved on by empty appends, or to one not known), or if
        another client appended to the object (it is appendable and not
        shorter): `tail -f` of a log written elsewhere sees new lines once
        the attributes are revalidated (attr_timeout). Other changes by
        others are not followed: the handle reads EIO instead."""
        inode = handle.inode
        version = self.writes.version(inode)
        if (
            handle.version != version
            or (handle.etag and not inode.etag)
            or (handle.etag != inode.etag and same_data(handle.etag, inode.etag))
            or (handle.etag != inode.etag and inode.writer is None and inode.appendable and inode.size >= handle.size)
        ):
            handle.etag, handle.size, handle.version = inode.etag, inode.size, version

    def _reads_old_version(self, handle: FileHandle) -> bool:
        self._follow_changes(handle)
        return handle.etag != handle.inode.etag

    @handler
    async def create(
        self, parent_ino: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        parent = self.ns.get(parent_ino)
        mode, gid = new_owner(parent.attrs, mode & ~ctx.umask, ctx.gid, is_dir=False)
        inode = await self.ns.create_file(parent, names.from_fuse(name), mode, ctx.uid, gid)
        self.writes.writer(inode)
        inode.lookups += 1
        return self._open_handle(inode, True), self.entry(inode)

    @handler
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        self._check_fault("read")
        handle = self.files[fh]
        inode = handle.inode
        if inode.writer is not None:
            return await self.writes.read(inode, off, size)
        if not inode.remote:
            return b""
        key = self.ns.key(inode)
        self._follow_changes(handle)
        reader = handle.reader
        if reader is None or reader.key != key or reader.etag != handle.etag:
            if reader is not None:
                reader.close()
            reader = handle.reader = Reader(self.reads, key, handle.etag, handle.size, self.opts.readahead,
                                            inode.appendable)
        return await reader.read(off, size)

    @handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self._check_fault("write")
        return await self.writes.write(self.files[fh].inode, off, within_max_size(off, buf))

    @handler
    async def flush(self, fh: int) -> None:
        await self.writes.flush(self.files[fh].inode)

    @handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.writes.flush(self.files[fh].inode)

    @handler
    async def release(self, fh: int) -> None:
        handle = self.files.pop(fh)
        inode = handle.inode
        inode.opens -= 1
        if handle.reader is not None:
            handle.reader.close()
        try:
            if not inode.opens:
                await self.writes.release(inode)
        finally:
            self.ns.table.release(inode)

    # -- directories -------------------------------------------------------------------

    @handler
    async def opendir(self, ino: int, ctx: pyfuse3.RequestContext) -> int:
        self._check_fault("opendir")
        inode = self.ns.get(ino)
        if not inode.is_dir:
            raise FsError(errno.ENOTDIR)
        listing = await self.ns.listing(inode)
        fh = self._fh()
        self.dirs[fh] = DirHandle(inode, listing, list(listing.names))
        inode.opens += 1
        return fh

    @handler
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        self._check_fault("readdir")
        dh = self.dirs[fh]
        # "." and ".." first, as a local disk lists them (`ls -a`); the kernel
        # takes no lookup reference for them (fuse_direntplus_link).
        if start_id == 0 and not pyfuse3.readdir_reply(token, b".", self.entry(dh.inode), 1):
            return
        if start_id <= 1:
            parent = self.ns.table.get(dh.inode.parent) or dh.inode
            if not pyfuse3.readdir_reply(token, b"..", self.entry(parent), DOT_ENTRIES):
                return
        i = max(start_id - DOT_ENTRIES, 0)
        while i < len(dh.names):
            name = dh.names[i]
            entry = dh.listing.entries.get(name)
            if entry is None:  # removed since the listing was taken
                i += 1
                continue
            try:
                inode = await self.ns.entry_inode(dh.inode, entry)
            except FsError as err:
                if err.errno != errno.ENOENT:
                    raise
                i += 1
                continue
            if not pyfuse3.readdir_reply(token, name.encode("utf-8", "surrogateescape"), self.entry(inode),
                                         i + 1 + DOT_ENTRIES):
                self.ns.table.release(inode)
                break
            inode.lookups += 1
            i += 1

    @handler
    async def releasedir(self, fh: int) -> None:
        dh = self.dirs.pop(fh)
        dh.inode.opens -= 1
        self.ns.table.release(dh.inode)
        self.ns.metacache.flush()

    @handler
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return None

    @handler
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        self._check_fault("statfs")
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        # An object store has no fixed size; report 1 PiB free so that df and
        # installers that check for space are content.
        s.f_blocks = s.f_bfree = s.f_bavail = (1 << 50) // 4096
        s.f_files = s.f_ffree = s.f_favail = 1 << 32
        s.f_namemax = names.NAME_MAX
        return s

    # -- extended attributes -----------------------------------------------------------

    @handler
    async def getxattr(self, ino: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if name in NO_XATTR_NAMES or name.startswith(NO_XATTR_PREFIXES):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)  # directly: ls -l asks twice per file
        if name == STATS_XATTR and ino == pyfuse3.ROOT_INODE:
            return json.dumps(self.stats(), separators=(",", ":")).encode()
        if name == CACHE_XATTR:
            return json.dumps(self.reads.describe(self.ns.key(self.ns.get(ino)))).encode()
        return await self.xattrs.get(self.ns.get(ino), _xattr_name(name))

    @handler
    async def listxattr(self, ino: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        # trusted.* only for root (the kernel lets no one else read them; uid 0
        # stands for CAP_SYS_ADMIN, which the request does not carry).
        return await self.xattrs.list(self.ns.get(ino), privileged=ctx.uid == 0)

    @handler
    async def setxattr(self, ino: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext) -> None:
        if name in NO_XATTR_NAMES or name.startswith(NO_XATTR_PREFIXES):
            # (cp -a sets system.posix_acl_access on every file: ENOTSUP, which it ignores.)
            raise FsError(errno.ENOTSUP, f"{name.decode(errors='replace')} is not stored (see README: Extended attributes)")
        if name == CACHE_XATTR and value.strip() == b"drop":
            self.reads.drop(self.ns.key(self.ns.get(ino)))
            return
        await self.xattrs.set(self.ns.get(ino), _xattr_name(name), value)

    @handler
    async def removexattr(self, ino: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        if name in NO_XATTR_NAMES or name.startswith(NO_XATTR_PREFIXES):
            raise FsError(pyfuse3.ENOATTR)
        await self.xattrs.remove(self.ns.get(ino), _xattr_name(name))


def _forget_kernel_attrs(ino: int) -> None:
    """Make the kernel ask `getattr` again: the size it holds bounds what
    it reads (`cat` of a file that grew elsewhere would stop at the old
    size). Attributes only, which takes no lock: safe inside a request."""
    try:
        pyfuse3.invalidate_inode(ino, attr_only=True)
    except OSError as err:  # (ENOENT: the kernel holds no such inode any more)
        log.debug("invalidating the attributes of inode %d: %s", ino, err)


def _xattr_name(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FsError(errno.EINVAL, "attribute names must be UTF-8") from None
