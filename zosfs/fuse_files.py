"""FUSE handlers for open files: open (with the close-to-open check), create,
read, write, flush, fsync, release.

A mixin of `Operations` (zosfs/fuse_ops.py): the handle table and the rule
for which version of an object a handle reads belong together, apart from
the namespace handlers.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyfuse3

from zosfs.data.read import Reader, same_data
from zosfs.fserror import FsError
from zosfs.fuse_handler import handler
from zosfs.limits import within_max_size
from zosfs.namespace import kernel, names
from zosfs.namespace.inodes import Inode
from zosfs.namespace.owners import new_owner

if TYPE_CHECKING:
    from zosfs.data.opencheck import OpenCheck
    from zosfs.data.read import BlockCache
    from zosfs.data.write import WritePath
    from zosfs.namespace.tree import Namespace
    from zosfs.namespace.views import Views
    from zosfs.options import Options

log = logging.getLogger("zosfs.fuse_ops")


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


class FileOps:
    """The open-file handlers of `Operations`."""

    ns: Namespace
    reads: BlockCache
    writes: WritePath
    opts: Options
    open_check: OpenCheck
    files: dict[int, FileHandle]
    views: Views
    view_files: dict[int, Any]

    # (`_fh`, `_check_fault` and `entry` are Operations' own.)


    @handler
    async def open(self, ino: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        writable = flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
        if self.views.owns(ino):
            return await self.view_open(ino, writable or bool(flags & os.O_TRUNC))
        inode = self.ns.get(ino)
        if inode.is_dir:
            raise FsError(errno.EISDIR)
        # O_RDONLY|O_TRUNC truncates too, as on a local disk: the kernel has
        # checked that the opener may write before passing O_TRUNC on.
        truncating = bool(flags & os.O_TRUNC)
        if self.opts.open_revalidate == "always" and not truncating:
            # Close-to-open: the latest version in the bucket (one request).
            if await self.open_check.check(inode, reading=flags & os.O_ACCMODE != os.O_WRONLY):
                kernel.forget_attrs(inode.ino)  # (its size bounds what it reads: `cat` of a file that grew elsewhere)
        elif not inode.fresh():
            await self.ns.getattr(inode)  # (open_revalidate=ttl, or O_TRUNC: no need to read it)
        if writable or truncating:
            await self.ns.check_unlocked(inode, "writing")
        if truncating:
            await self.writes.open_truncated(inode)
            # O_TRUNC moves mtime and ctime, of an empty file too; the
            # writer's upload at close carries them.
            inode.attrs = self.ns.touched(inode.attrs)
            self.writes.writer(inode).attrs_changed()
        elif writable and flags & os.O_APPEND:
            self.writes.writer(inode).opened_for_append = True
        return self._open_handle(inode, writable or truncating)

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
        self.views.refuse(parent_ino, names.from_fuse(name))
        parent = self.ns.get(parent_ino)
        mode, gid = new_owner(parent.attrs, mode & ~ctx.umask, ctx.gid, is_dir=False)
        inode = await self.ns.create_file(parent, names.from_fuse(name), mode, ctx.uid, gid)
        # (Made through O_APPEND, a log: by append upload, never by one PUT at close.)
        self.writes.writer(inode).opened_for_append = bool(flags & os.O_APPEND)
        inode.lookups += 1
        return self._open_handle(inode, True), self.entry(inode)

    @handler
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        self._check_fault("read")
        if fh in self.view_files:
            return await self.view_read(fh, off, size)
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
        if fh in self.view_files:
            return
        handle = self.files[fh]
        if not handle.writable:
            # A handle that changed nothing stores nothing at close and has
            # no upload failure to report, as on a local disk (a reader that
            # opened while a failed writer's release was on its way would
            # otherwise get the writer's EACCES from close). The last release
            # stores what the writers left, or logs where it is kept.
            return
        await self.writes.flush(handle.inode, closing=True)

    @handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        if fh in self.view_files:
            return
        await self.writes.flush(self.files[fh].inode)

    @handler
    async def release(self, fh: int) -> None:
        if fh in self.view_files:
            return self.view_release(fh)
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
